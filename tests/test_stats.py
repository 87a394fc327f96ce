"""Tests of train.stats: metric values on signals with known answers, and the comparison command."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from train.stats import integrated_loudness, k_weighting, stem_statistics

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100


def sine(freq: float, amplitude: float, seconds: float) -> np.ndarray:
    """Stereo sine (nb_samples, 2)."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = amplitude * np.sin(2 * np.pi * freq * t)
    return np.stack([x, x], axis=1)


def test_k_weighting_matches_the_bs1770_table_at_48k():
    (b1, a1), (b2, a2) = k_weighting(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


def test_loudness_of_reference_sines():
    # BS.1770: a 997 Hz sine at 0 dBFS peak in one channel reads -3.01 LUFS; in both channels 0 LUFS
    one = sine(997, 1.0, 5.0)
    one[:, 1] = 0
    assert integrated_loudness(one, RATE) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(sine(997, 0.1, 5.0), RATE) == pytest.approx(-20.0, abs=0.05)
    assert np.isnan(integrated_loudness(np.zeros((RATE * 2, 2)), RATE))


def test_stem_statistics_known_values():
    x = sine(1000, 0.5, 5.0)
    x[: 2 * RATE] = 0  # two silent seconds out of five
    s = stem_statistics(x, RATE)
    assert s["silence_ratio"] == pytest.approx(0.4)
    assert s["rms_dbfs"] == pytest.approx(10 * np.log10(0.125 * 3 / 5), abs=0.01)
    assert s["active_rms_dbfs"] == pytest.approx(10 * np.log10(0.125), abs=0.01)
    assert s["centroid_hz"] == pytest.approx(1000, rel=0.05)
    low = stem_statistics(sine(200, 0.5, 2.0), RATE)
    assert low["centroid_hz"] < 300 and low["silence_ratio"] == 0.0
    quiet = stem_statistics(sine(200, 1e-4, 2.0), RATE, silence_db=-60)  # -83 dBFS: silent frames
    assert quiet["silence_ratio"] == 1.0


def _corpus(root: Path, freq: float, amplitude: float, nb: int) -> None:
    for i in range(nb):
        folder = root / "test" / f"track {i}"
        folder.mkdir(parents=True)
        for k, name in enumerate(("mixture", "drums", "bass", "other", "vocals")):
            sf.write(folder / f"{name}.wav", sine(freq * (k + 1), amplitude, 2.0), RATE, subtype="FLOAT")


def test_compare_command(tmp_path):
    _corpus(tmp_path / "a", 220, 0.3, 2)
    _corpus(tmp_path / "b", 440, 0.03, 3)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "train.stats", "--root", str(tmp_path / "a"), "--compare",
                           str(tmp_path / "b"), "--output", str(out), "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "vocals" in proc.stdout and "centroid" in proc.stdout
    rows = list(csv.DictReader(open(out / "stats_tracks.csv")))
    assert len(rows) == (2 + 3) * 5
    summary = json.loads((out / "stats_summary.json").read_text())["summary"]
    assert set(summary) == {"a", "b"}
    assert summary["a"]["bass"]["tracks"] == 2 and summary["b"]["bass"]["tracks"] == 3
    # 20 dB quieter and an octave higher
    diff = summary["a"]["drums"]["rms_dbfs"]["median"] - summary["b"]["drums"]["rms_dbfs"]["median"]
    assert diff == pytest.approx(20, abs=0.1)
    assert summary["b"]["drums"]["centroid_hz"]["median"] == pytest.approx(
        2 * summary["a"]["drums"]["centroid_hz"]["median"], rel=0.05)
    assert (out / "stats.png").stat().st_size > 10_000


def test_compare_three_corpora_with_labels(tmp_path):
    """v1, v2 and a real corpus side by side: --compare and --compare-label repeat, in order."""
    from train.stats import main

    for name, freq in (("v1", 220), ("v2", 440), ("real", 880)):
        _corpus(tmp_path / name, freq, 0.1, 1)
    out = tmp_path / "out"
    assert main(["--root", str(tmp_path / "v1"), "--label", "corpus v1", "--compare", str(tmp_path / "v2"),
                 "--compare-label", "corpus v2", "--compare", str(tmp_path / "real"), "--output", str(out),
                 "--no-progress"]) == 0
    doc = json.loads((out / "stats_summary.json").read_text())
    assert [c["label"] for c in doc["corpora"]] == ["corpus v1", "corpus v2", "real"]
    medians = [doc["summary"][c]["bass"]["centroid_hz"]["median"] for c in ("corpus v1", "corpus v2", "real")]
    assert medians[0] < medians[1] < medians[2]
    assert main(["--root", str(tmp_path / "v1"), "--compare-label", "x", "--output", str(out),
                 "--no-progress"]) == 2


def test_missing_stem_is_reported(tmp_path):
    _corpus(tmp_path / "a", 220, 0.3, 1)
    (tmp_path / "a" / "test" / "track 0" / "bass.wav").unlink()
    proc = subprocess.run([sys.executable, "-m", "train.stats", "--root", str(tmp_path / "a"), "--output",
                           str(tmp_path / "out"), "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "bass.wav" in proc.stderr


def test_compare_stem_file_reads_the_real_excerpt(tmp_path):
    """A MUSDB18 .stem.mp4 (stempeg's real excerpt) joins the comparison as one more corpus, streams in order."""
    import stempeg

    from train.stats import main

    excerpt = Path(stempeg.__file__).parent / "data" / "The Easton Ellises - Falcon 69.stem.mp4"
    _corpus(tmp_path / "v1", 220, 0.1, 1)
    out = tmp_path / "out"
    assert main(["--root", str(tmp_path / "v1"), "--compare-stem", str(excerpt), "--output", str(out),
                 "--no-progress"]) == 0
    summary = json.loads((out / "stats_summary.json").read_text())["summary"]
    real = summary["real: The Easton Ellises - Falcon 69"]
    assert set(real) == {"mixture", "drums", "bass", "other", "vocals"}
    centroid = {stem: real[stem]["centroid_hz"]["median"] for stem in real}
    assert min(centroid, key=centroid.get) == "bass" and max(centroid, key=centroid.get) == "drums"
    assert real["mixture"]["lufs"]["median"] > max(real[s]["lufs"]["median"] for s in ("drums", "bass", "other"))
    assert main(["--root", str(tmp_path / "v1"), "--compare-stem", str(tmp_path / "none.stem.mp4"), "--output",
                 str(out), "--no-progress"]) == 1
