"""Smoke test of the shipped model: ``pretrained-model/`` loads through the public API and separates a short
synthetic song clearly better than the mixture / 4 floor.

The song is made by the project's generator (``train.synthesis.render_song``, FluidSynth + espeak-ng, installed
by ``scripts/install.sh``) with the demo set's seed on the test split, so it never was a training song. A
random-initialised or damaged network scores at or near the floor, a model with its targets in the wrong order
below it on single targets: both fail.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

import xumx_slicq
from xumx_slicq.audio import mdx_sdr as sdr
from train.synthesis import render_song

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("vocals", "drums", "bass", "other")
SEED, INDEX, SECONDS = 2026, 0, 5.0  # the first song of the demo set's seed (scripts/demo.sh), 5 s long
#: the estimates' mean SDR must beat the floor's by this much (the shipped model: ~+5 dB; random weights: ~0 dB)
MEAN_MARGIN_DB = 3.0
#: and every single target must beat its own floor by this much (catches targets in the wrong order)
TARGET_MARGIN_DB = 1.0


@pytest.fixture(scope="module")
def song():
    """``{name: float32 (nb_timesteps, 2)}`` for the mixture and the four true stems."""
    missing = [tool for tool in ("fluidsynth", "espeak-ng") if shutil.which(tool) is None]
    assert not missing, f"the synthetic generator needs {missing}: run scripts/install.sh"
    audio, _ = render_song(SEED, "test", INDEX, SECONDS)
    return {name: x.astype(np.float32) / 32768 for name, x in audio.items()}


def test_shipped_model_separates_a_song(song):
    assert (ROOT / "pretrained-model" / "xumx_slicq.pth").is_file(), "no shipped model in pretrained-model/"
    mixture = song["mixture"]
    # the defaults of the shipped path (one Wiener-EM iteration); short context: the song is one segment anyway
    stems = xumx_slicq.separate(mixture, 44100, context_seconds=0.5)
    assert sorted(stems) == sorted(TARGETS)
    for name in TARGETS:
        assert stems[name].shape == mixture.shape and np.isfinite(stems[name]).all(), name

    estimate = {name: sdr(song[name], stems[name]) for name in TARGETS}
    floor = {name: sdr(song[name], mixture / 4) for name in TARGETS}
    report = ", ".join(f"{n} {estimate[n]:.2f} (floor {floor[n]:.2f})" for n in TARGETS)
    assert np.mean(list(estimate.values())) > np.mean(list(floor.values())) + MEAN_MARGIN_DB, report
    for name in TARGETS:
        assert estimate[name] > floor[name] + TARGET_MARGIN_DB, report


def test_shipped_int8_network_is_gated_for_the_shipped_weights():
    """The shipped int8 file belongs to the shipped weights (both digests), passed its quality gate on both sets,
    and the model folder stays small."""
    from xumx_slicq.checkpoint import load_model
    from xumx_slicq.quantize import DEFAULT_THRESHOLD_DB, INT8_NAME, gate_status
    from xumx_slicq.onnx_backend import read_sidecar

    folder = ROOT / "pretrained-model"
    model, _ = load_model(folder, arch="xumx-slicq")
    assert gate_status(folder / INT8_NAME, model) == (True, "gated")
    gate = read_sidecar(folder / INT8_NAME)["gate"]
    assert gate["threshold_db"] == DEFAULT_THRESHOLD_DB and len(gate["sets"]) == 2
    assert all(s["passed"] and s["loss_db"] <= gate["threshold_db"] for s in gate["sets"].values())
    assert (folder / INT8_NAME).stat().st_size < 10 * 2**20 and (folder / "xumx_slicq.pth").stat().st_size < 30e6


def test_shipped_float32_network_is_current_for_the_shipped_weights():
    """The shipped float32 ONNX file was exported from exactly the shipped weights (its sidecar's digest), passed
    the export's parity check, and ``onnx_for_model`` uses it instead of exporting into the cache."""
    from xumx_slicq.backends import onnx_for_model
    from xumx_slicq.checkpoint import load_model
    from xumx_slicq.onnx_backend import ONNX_NAME, is_current, read_sidecar

    folder = ROOT / "pretrained-model"
    model, _ = load_model(folder, arch="xumx-slicq")
    assert is_current(folder / ONNX_NAME, model)
    assert read_sidecar(folder / ONNX_NAME)["parity"]["max_relative"] <= 1e-4
    assert onnx_for_model(model, folder, export=False) == folder / ONNX_NAME
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert total < 30 * 2**20, f"pretrained-model/ holds {total / 2**20:.1f} MiB"
