"""Tests of xumx_slicq.data: layout checks, splits, chunk shapes, augmentation ranges, balance, determinism."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from xumx_slicq import data
from xumx_slicq.data import (MUSDB_VALIDATION_TRACKS, SOURCES, ChunkDataset, FullTrackDataset, list_tracks,
                             make_train_loader, validation_names)

RATE = 44100


def write_track(folder: Path, seconds: float, rng: np.random.Generator, silent_vocals_until: float | None = None,
                rate: int = RATE, channels: int = 2, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Write a track of random stems (distinct per channel) and their sum; returns the float arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    stems = {}
    for k, name in enumerate(("drums", "bass", "other", "vocals")):
        x = rng.uniform(-0.2, 0.2, (n, channels)).astype(np.float32)
        if channels == 2:
            x[:, 1] *= 0.5  # right channel quieter: swaps are visible
        if name == "vocals" and silent_vocals_until is not None:
            x[: int(silent_vocals_until * rate)] = 0
        stems[name] = x
    stems["mixture"] = sum(stems[s] for s in ("drums", "bass", "other", "vocals"))
    for name, x in stems.items():
        if name not in skip:
            sf.write(folder / f"{name}.wav", x, rate, subtype="FLOAT")
    return stems


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """6 train tracks of 3 s (one with vocals silent for its first 1.5 s) and 2 test tracks of 2 s."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(6):
        write_track(root / "train" / f"song {i}", 3.0, rng, silent_vocals_until=1.5 if i == 0 else None)
    for i in range(2):
        write_track(root / "test" / f"test song {i}", 2.0, rng)
    return root


def read_chunk(path: Path, start: int, frames: int) -> np.ndarray:
    """Reference reader: (nb_channels, frames) with zero padding."""
    x, _ = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    x = np.pad(x, ((0, frames - x.shape[0]), (0, 0)))
    return x.T


def test_splits_are_disjoint_and_deterministic(corpus):
    train = [t.name for t in list_tracks(corpus, "train")]
    valid = [t.name for t in list_tracks(corpus, "valid")]
    test = [t.name for t in list_tracks(corpus, "test")]
    assert valid and train and not set(train) & set(valid)
    assert sorted(train + valid) == [f"song {i}" for i in range(6)]
    assert test == ["test song 0", "test song 1"]
    names = [f"track {i}" for i in range(200)]
    held = validation_names(names, 0.2)
    assert held == validation_names(list(reversed(names)), 0.2)[::-1]  # order-independent membership
    assert 20 <= len(held) <= 60  # ~20 % of 200
    assert validation_names(names, 0.0, "hash") == []


def test_musdb_names_select_the_official_validation_split(tmp_path):
    rng = np.random.default_rng(1)
    names = list(MUSDB_VALIDATION_TRACKS[:3]) + ["A Band - Some Song", "Another - Track"]
    for name in names:
        write_track(tmp_path / "train" / name, 0.2, rng)
    assert sorted(t.name for t in list_tracks(tmp_path, "valid")) == sorted(MUSDB_VALIDATION_TRACKS[:3])
    assert sorted(t.name for t in list_tracks(tmp_path, "train")) == ["A Band - Some Song", "Another - Track"]
    assert len(MUSDB_VALIDATION_TRACKS) == 14 and len(set(MUSDB_VALIDATION_TRACKS)) == 14
    # forcing the hash split on the same names gives a different, non-empty held-out set
    forced = validation_names(names, 0.3, "hash")
    assert forced and set(forced) != set(MUSDB_VALIDATION_TRACKS[:3])


