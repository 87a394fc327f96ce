"""scripts/gpu_compare.py: lockstep training gives every model the same number of epochs under a time cap."""

import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_compare", ROOT / "scripts" / "gpu_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE_TRAINER = """
import json, pathlib, sys, time
out, epoch_s = pathlib.Path(sys.argv[1]), float(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
history = []
while True:
    time.sleep(epoch_s)
    history.append({"epoch": len(history) + 1, "examples_seen": 32 * (len(history) + 1), "epoch_seconds": epoch_s,
                    "valid": {"total": 1.0 / (len(history) + 1)}})
    tmp = out / "history.json.tmp"
    tmp.write_text(json.dumps(history))
    tmp.replace(out / "history.json")
"""


def test_lockstep_equal_epochs_under_cap(tmp_path):
    gc = _load()
    script = tmp_path / "fake.py"
    script.write_text(FAKE_TRAINER)
    speeds = {"fast": 0.1, "slow": 0.35}
    cmds = {k: [sys.executable, str(script), str(tmp_path / k), str(s)] for k, s in speeds.items()}
    dirs = {k: tmp_path / k for k in speeds}
    t = time.time()
    res = gc.lockstep_train(cmds, dirs, tmp_path / "logs", cap_s=2.0, grace_s=2.0, deadline=time.time() + 30)
    assert time.time() - t < 10
    epochs = {k: len(json.loads((dirs[k] / "history.json").read_text())) for k in speeds}
    assert epochs["fast"] == epochs["slow"] >= 3, epochs  # unpaused, fast would be ~3x ahead
    assert res["fast"]["paused_seconds"] > 0 and res["slow"]["paused_seconds"] == 0
    assert res["fast"]["examples_seen"] == res["slow"]["examples_seen"]
