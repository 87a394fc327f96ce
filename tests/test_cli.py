"""Every app folder (and the core's ``xumx-slicq`` command) is runnable as ``python -m <folder> --help`` from the
repository root."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module", ["xumx_slicq", "train", "export", "submission", "benchmark", "benchmark.transform_speed",
               "benchmark.transform_demo", "benchmark.model_summary"]
)
def test_help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_unknown_benchmark_subcommand_fails():
    proc = subprocess.run([sys.executable, "-m", "benchmark", "nope"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


def test_transform_demo_on_a_file(tmp_path):
    sf = pytest.importorskip("soundfile")
    import numpy as np

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (44100, 2)).astype("float32")
    wav = tmp_path / "noise.wav"
    sf.write(wav, audio, 44100)
    png = tmp_path / "plot.png"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "transform-demo", str(wav), "--plot", str(png)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "263 bins in 70 blocks" in proc.stdout
    assert png.stat().st_size > 10_000


def test_transform_demo_reports_unreadable_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "transform-demo", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "bad.wav" in proc.stderr


def test_every_benchmark_subcommand_is_a_module_with_main():
    import importlib

    from benchmark.__main__ import SUBCOMMANDS

    for name, (module, _) in SUBCOMMANDS.items():
        assert callable(getattr(importlib.import_module(module), "main", None)), name
