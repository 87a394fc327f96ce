"""scripts/baselines_run3c.sh: the same-budget baselines of the shipped model run in two stages (run 1's protocol,
then run 3c's fine-tuning from the stage-1 weights) with the right budgets, and a rerun skips what is spent.

The training command is replaced by a stand-in that records its arguments and writes the history a finished run
would leave, so these tests check the script's decisions, not training."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "baselines_run3c.sh"

FAKE_TRAIN = """#!/bin/bash
# stand-in for the interpreter: `-m train ...` is recorded and leaves a spent history; anything else is Python
if [ "$1" = -m ] && [ "$2" = train ]; then
    echo "$*" >> {log}
    {python} - "$@" <<'PY'
import json, pathlib, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--output") + 1])
out.mkdir(parents=True, exist_ok=True)
seen = int(args[args.index("--max-examples") + 1])
(out / "history.json").write_text(json.dumps([{{"epoch": 1, "examples_seen": seen}}]))
PY
else
    exec {python} "$@"
fi
"""


@pytest.fixture
def fake_python(tmp_path):
    log = tmp_path / "train_calls.log"
    wrapper = tmp_path / "python"
    wrapper.write_text(FAKE_TRAIN.format(log=shlex.quote(str(log)), python=shlex.quote(sys.executable)))
    wrapper.chmod(0o755)
    return wrapper, log


def run_script(arch, out, python, **env):
    full_env = dict(os.environ, OUT=str(out), PYTHON=str(python), **env)
    return subprocess.run(["bash", str(SCRIPT), arch], env=full_env, capture_output=True, text=True, timeout=60)


def calls(log):
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def option(call, name):
    return call[call.index(name) + 1]


def test_two_stages_with_run1_then_run3c_budgets(tmp_path, fake_python):
    python, log = fake_python
    result = run_script("umx", tmp_path / "runs", python)
    assert result.returncode == 0, result.stderr
    stage1, stage2 = calls(log)
    assert option(stage1, "--arch") == "umx" and option(stage1, "--root") == "data/gpu_run1"
    assert option(stage1, "--max-examples") == "30912" and option(stage1, "--stats-tracks") == "64"
    assert "--init-from" not in stage1 and "--lr" not in stage1  # run 1's protocol: default lr, from scratch
    assert option(stage2, "--root") == "data/mix3" and option(stage2, "--max-examples") == "15744"
    assert option(stage2, "--init-from") == option(stage1, "--output") == str(tmp_path / "runs" / "umx-run1")
    assert option(stage2, "--lr") == "3e-4" and option(stage2, "--valid-seconds") == "30"
    assert "--resume" in stage1 and "--resume" in stage2


def test_a_rerun_skips_spent_stages_and_a_larger_budget_continues_stage_2_only(tmp_path, fake_python):
    python, log = fake_python
    assert run_script("xumx", tmp_path / "runs", python).returncode == 0
    assert len(calls(log)) == 2
    again = run_script("xumx", tmp_path / "runs", python)
    assert again.returncode == 0 and len(calls(log)) == 2
    assert "stage 1: done" in again.stdout and "stage 2: done" in again.stdout
    more = run_script("xumx", tmp_path / "runs", python, FINETUNE_EXAMPLES="20000")
    assert more.returncode == 0 and "stage 1: done" in more.stdout
    added = calls(log)[2:]
    assert len(added) == 1 and option(added[0], "--max-examples") == "20000"
    history = json.loads((tmp_path / "runs" / "xumx" / "history.json").read_text())
    assert history[-1]["examples_seen"] == 20000


def test_no_architecture_is_an_error(tmp_path, fake_python):
    python, log = fake_python
    result = subprocess.run(["bash", str(SCRIPT)], env=dict(os.environ, OUT=str(tmp_path), PYTHON=str(python)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "usage" in result.stderr and not calls(log)


def test_budget_spent_by_examples_or_hours(tmp_path):
    """scripts/budget_spent.py, shared by train_compare.sh and baselines_run3c.sh: spent at the example budget or
    at the hour budget, not before, and not without a history."""
    helper = Path(__file__).resolve().parents[1] / "scripts" / "budget_spent.py"

    def spent(*args):
        return subprocess.run([sys.executable, str(helper), str(tmp_path), *map(str, args)], timeout=60).returncode

    assert spent(100) == 1  # no history yet
    (tmp_path / "history.json").write_text(json.dumps([{"examples_seen": 64, "epoch_seconds": 1800},
                                                       {"examples_seen": 128, "epoch_seconds": 1800}]))
    assert spent(128) == 0 and spent(129) == 1
    assert spent(129, 1.0) == 0 and spent(129, 1.5) == 1
    assert subprocess.run([sys.executable, str(helper)], capture_output=True, timeout=60).returncode == 2
