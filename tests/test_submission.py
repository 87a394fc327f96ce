"""Tests of the MDX submission: batch runner, budget watchdog, robustness, resume after kill -9, sharding,
predict.py under a fake starter kit, run.sh.

Models are small randomly initialised xumx-sliCQ networks saved into a temporary folder; audio is generated.
"""

import copy
import errno
import importlib.util
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import soundfile as sf

from submission import runner
from submission.__main__ import main
from xumx_slicq.audio_io import InputError, StemWriter, is_temp, probe, stems_complete
from xumx_slicq.budget import (MIX4, CostModel, Path, build_ladder, choose_path, delay_for, parse_delays,
                               song_budget)
from xumx_slicq.engine import STEMS, Engine
from xumx_slicq import files

ROOT = pathlib.Path(__file__).resolve().parents[1]
SR = 44100
FAST = ["--backend", "torch", "--wiener", "torch", "--chunk-seconds", "2", "--context-seconds", "1",
        "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def engine(model_dir):
    """A calibrated engine with 2-s chunks and 1-s context (paths: torch Wiener 1, no Wiener, mixture/4)."""
    return Engine(model_dir, backend="torch", wiener="torch", niter=1, chunk_seconds=2.0, context_seconds=1.0,
                  log=lambda msg: None)


def noise(frames, channels=2, seed=0, scale=0.1):
    """Deterministic noise ``(frames, channels)`` float32."""
    return (scale * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


def song(folder, name, data, rate=SR, subtype="PCM_16", filename="mixture.wav", fmt=None):
    """Write ``<folder>/<name>/<filename>``; returns its path."""
    path = pathlib.Path(folder) / name / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    return path


def read_summary(output):
    summary = json.loads((pathlib.Path(output) / "summary.json").read_text())
    return {r["song"]: r for r in summary["songs"]}, summary


def assert_stems(folder, frames, rate=SR):
    """Four stereo, finite stems of exactly ``frames`` frames at ``rate``; returns them ``{stem: (frames, 2)}``."""
    out = {}
    for s in STEMS:
        data, r = sf.read(pathlib.Path(folder) / f"{s}.wav", dtype="float32", always_2d=True)
        assert r == rate and data.shape == (frames, 2), (s, r, data.shape)
        assert np.isfinite(data).all()
        out[s] = data
    return out


def no_temps(folder):
    """No temporary file (stem or summary) left anywhere under ``folder``."""
    return not [p for p in pathlib.Path(folder).rglob("*") if p.name.startswith(".") and files.TEMP_MARKER in p.name]


# ----------------------------------------------------------------------------------------------------------------
# Budget logic (pure)
# ----------------------------------------------------------------------------------------------------------------


def test_ladder_order_and_names():
    ladder = build_ladder(2, "auto")
    assert [p.name for p in ladder] == ["wiener-numba-2", "wiener-torch-2", "wiener-numba-1", "wiener-torch-1",
                                        "no-wiener", "mixture/4"]
    assert [p.name for p in build_ladder(3, "off")] == ["no-wiener", "mixture/4"]
    with pytest.raises(ValueError, match="wiener"):
        build_ladder(1, "fast")


def test_choose_path_degrades_with_time_left():
    ladder = build_ladder(2, "torch")
    w2, w1, off = ladder[:3]
    costs = CostModel(io_rate=0.01)
    costs.update(w2, 10.0, 10.0)  # 1.0 s per input second
    costs.update(off, 3.0, 10.0)  # 0.3
    # extrapolated: one iteration costs (1.0 - 0.3) / 2
    assert costs.rate(w1) == pytest.approx(0.65)
    remaining = [10.0, 10.0, 10.0]
    assert choose_path(ladder, costs, remaining, 31.0) == w2
    # Wiener-EM for this chunk as long as the rest fits without it
    assert choose_path(ladder, costs, remaining, 16.5) == w2
    assert choose_path(ladder, costs, remaining, 14.0) == w1
    assert choose_path(ladder, costs, remaining, 10.0) == off
    # not even no-wiener for all three: this chunk with the model, the rest as mixture/4
    assert choose_path(ladder, costs, remaining, 4.0) == off
    assert choose_path(ladder, costs, remaining, 2.0) == MIX4
    assert choose_path(ladder, costs, remaining, 31.0, broken=[w2]) == w1


def test_cost_model_rises_at_once_and_falls_slowly():
    p = Path("model", 1, "torch")
    costs = CostModel()
    costs.update(p, 1.0, 10.0)
    costs.update(p, 5.0, 10.0)
    assert costs.rate(p) == pytest.approx(0.5)
    costs.update(p, 1.0, 10.0)
    assert costs.rate(p) == pytest.approx(0.3)
    # nothing measured: optimistic (the first chunk calibrates)
    assert CostModel().predict(p, 100.0) == 0.0


def test_song_budget_and_delays():
    assert song_budget(100.0) == pytest.approx(157.0)
    assert song_budget(1.0) == 5.0 and song_budget(1.0, floor=0.5) == pytest.approx(1.57)
    assert song_budget(100.0, seconds=240) == 240
    delays = parse_delays("wiener=0.5,all=0.1")
    assert delay_for(Path("model", 1, "torch"), delays) == pytest.approx(0.6)
    assert delay_for(Path("model", 0, "off"), delays) == pytest.approx(0.1)
    assert delay_for(MIX4, delays) == pytest.approx(0.1)
    assert parse_delays("0.25") == {"wiener": 0.25}
    with pytest.raises(ValueError, match="unknown kind"):
        parse_delays("gpu=1")


def test_shards_are_disjoint_cover_and_stable():
    names = [f"song{i:03d}" for i in range(50)]
    songs = [runner.Song(n, None) for n in names]
    parts = [{s.name for s in runner.select_shard(songs, i, 3)} for i in range(3)]
    assert set().union(*parts) == set(names) and sum(map(len, parts)) == len(names)
    # adding songs never moves an existing one
    more = songs + [runner.Song(f"new{i}", None) for i in range(20)]
    for i in range(3):
        assert parts[i] <= {s.name for s in runner.select_shard(more, i, 3)}
    # shard I of N split J ways == shards I + N j of N J
    for j in range(2):
        sub = {s.name for s in runner.select_shard(songs, 1 + 3 * j, 6)}
        assert sub <= parts[1]
    assert runner.parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError):
            runner.parse_shard(bad)


# ----------------------------------------------------------------------------------------------------------------
# Engine: watchdog, emergency fallback, ONNX fallback
# ----------------------------------------------------------------------------------------------------------------


def test_watchdog_falls_back_when_wiener_is_slow(engine, tmp_path, monkeypatch):
    """An injected 3 s per Wiener chunk: all-Wiener cannot fit; the watchdog drops Wiener-EM and finishes in time."""
    mix = song(tmp_path, "s", noise(8 * SR), subtype="FLOAT")
    budget, delay = 12.0, 3.0
    engine.calibrate(seconds=2.0)
    monkeypatch.setattr(engine, "costs", copy.deepcopy(engine.costs))  # the test's slow chunks stay here
    monkeypatch.setattr(engine, "delays", {"wiener": delay})
    finals = {s: tmp_path / "out" / f"{s}.wav" for s in STEMS}
    result = engine.separate(mix, finals, budget)
    chunks = result.chunks
    assert len(chunks) == 4, chunks
    assert 4 * delay > budget * (1 - engine.safety)  # staying on Wiener-EM could not fit
    assert chunks[0] == "wiener-torch-1", chunks  # measured as cheap at calibration: tried first
    assert "no-wiener" in chunks and set(chunks) == {"wiener-torch-1", "no-wiener"}, chunks  # then dropped
    # choose_path takes the best path that still fits for each chunk: on a fast machine the time saved by a
    # no-Wiener chunk can pay for Wiener-EM on the last one, so the order after the first drop is not fixed
    assert chunks.count("wiener-torch-1") * delay < budget, chunks
    assert result.time < budget and not result.emergency, (result.time, chunks)
    # reported: every no-wiener chunk is listed as degraded by the time budget, and a warning says so
    assert result.degraded
    assert [c["chunk"] for c in result.degraded_chunks] == [i for i, c in enumerate(chunks) if c != "wiener-torch-1"]
    assert all(c["reason"].startswith("time budget") for c in result.degraded_chunks)
    assert any("DEGRADED" in w for w in result.warnings)
    assert_stems(tmp_path / "out", 8 * SR)
    assert no_temps(tmp_path)


def test_hard_deadline_writes_mixture_quarter_in_time(engine, tmp_path, monkeypatch):
    """A chunk that hangs far past the budget: the rest of the song is written as mixture/4 before the limit."""
    audio = noise(3 * SR, seed=4)
    mix = song(tmp_path, "s", audio, subtype="FLOAT")
    monkeypatch.setattr(engine, "costs", copy.deepcopy(engine.costs))  # the abandoned chunk updates a copy
    monkeypatch.setattr(engine, "delays", {"model": 6.0})
    finals = {s: tmp_path / "out" / f"{s}.wav" for s in STEMS}
    t = time.monotonic()
    result = engine.separate(mix, finals, 2.5)
    assert time.monotonic() - t < 2.5 and result.time < 2.5
    assert result.emergency and result.chunks[-1] == "mixture/4 (emergency)"
    last = result.degraded_chunks[-1]
    assert last["path"] == "mixture/4 (emergency)" and last["reason"].startswith("hard deadline")
    assert last["end_s"] == pytest.approx(3.0) and result.record()["degraded"] is True
    stems = assert_stems(tmp_path / "out", 3 * SR)
    for s in STEMS:  # the first chunk never finished: the whole song is mixture/4
        np.testing.assert_allclose(stems[s], audio / 4, atol=1e-7)
    assert no_temps(tmp_path)


def test_no_time_at_all_gives_mixture_quarter(engine, tmp_path):
    audio = noise(4 * SR, seed=5)
    mix = song(tmp_path, "s", audio, subtype="FLOAT")
    engine.calibrate(seconds=2.0)
    result = engine.separate(mix, {s: tmp_path / "o" / f"{s}.wav" for s in STEMS}, 0.6)
    assert set(result.chunks) <= {"mixture/4", "mixture/4 (emergency)"}
    stems = assert_stems(tmp_path / "o", 4 * SR)
    np.testing.assert_allclose(sum(stems.values()), audio, atol=1e-6)


def test_failing_path_degrades_instead_of_failing(engine, tmp_path, monkeypatch):
    w1 = Path("model", 1, "torch")
    broken_sep = engine.variants[w1]

    class Boom:
        targets = broken_sep.targets

        def separate_segment(self, x):
            raise RuntimeError("simulated ONNX/Wiener failure")

    monkeypatch.setitem(engine.variants, w1, Boom())
    monkeypatch.setattr(engine, "broken", set())
    mix = song(tmp_path, "s", noise(SR))
    result = engine.separate(mix, {s: tmp_path / "o" / f"{s}.wav" for s in STEMS}, 60.0)
    assert result.chunks == ["no-wiener"] and w1 in engine.broken
    assert result.degraded and result.degraded_chunks[0]["reason"].startswith("path failed: RuntimeError")
    assert_stems(tmp_path / "o", SR)


def test_onnx_failing_mid_song_switches_to_torch(model_dir, tmp_path, monkeypatch):
    eng = Engine(model_dir, backend="torch", wiener="torch", calibrate=False, chunk_seconds=2.0,
                 context_seconds=1.0, log=lambda msg: None)
    w1 = Path("model", 1, "torch")

    class BrokenOnnx:
        targets = eng.variants[w1].targets

        def separate_segment(self, x):
            raise RuntimeError("onnxruntime: session run failed")

    eng.variants[w1] = BrokenOnnx()
    eng.backend = "onnxruntime"  # as if auto had picked ONNX Runtime
    mix = song(tmp_path, "s", noise(SR))
    result = eng.separate(mix, {s: tmp_path / "o" / f"{s}.wav" for s in STEMS}, 60.0)
    assert eng.backend == "torch" and result.chunks == ["wiener-torch-1"] and not eng.broken
    assert_stems(tmp_path / "o", SR)


def test_failing_onnx_load_falls_back_to_torch(model_dir, monkeypatch):
    """A backend that fails to load (here ONNX Runtime): the torch network, with a warning."""
    import xumx_slicq.separator as separator

    real = separator.load_separator
    messages = []

    def onnx_fails(model_dir=None, arch=None, backend="torch", **options):
        if backend != "torch":
            raise RuntimeError("onnxruntime session failed")
        return real(model_dir, arch, **options)

    monkeypatch.setattr(separator, "load_separator", onnx_fails)
    eng = Engine(model_dir, backend="onnxruntime", wiener="off", calibrate=False, log=messages.append)
    assert eng.backend == "torch" and any("onnxruntime session failed" in m for m in messages)


# ----------------------------------------------------------------------------------------------------------------
# Robustness: one batch over every kind of good and bad input
# ----------------------------------------------------------------------------------------------------------------


def test_batch_over_every_input_case(model_dir, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    good = {}  # name -> (frames, rate, input data read back by soundfile as float)
    cases = {
        "mono": (noise(SR, 1), SR, "PCM_16", None),
        "three_ch": (noise(SR, 3, seed=1), SR, "FLOAT", None),
        "six_ch_48k": (noise(48000, 6, seed=2), 48000, "PCM_24", None),
        "rate_22k": (noise(22050, 2, seed=3), 22050, "PCM_16", None),
        "u8": (noise(SR, 2, seed=4), SR, "PCM_U8", None),
        "s24": (noise(SR, 2, seed=5), SR, "PCM_24", None),
        "s32": (noise(SR, 2, seed=6), SR, "PCM_32", None),
        "f64": (noise(SR, 2, seed=7).astype(np.float64), SR, "DOUBLE", None),
        "silence": (np.zeros((SR, 2), np.float32), SR, "PCM_16", None),
        "clipped": (np.clip(noise(SR, 2, seed=8, scale=3.0), -1, 1), SR, "PCM_16", None),
        "over_full_scale": (noise(SR, 2, seed=9, scale=4.0), SR, "FLOAT", None),
        "one_sample": (noise(1, 2, seed=10), SR, "PCM_16", None),
        "shorter_than_slice": (noise(5000, 2, seed=11), SR, "PCM_16", None),
    }
    for name, (data, rate, subtype, fmt) in cases.items():
        song(inp, name, data, rate, subtype)
    nan = noise(SR, 2, seed=12)
    nan[100:200, 0] = np.nan
    nan[300, 1] = np.inf
    nan[400, 0] = -np.inf
    song(inp, "nan_inf", nan, subtype="FLOAT")
    # FLAC / OGG data: in a song folder under mixture.flac, and as flat files in the input folder
    song(inp, "flac_folder", noise(SR, 2, seed=13), subtype="PCM_16", filename="mixture.flac", fmt="FLAC")
    sf.write(inp / "flat_ogg.ogg", noise(SR, 2, seed=14), SR, format="OGG", subtype="VORBIS")
    sf.write(inp / "flat_flac.flac", noise(SR, 1, seed=15), SR, format="FLAC", subtype="PCM_16")
    # truncated WAV: header promises 2 s, half the data is there -> separated, with a warning
    full = song(tmp_path / "tmp", "t", noise(2 * SR, seed=16))
    (inp / "truncated").mkdir()
    (inp / "truncated" / "mixture.wav").write_bytes(full.read_bytes()[: 44 + SR * 4 // 2])
    # failures
    (inp / "zero_byte").mkdir()
    (inp / "zero_byte" / "mixture.wav").write_bytes(b"")
    (inp / "corrupt").mkdir()
    (inp / "corrupt" / "mixture.wav").write_bytes(full.read_bytes()[:30])
    (inp / "text").mkdir()
    (inp / "text" / "mixture.wav").write_text("this is not audio\n" * 10)
    (inp / "missing").mkdir()
    (inp / "missing" / "vocals.wav").write_bytes(full.read_bytes())

    code = main(["--input", str(inp), "--output", str(out), "--model", str(model_dir), "--no-calibrate",
                 "--budget-seconds", "120", *FAST])
    assert code == 1  # some songs failed, the others were all separated
    records, summary = read_summary(out)
    expected_fail = {"zero_byte": "empty file (0 bytes)", "corrupt": "not a readable audio file",
                     "text": "not a readable audio file", "missing": "no mixture.wav"}
    assert set(records) == set(cases) | {"nan_inf", "flac_folder", "flat_ogg", "flat_flac", "truncated"} | set(
        expected_fail)
    for name, problem in expected_fail.items():
        rec = records[name]
        assert rec["status"] == "failed" and problem in rec["error"] and name in rec["error"], rec
        assert not (out / name).exists() or not list((out / name).iterdir())
    assert summary["counts"] == {"done": len(records) - 4, "failed": 4}
    for name, rec in records.items():
        if name in expected_fail:
            continue
        assert rec["status"] == "done" and rec["within_budget"], rec
        src = next((inp / name).glob("mixture.*")) if (inp / name).is_dir() else next(inp.glob(f"{name}.*"))
        info = sf.info(str(src))
        stems = assert_stems(out / name, info.frames, info.samplerate)
        if name in ("mono", "flat_flac"):
            for s in STEMS:
                np.testing.assert_array_equal(stems[s][:, 0], stems[s][:, 1])
    assert records["silence"]["path"] == "wiener-torch-1"
    silent = assert_stems(out / "silence", SR)
    assert max(np.abs(s).max() for s in silent.values()) < 1e-6
    assert any("NaN/Inf" in w for w in records["nan_inf"]["warnings"])
    assert any("downmixed" in w for w in records["three_ch"]["warnings"])
    assert any("48000 Hz" in w for w in records["six_ch_48k"]["warnings"])
    assert any("truncated WAV" in w for w in records["truncated"]["warnings"])
    assert sf.info(str(out / "truncated" / "vocals.wav")).frames == sf.info(str(inp / "truncated" /
                                                                                "mixture.wav")).frames
    # stems of an over-full-scale float mixture are not clipped (FLOAT output)
    loud = assert_stems(out / "over_full_scale", SR)
    assert max(np.abs(s).max() for s in loud.values()) > 1.0
    assert no_temps(out)


def test_probe_messages_name_file_and_problem(tmp_path):
    for name, content, problem in [("empty.wav", b"", "empty file"), ("text.wav", b"hello\n" * 20,
                                                                       "not a readable audio file")]:
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(InputError, match=problem) as err:
            probe(p)
        assert str(p) in str(err.value)
    with pytest.raises(InputError, match="file missing"):
        probe(tmp_path / "nope.wav")


def test_unreadable_input_folder_is_fatal(tmp_path, monkeypatch, capsys, model_dir):
    inp = tmp_path / "in"
    song(inp, "a", noise(1000))
    if os.geteuid() == 0:  # root reads through chmod: simulate the permission error where it happens
        real = os.scandir

        def deny(path="."):
            if pathlib.Path(path) == inp:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(runner.os, "scandir", deny)
    else:
        inp.chmod(0)
    try:
        code = main(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", str(model_dir), *FAST])
    finally:
        inp.chmod(0o755)
    assert code == 2
    err = capsys.readouterr().err
    assert str(inp) in err and "cannot be read" in err and "Permission denied" in err
    assert not (tmp_path / "out").exists()
    assert main(["--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"), *FAST]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unreadable_song_folder_fails_that_song_only(tmp_path, monkeypatch, model_dir):
    inp, out = tmp_path / "in", tmp_path / "out"
    song(inp, "locked", noise(1000))
    song(inp, "open", noise(1000, seed=1))
    real = os.listdir

    def deny(path="."):
        if pathlib.Path(path) == inp / "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(runner.os, "listdir", deny)
    code = main(["--input", str(inp), "--output", str(out), "--model", str(model_dir), "--no-calibrate",
                 "--budget-seconds", "60", *FAST])
    assert code == 1
    records, _ = read_summary(out)
    assert records["locked"]["status"] == "failed"
    assert "cannot be read" in records["locked"]["error"] and str(inp / "locked") in records["locked"]["error"]
    assert records["open"]["status"] == "done"
    assert_stems(out / "open", 1000)


def test_stems_and_summary_get_the_umask_mode(tmp_path, model_dir, umask_022):
    """Stems (streamed at 44.1 kHz or resampled at commit) and summary.json get a plain file's mode for the
    umask (0o644 under 0o022), not the 0o600 of a bare mkstemp temporary."""
    inp, out = tmp_path / "in", tmp_path / "out"
    song(inp, "direct", noise(SR))
    song(inp, "resampled", noise(22050, seed=1), rate=22050)
    assert main(["--input", str(inp), "--output", str(out), "--model", str(model_dir), *FAST]) == 0
    written = [out / "summary.json"] + [out / n / f"{s}.wav" for n in ("direct", "resampled") for s in STEMS]
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert set(modes.values()) == {"0o644"}, modes
    assert no_temps(out)


def test_read_only_output_folder_is_fatal(tmp_path, monkeypatch, capsys, model_dir):
    inp, out = tmp_path / "in", tmp_path / "out"
    song(inp, "a", noise(1000))
    out.mkdir()
    if os.geteuid() == 0:  # root writes through chmod: fail where the write happens (every temporary file)
        real = tempfile.mkstemp

        def read_only(*args, **kwargs):
            if pathlib.Path(kwargs.get("dir", "")) == out:
                raise PermissionError(errno.EROFS, "Read-only file system")
            return real(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    else:
        out.chmod(0o555)
    try:
        code = main(["--input", str(inp), "--output", str(out), "--model", str(model_dir), *FAST])
    finally:
        out.chmod(0o755)
    assert code == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not writable" in err
    assert list(out.iterdir()) == []


def test_disk_full_mid_song_leaves_nothing_and_batch_goes_on(tmp_path, monkeypatch, model_dir):
    inp, out = tmp_path / "in", tmp_path / "out"
    song(inp, "a_full", noise(3 * SR))
    song(inp, "b_ok", noise(SR, seed=1))
    real = StemWriter._write
    calls = {"n": 0}

    def full_disk(self, target, data):
        if "a_full" in str(self.finals[target]):
            calls["n"] += 1
            if calls["n"] > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, target, data)

    monkeypatch.setattr(StemWriter, "_write", full_disk)
    code = main(["--input", str(inp), "--output", str(out), "--model", str(model_dir), "--no-calibrate",
                 "--budget-seconds", "60", *FAST])
    assert code == 1
    records, _ = read_summary(out)
    assert records["a_full"]["status"] == "failed" and "No space left on device" in records["a_full"]["error"]
    assert str(out / "a_full") in records["a_full"]["error"]
    assert list((out / "a_full").iterdir()) == []  # no partial stem, no temporary
    assert records["b_ok"]["status"] == "done"
    assert_stems(out / "b_ok", SR)


# ----------------------------------------------------------------------------------------------------------------
# Resume after kill -9, sharding, jobs, merge
# ----------------------------------------------------------------------------------------------------------------


def _spawn(args, delay):
    env = dict(os.environ, XUMX_SUBMISSION_DELAY=delay, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "submission", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_mid_song(proc, out, first, second, timeout=150):
    """Wait until song ``first`` is complete and song ``second`` has temporaries, then kill -9."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = all((out / first / f"{s}.wav").exists() for s in STEMS)
        partial = (out / second).is_dir() and any(is_temp(p) for p in (out / second).iterdir())
        if done and partial:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never reached the second song")


def _stat(folder):
    return {s: (os.stat(folder / f"{s}.wav").st_ino, os.stat(folder / f"{s}.wav").st_mtime_ns) for s in STEMS}


def test_resume_after_kill_minus_9(model_dir, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    lengths = {"s0": 3 * SR, "s1": 5 * SR + 17, "s2": 2 * SR}
    for i, (name, n) in enumerate(lengths.items()):
        song(inp, name, noise(n, seed=i))
    args = ["--input", str(inp), "--output", str(out), "--model", str(model_dir), "--no-calibrate",
            "--budget-seconds", "300", *FAST]
    proc = _spawn(args, "all=0.4")  # slow chunks so the kill lands mid-song
    _kill_mid_song(proc, out, "s0", "s1")
    assert not stems_complete({s: out / "s1" / f"{s}.wav" for s in STEMS}, lengths["s1"], SR)
    before = _stat(out / "s0")
    assert main(args) == 0
    records, _ = read_summary(out)
    assert records["s0"]["status"] == "skipped" and records["s1"]["status"] == "done"
    assert records["s2"]["status"] == "done"
    assert _stat(out / "s0") == before  # not redone
    for name, n in lengths.items():
        assert_stems(out / name, n)
    assert no_temps(out)


def _seven_names():
    """Seven song names with at least two in shard 1 of 3 (so a kill can land after its first song)."""
    names = []
    for i in range(100):
        n = f"song{i:02d}"
        names.append(n)
        counts = [sum(runner.shard_of(m, 3) == k for m in names) for k in range(3)]
        if len(names) >= 7 and min(counts) >= 2:
            break
        if len(names) >= 7:
            names.pop(0)
    return names[-7:]


def test_shards_cover_once_and_killed_shard_completes_alone(model_dir, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    names = _seven_names()
    for i, n in enumerate(names):
        song(inp, n, noise(2 * SR, seed=i))
    base = ["--input", str(inp), "--output", str(out), "--model", str(model_dir), "--no-calibrate",
            "--budget-seconds", "300", *FAST]
    shares = [[s.name for s in runner.select_shard(runner.discover(inp), i, 3)] for i in range(3)]
    assert sorted(sum(shares, [])) == sorted(names) and len(set(sum(shares, []))) == 7
    assert main(base + ["--shard", "0/3"]) == 0
    assert main(base + ["--shard", "2/3"]) == 0
    proc = _spawn(base + ["--shard", "1/3"], "all=0.5")
    _kill_mid_song(proc, out, shares[1][0], shares[1][1])
    others = {n: _stat(out / n) for n in shares[0] + shares[2]}
    first_of_1 = _stat(out / shares[1][0])
    assert main(base + ["--shard", "1/3"]) == 0
    records, summary = read_summary(out)
    assert set(records) == set(names)
    assert all(records[n]["status"] in ("done", "skipped") for n in names), summary["counts"]
    assert {records[n]["shard"] for n in shares[1]} == {"1/3"}
    assert records[shares[1][0]]["status"] == "skipped"
    for n in names:
        assert_stems(out / n, 2 * SR)
    assert {n: _stat(out / n) for n in others} == others  # nothing redone by (or for) the other shards
    assert _stat(out / shares[1][0]) == first_of_1
    assert no_temps(out)
    # rerunning a finished shard does nothing
    assert main(base + ["--shard", "0/3"]) == 0
    assert {n: _stat(out / n) for n in shares[0]} == {n: others[n] for n in shares[0]}


def test_jobs_and_merge_of_separate_output_folders(model_dir, tmp_path):
    inp = tmp_path / "in"
    names = [f"j{i}" for i in range(4)]
    for i, n in enumerate(names):
        song(inp, n, noise(SR, seed=i))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "submission", "--input", str(inp), "--output", str(out),
                           "--model", str(model_dir), "--no-calibrate", "--budget-seconds", "120", *FAST,
                           "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records, _ = read_summary(out)
    assert sorted(records) == names and all(r["status"] == "done" for r in records.values())
    assert {r["shard"] for r in records.values()} <= {"0/2", "1/2"}
    assert (out / "summary.shard-0-of-2.json").exists() and (out / "summary.shard-1-of-2.json").exists()
    for n in names:
        assert_stems(out / n, SR)
    # one output folder per shard (separate machines), then --merge
    outs = [tmp_path / f"m{i}" for i in range(2)]
    for i, o in enumerate(outs):
        assert main(["--input", str(inp), "--output", str(o), "--model", str(model_dir), "--no-calibrate",
                     "--budget-seconds", "120", *FAST, "--shard", f"{i}/2"]) == 0
    merged = tmp_path / "merged"
    assert main(["--merge", "--output", str(merged), "--merge-from", *map(str, outs)]) == 0
    records, summary = read_summary(merged)
    assert sorted(records) == names and summary["counts"] == {"done": 4}
    assert {pathlib.Path(r["output"]).parent for r in records.values()} == set(outs)


# ----------------------------------------------------------------------------------------------------------------
# predict.py as the starter kit drives it, standalone, and run.sh
# ----------------------------------------------------------------------------------------------------------------

FAKE_KIT = '''
"""Test double of the MDX 2021 starter kit's evaluator (written for the tests)."""
import os
import signal
from contextlib import contextmanager


class TimeoutException(Exception):
    pass


@contextmanager
def time_limit(seconds):
    def handler(signum, frame):
        raise TimeoutException("Prediction timed out!")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)


class MusicDemixingPredictor:
    def __init__(self):
        self.test_data_path = os.getenv("TEST_DATASET_PATH", os.getcwd() + "/data/test/")
        self.results_data_path = os.getenv("RESULTS_DATASET_PATH", os.getcwd() + "/data/results/")
        self.inference_setup_timeout = int(os.getenv("INFERENCE_SETUP_TIMEOUT_SECONDS", "900"))
        self.inference_per_music_timeout = int(os.getenv("INFERENCE_PER_MUSIC_TIMEOUT_SECONDS", "240"))
        self.calls = []

    def get_all_music_names(self):
        return [f for f in os.listdir(self.test_data_path)
                if not os.path.isfile(os.path.join(self.test_data_path, f))]

    def get_music_file_location(self, music_name, instrument=None):
        if instrument is None:
            return os.path.join(self.test_data_path, music_name, "mixture.wav")
        os.makedirs(os.path.join(self.results_data_path, music_name), exist_ok=True)
        return os.path.join(self.results_data_path, music_name, instrument + ".wav")

    def verify_results(self, music_name):
        return all(os.path.isfile(self.get_music_file_location(music_name, i))
                   for i in ("vocals", "bass", "drums", "other"))

    def evaluation(self):
        with time_limit(self.inference_setup_timeout):
            self.prediction_setup()
        for music_name in self.get_all_music_names():
            with time_limit(self.inference_per_music_timeout):
                self.prediction(mixture_file_path=self.get_music_file_location(music_name),
                                bass_file_path=self.get_music_file_location(music_name, "bass"),
                                drums_file_path=self.get_music_file_location(music_name, "drums"),
                                other_file_path=self.get_music_file_location(music_name, "other"),
                                vocals_file_path=self.get_music_file_location(music_name, "vocals"))
            self.calls.append(music_name)
            if not self.verify_results(music_name):
                raise Exception("verification failed, demixed files not found.")

    def run(self):
        self.evaluation()
'''


def _load_predict(tag):
    spec = importlib.util.spec_from_file_location(f"predict_under_test_{tag}", ROOT / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _predict_env(monkeypatch, model_dir, inp, out):
    monkeypatch.setenv("TEST_DATASET_PATH", str(inp))
    monkeypatch.setenv("RESULTS_DATASET_PATH", str(out))
    monkeypatch.setenv("XUMX_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("XUMX_BACKEND", "torch")
    monkeypatch.setenv("XUMX_WIENER", "torch")


def test_predict_under_the_starter_kit(model_dir, tmp_path, monkeypatch):
    kit = tmp_path / "kit" / "evaluator"
    kit.mkdir(parents=True)
    (kit / "__init__.py").write_text("")
    (kit / "music_demixing.py").write_text(FAKE_KIT)
    monkeypatch.syspath_prepend(str(tmp_path / "kit"))
    for mod in ("evaluator", "evaluator.music_demixing"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    inp, out = tmp_path / "test", tmp_path / "results"
    lengths = {"SS_001": 2 * SR + 5, "SS_002": SR // 3}
    for i, (name, n) in enumerate(lengths.items()):
        song(inp, name, noise(n, seed=i))
    _predict_env(monkeypatch, model_dir, inp, out)
    monkeypatch.setenv("INFERENCE_PER_MUSIC_TIMEOUT_SECONDS", "60")
    predict = _load_predict("kit")
    from evaluator.music_demixing import MusicDemixingPredictor as KitBase

    assert issubclass(predict.XUMXSliCQPredictor, KitBase)
    predictor = predict.XUMXSliCQPredictor()
    predictor.run()
    assert sorted(predictor.calls) == sorted(lengths)
    for name, n in lengths.items():
        assert_stems(out / name, n)
        rec = predictor.records[str(inp / name / "mixture.wav")]
        assert rec["time_s"] <= rec["budget_s"] <= 60
    assert no_temps(out)
    for mod in ("evaluator", "evaluator.music_demixing"):
        sys.modules.pop(mod, None)


def test_predict_standalone_and_failure_reported(model_dir, tmp_path, monkeypatch):
    from submission.base import MusicDemixingPredictor as OwnBase

    for mod in ("evaluator", "evaluator.music_demixing"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.chdir(tmp_path)  # no evaluator/ folder on the path
    inp, out = tmp_path / "test", tmp_path / "results"
    song(inp, "a_good", noise(SR))
    (inp / "b_bad").mkdir()
    (inp / "b_bad" / "mixture.wav").write_text("not audio")
    song(inp, "c_after", noise(SR, seed=1))
    _predict_env(monkeypatch, model_dir, inp, out)
    predict = _load_predict("own")
    assert issubclass(predict.XUMXSliCQPredictor, OwnBase)
    predictor = predict.XUMXSliCQPredictor()
    # as the real kit: the first failing song stops the evaluation (the stand-in's error names it)
    with pytest.raises(RuntimeError, match="song b_bad failed, evaluation stopped"):
        predictor.run()
    assert_stems(out / "a_good", SR)
    assert not list((out / "b_bad").glob("*.wav")) and no_temps(out)
    assert not (out / "c_after").exists()


def test_run_sh_and_aicrowd_json(model_dir, tmp_path):
    meta = json.loads((ROOT / "aicrowd.json").read_text())
    assert meta["challenge_id"] == meta["grader_id"] == "evaluations-api-music-demixing"
    assert meta["external_dataset_used"] is False and isinstance(meta["authors"], list) and meta["description"]
    assert "gpu" not in meta
    inp, out = tmp_path / "test", tmp_path / "results"
    song(inp, "SS_008", noise(SR + 1))
    env = dict(os.environ, TEST_DATASET_PATH=str(inp), RESULTS_DATASET_PATH=str(out))
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), "--model", str(model_dir), "--no-calibrate", *FAST],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_stems(out / "SS_008", SR + 1)
    assert "SS_008" in proc.stdout and "done" in proc.stdout
