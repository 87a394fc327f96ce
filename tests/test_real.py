"""Tests of the real-music check (benchmark/real.py) on the MUSDB18 excerpt shipped in stempeg's package data."""

import json

import numpy as np
import pytest

from benchmark import real
from benchmark.common import TARGETS
from benchmark.evaluate import mdx_sdr


@pytest.fixture(scope="module")
def stems():
    return real.read_excerpt()


def _band_fraction(x, low, high):
    """Fraction of a (nb_channels, n) signal's energy between `low` and `high` Hz."""
    power = np.abs(np.fft.rfft(x.mean(axis=0))) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1 / 44100)
    return float(power[(freqs >= low) & (freqs < high)].sum() / power.sum())


def test_excerpt_streams_in_musdb_order(stems):
    """Five streams, same shape; the four targets sum to the mixture and each sounds like its name."""
    assert real.STREAMS == {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
    shapes = {v.shape for v in stems.values()}
    assert len(shapes) == 1 and shapes.pop()[0] == 2
    assert stems["mixture"].shape[1] > 5 * 44100
    assert mdx_sdr(stems["mixture"], sum(stems[t] for t in TARGETS)) > 12  # AAC: not bit-exact, but close
    low = {t: _band_fraction(stems[t], 20, 150) for t in TARGETS}
    mid = {t: _band_fraction(stems[t], 300, 3000) for t in TARGETS}
    high = {t: _band_fraction(stems[t], 5000, 20000) for t in TARGETS}
    assert max(high, key=high.get) == "drums"  # cymbals
    assert min(high, key=high.get) == "bass"
    assert max(mid, key=mid.get) == "vocals"
    assert sorted(low, key=low.get)[-2:] == ["bass", "drums"] or sorted(low, key=low.get)[-2:] == ["drums", "bass"]


def test_scores_floor_and_oracle(stems):
    """Perfect estimates score high, mixture/4 is the floor, the oracle is far above it."""
    perfect = real.scores(stems, {t: stems[t] for t in TARGETS})
    assert min(perfect[t] for t in TARGETS) > 60
    refs = real.reference_estimates(stems)
    floor = real.scores(stems, refs["mixture/4"])
    oracle = real.scores(stems, refs["MPI-sliCQ"])
    assert floor["mean"] == pytest.approx(np.mean([floor[t] for t in TARGETS]))
    assert oracle["mean"] > floor["mean"] + 4


def test_run_writes_json_and_table(tmp_path):
    """`python -m benchmark real` with no model writes the floor and oracle rows as JSON and markdown."""
    assert real.main(["--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "real.json").read_text())
    assert list(result["rows"]) == ["mixture/4", "MPI-sliCQ"]
    assert result["targets"] == list(TARGETS)
    assert set(result["rows"]["mixture/4"]) == set(TARGETS) | {"mean"}
    table = (tmp_path / "real.md").read_text()
    assert "| mixture/4 |" in table and "| MPI-sliCQ |" in table and "mean SDR" in table


def test_rejects_missing_model_folder(tmp_path):
    assert real.main(["--model", str(tmp_path / "nope"), "--output", str(tmp_path)]) == 2


def test_run_with_the_shipped_model(tmp_path):
    """A model row is labelled by folder and architecture and holds finite scores for every target."""
    result = real.run(["pretrained-model"], tmp_path)
    assert list(result["rows"]) == ["mixture/4", "MPI-sliCQ", "pretrained-model (xumx-slicq)"]
    row = result["rows"]["pretrained-model (xumx-slicq)"]
    assert all(np.isfinite(row[t]) for t in TARGETS) and row["mean"] == pytest.approx(
        np.mean([row[t] for t in TARGETS]), abs=1e-3)
    assert "| pretrained-model (xumx-slicq) |" in (tmp_path / "real.md").read_text()


def test_listed_as_a_benchmark_subcommand(capsys):
    from benchmark.__main__ import main

    assert main(["--help"]) == 0
    assert "real" in capsys.readouterr().out