def test_chunk_shapes_and_mixture(corpus):
    ds = ChunkDataset(corpus, seq_dur=0.5, samples_per_track=3)
    assert len(ds) == len(ds.tracks) * 3
    x, y = ds[0]
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert tuple(x.shape) == (2, RATE // 2) and tuple(y.shape) == (4, 2, RATE // 2)
    assert torch.allclose(x, y.sum(0), atol=1e-6)
    assert x.abs().max() > 0.01


def test_items_match_their_plan(corpus):
    """The audio of an item is exactly the planned chunks, gains and channel swaps."""
    ds = ChunkDataset(corpus, targets=("bass", "vocals"), seq_dur=0.25, samples_per_track=4, seed=3)
    frames = int(0.25 * RATE)
    for index in (0, 5, len(ds) + 2):
        plan = ds.plan(index)
        x, y = ds[index]
        assert tuple(y.shape) == (2, 2, frames)
        expected = {}
        for j, source in enumerate(SOURCES):
            chunk = read_chunk(ds.tracks[plan.tracks[j]].folder / f"{source}.wav", plan.starts[j], frames)
            if plan.swaps[j]:
                chunk = chunk[::-1]
            expected[source] = chunk * np.float32(plan.gains[j])
        np.testing.assert_allclose(y[0].numpy(), expected["bass"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(y[1].numpy(), expected["vocals"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(x.numpy(), sum(expected.values()), rtol=0, atol=1e-5)


def test_augmentation_ranges_balance_and_mixing(corpus):
    spt = 40
    ds = ChunkDataset(corpus, seq_dur=0.1, samples_per_track=spt, seed=11)
    plans = [ds.plan(i) for i in range(len(ds))]
    gains = np.array([p.gains for p in plans])
    swaps = np.array([p.swaps for p in plans])
    assert gains.min() >= 0.25 and gains.max() <= 1.25
    assert gains.min() < 0.35 and gains.max() > 1.15  # the whole range is used
    assert 0.35 < swaps.mean() < 0.65
    tracks = np.array([p.tracks for p in plans])  # (nb_items, nb_sources)
    for j in range(len(SOURCES)):  # balanced: every track exactly spt times per source
        assert np.bincount(tracks[:, j], minlength=len(ds.tracks)).tolist() == [spt] * len(ds.tracks)
    assert np.mean([len(set(t)) > 1 for t in tracks]) > 0.5  # sources come from different tracks
    starts = np.array([p.starts for p in plans])
    assert starts.min() >= 0 and starts.max() <= 3 * RATE - int(0.1 * RATE)
    assert len(np.unique(starts)) > len(plans)  # offsets are random per source


def test_no_mix_no_augment(corpus):
    ds = ChunkDataset(corpus, seq_dur=0.2, samples_per_track=5, random_track_mix=False, augment=False)
    for i in range(len(ds)):
        plan = ds.plan(i)
        assert len(set(plan.tracks)) == 1 and plan.tracks[0] == i // 5
        assert len(set(plan.starts)) == 1
        assert plan.gains == (1.0,) * 4 and plan.swaps == (False,) * 4
    x, y = ds[0]
    plan = ds.plan(0)
    mix = read_chunk(ds.tracks[plan.tracks[0]].folder / "mixture.wav", plan.starts[0], int(0.2 * RATE))
    np.testing.assert_allclose(x.numpy(), mix, atol=1e-5)


def test_skip_silent(corpus):
    """Track 'song 0' has silent vocals for 1.5 of its 3 s: skipping silence avoids silent vocal chunks."""
    def silent_vocals(ds):
        k = ds.targets.index("vocals")
        return sum(float(ds[i][1][k].pow(2).mean()) < 1e-6 for i in range(len(ds)))

    plain = ChunkDataset(corpus, split="train", seq_dur=0.2, samples_per_track=30, random_track_mix=False,
                         augment=False, split_mode="hash", valid_fraction=0.0)
    skipping = ChunkDataset(corpus, split="train", seq_dur=0.2, samples_per_track=30, random_track_mix=False,
                            augment=False, split_mode="hash", valid_fraction=0.0, skip_silent=True)
    assert "song 0" in plain.track_names
    assert silent_vocals(plain) >= 10
    assert silent_vocals(skipping) == 0


def test_determinism_epochs_and_workers(corpus):
    a = ChunkDataset(corpus, seq_dur=0.1, samples_per_track=4, seed=5)
    b = ChunkDataset(corpus, seq_dur=0.1, samples_per_track=4, seed=5)
    c = ChunkDataset(corpus, seq_dur=0.1, samples_per_track=4, seed=6)
    assert torch.equal(a[3][1], b[3][1])
    assert not torch.equal(a[3][1], c[3][1])
    b.set_epoch(1)
    assert torch.equal(a[len(a) + 3][1], b[3][1])  # index >= len encodes the epoch
    assert not torch.equal(a[3][1], b[3][1])

    def batches(workers):
        loader = make_train_loader(a, batch_size=4, num_workers=workers, seed=9, persistent_workers=workers > 0)
        epochs = [[y.clone() for _, y in loader] for _ in range(2)]
        return epochs

    serial, parallel = batches(0), batches(2)
    for e in range(2):
        assert len(serial[e]) == len(a) // 4
        assert all(torch.equal(s, p) for s, p in zip(serial[e], parallel[e]))
    assert not torch.equal(serial[0][0], serial[1][0])  # a new epoch gives new chunks


def test_full_tracks(corpus):
    ds = FullTrackDataset(corpus, split="test", targets=("vocals", "drums"))
    assert ds.track_names == ["test song 0", "test song 1"]
    x, y = ds[1]
    mix, _ = sf.read(corpus / "test" / "test song 1" / "mixture.wav", dtype="float32")
    drums, _ = sf.read(corpus / "test" / "test song 1" / "drums.wav", dtype="float32")
    assert tuple(x.shape) == (2, 2 * RATE) and tuple(y.shape) == (2, 2, 2 * RATE)
    np.testing.assert_array_equal(x.numpy(), mix.T)
    np.testing.assert_array_equal(y[1].numpy(), drums.T)
    short = FullTrackDataset(corpus, split="test", max_duration=0.5)
    assert short[0][0].shape[-1] == RATE // 2


def test_clear_errors(tmp_path):
    rng = np.random.default_rng(2)
    write_track(tmp_path / "missing" / "train" / "t", 0.2, rng, skip=("bass",))
    with pytest.raises(FileNotFoundError, match=r"t/bass\.wav.*missing 'bass'"):
        ChunkDataset(tmp_path / "missing")
    write_track(tmp_path / "rate" / "train" / "t", 0.2, rng, rate=22050)
    with pytest.raises(ValueError, match=r"t/\w+\.wav: sample rate is 22050 Hz, expected 44100"):
        ChunkDataset(tmp_path / "rate")
    write_track(tmp_path / "mono" / "train" / "t", 0.2, rng, channels=1)
    with pytest.raises(ValueError, match=r"t/\w+\.wav: has 1 channel\(s\), expected stereo"):
        ChunkDataset(tmp_path / "mono")
    write_track(tmp_path / "length" / "train" / "t", 0.2, rng)
    sf.write(tmp_path / "length" / "train" / "t" / "other.wav", np.zeros((100, 2)), RATE)
    with pytest.raises(ValueError, match="different lengths"):
        ChunkDataset(tmp_path / "length")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ChunkDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="targets"):
        ChunkDataset(tmp_path / "length", targets=("vocals", "piano"))


def test_musdb_backend_wav(corpus):
    pytest.importorskip("musdb")
    if shutil.which("ffprobe") is None:
        pytest.skip("musdb needs ffmpeg/ffprobe")
    ds = ChunkDataset(corpus, split="train", seq_dur=0.2, samples_per_track=2, backend="musdb")
    # musdb's own split: no official validation names here, so every train track is a training track
    assert ds.track_names == [f"song {i}" for i in range(6)]
    x, y = ds[1]
    assert tuple(x.shape) == (2, int(0.2 * RATE)) and tuple(y.shape) == (4, 2, int(0.2 * RATE))


def test_musdb_backend_stem_mp4(tmp_path):
    """Compressed MUSDB18 (.stem.mp4, one AAC stream per stem) decoded chunk by chunk through musdb."""
    pytest.importorskip("musdb")
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    stems = write_track(tmp_path / "wav", 2.0, np.random.default_rng(4))
    (tmp_path / "mp4" / "train").mkdir(parents=True)
    cmd = ["ffmpeg", "-y", "-loglevel", "error"]
    for name in ("mixture", "drums", "bass", "other", "vocals"):  # MUSDB stem order
        cmd += ["-i", str(tmp_path / "wav" / f"{name}.wav")]
    for i in range(5):
        cmd += ["-map", f"{i}:a"]
    cmd += ["-c:a", "aac", "-b:a", "256k", str(tmp_path / "mp4" / "train" / "Some - Song.stem.mp4")]
    subprocess.run(cmd, check=True, timeout=60)
    ds = ChunkDataset(tmp_path / "mp4", split="train", seq_dur=0.5, samples_per_track=1, backend="musdb",
                      is_wav=False, random_track_mix=False, augment=False)
    assert ds.track_names == ["Some - Song"]
    plan = ds.plan(0)
    x, y = ds[0]
    assert tuple(y.shape) == (4, 2, RATE // 2)
    ref = stems["bass"][plan.starts[2]: plan.starts[2] + RATE // 2, 0]
    got = y[SOURCES.index("bass"), 0].numpy()
    corr = max(np.corrcoef(got[lag:], ref[: len(ref) - lag])[0, 1] for lag in range(0, 2200, 1))
    assert corr > 0.9  # lossy codec, possibly shifted by the encoder delay


def test_module_constants():
    assert data.SOURCES == ("vocals", "drums", "bass", "other")
    assert data.TRACK_FILES == ("mixture", "drums", "bass", "other", "vocals")


def test_throughput_benchmark_runs(corpus, tmp_path):
    import json
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "benchmark.data_throughput", "--root", str(corpus), "--output",
                           str(tmp_path), "--batch-size", "4", "--batches", "3", "--warmup", "1", "--seq-dur", "0.5",
                           "--samples-per-track", "4"], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "data_throughput.json").read_text())
    assert [r["workers"] for r in result["runs"]] == [2, 0]
    assert all(r["samples_per_s"] > 0 for r in result["runs"])
    assert result["runs"][0]["x_shape"] == [4, 2, RATE // 2] and result["runs"][0]["y_shape"] == [4, 4, 2, RATE // 2]
