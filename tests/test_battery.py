"""A harder battery for ``python -m submission`` (issue 17, point 5), driven through the command line.

Every case runs the shipped model (``pretrained-model/``) in a subprocess on short songs (0.5-3 s) with the
cheapest settings (torch network, no Wiener-EM, short context, no calibration, a generous budget), and asserts
that nothing is lost: the other songs complete, finished stems stay intact, no temporary file is left, and the
error names the song. Cases: a read-only output folder (whole and one song's), a full disk (RLIMIT_FSIZE), two
runners on one output folder, SIGTERM mid-song, awkward names, symlinked inputs, 8 kHz / 192 kHz / 1-channel
24-bit inputs, and a 20-minute song (peak memory of the child <= 1.5 GB).

Results and times: docs/submission.md, "Battery".
"""

import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parents[1]
SR = 44100
STEMS = ("bass", "drums", "other", "vocals")
CHEAP = ["--backend", "torch", "--wiener", "off", "--chunk-seconds", "2", "--context-seconds", "0.5",
         "--no-calibrate", "--no-progress", "--threads", "1"]
FAST = CHEAP + ["--budget-factor", "1000"]


class Run:
    """What one command-line run did."""

    def __init__(self, rc, out, err, seconds, maxrss_kb):
        self.rc, self.out, self.err, self.seconds, self.maxrss_kb = rc, out, err, seconds, maxrss_kb

    def __repr__(self):
        return f"Run(rc={self.rc}, {self.seconds:.1f} s, {self.maxrss_kb} kB)\n{self.err[-3000:]}"


def env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", **extra)


def spawn(args, prefix=(), preexec=None, extra_env=None):
    """Start ``python -m submission ARGS`` (after ``prefix``, e.g. a wrapper command), output piped."""
    return subprocess.Popen([*prefix, sys.executable, "-m", "submission", *map(str, args)], cwd=ROOT,
                            env=env(**(extra_env or {})), preexec_fn=preexec, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, start, timeout=300) -> Run:
    """Wait for ``proc`` (killing it after ``timeout``) and collect its output and its own peak memory."""
    # wait4 reaps the child with its own rusage (RUSAGE_CHILDREN would mix in earlier children)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    stdout_chunks, stderr_chunks = [], []

    def pump(stream, sink):
        for line in stream:
            sink.append(line)

    pumps = [threading.Thread(target=pump, args=(proc.stdout, stdout_chunks)),
             threading.Thread(target=pump, args=(proc.stderr, stderr_chunks))]
    for t in pumps:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    for t in pumps:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(proc.returncode, "".join(stdout_chunks), "".join(stderr_chunks), time.monotonic() - start,
               usage.ru_maxrss)


def cli(args, timeout=300, **kwargs) -> Run:
    start = time.monotonic()
    return finish(spawn(args, **kwargs), start, timeout)


def tone(frames, channels=2, rate=SR, seed=0):
    """A quiet chord plus a little noise, ``(frames, channels)`` float32."""
    t = np.arange(frames)[:, None] / rate
    freqs = 110.0 * (1 + np.arange(channels))[None, :]
    rng = np.random.default_rng(seed)
    return (0.2 * np.sin(2 * np.pi * freqs * t) + 0.02 * rng.standard_normal((frames, channels))).astype(np.float32)


def make_song(folder, name, frames=SR, rate=SR, channels=2, subtype="PCM_16", seed=0):
    path = pathlib.Path(folder) / name / "mixture.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(frames, channels, rate, seed), rate, subtype=subtype)
    return path


def records(output):
    summary = json.loads((pathlib.Path(output) / "summary.json").read_text())
    return {r["song"]: r for r in summary["songs"]}


def assert_stems(folder, frames, rate=SR):
    """Four stereo finite stems of exactly ``frames`` frames at ``rate``; returns them."""
    out = {}
    for s in STEMS:
        data, r = sf.read(pathlib.Path(folder) / f"{s}.wav", dtype="float32", always_2d=True)
        assert r == rate and data.shape == (frames, 2), (folder, s, r, data.shape)
        assert np.isfinite(data).all()
        out[s] = data
    return out


def temps(folder):
    """Temporary files (ours: hidden, with ``.tmp`` in the name) anywhere under ``folder``."""
    return [p for p in pathlib.Path(folder).rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


def fingerprint(folder):
    """inode and mtime of every stem: unchanged means not rewritten."""
    return {s: (os.stat(folder / f"{s}.wav").st_ino, os.stat(folder / f"{s}.wav").st_mtime_ns) for s in STEMS}


def wait_for(predicate, proc, timeout=120, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def has_temps(folder):
    folder = pathlib.Path(folder)
    return folder.is_dir() and any(p.name.startswith(".xumx-") for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------------------------
# Read-only output
# ----------------------------------------------------------------------------------------------------------------


def read_only_prefix(path):
    """A command prefix under which ``path`` is read-only for the child, whoever runs the tests.

    Not root: nothing (the caller chmods). Root writes through any mode, so the child gets its own mount
    namespace with ``path`` bind-mounted read-only (EROFS, as on a read-only remount); skipped if that fails.
    """
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        return ()
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(path),
                            "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make {path} read-only as root here: {probe.stderr.decode()[-300:]}")
    return ("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(path))


def test_read_only_output_folder(tmp_path):
    """Whole output folder read-only: refused before any work (exit 2, the folder named). One song's folder
    read-only: that song fails naming its folder, the others complete."""
    inp, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(("a", "b_ro", "c")):
        make_song(inp, name, SR // 2, seed=i)
    out.mkdir()
    try:
        run = cli(["--input", inp, "--output", out, *FAST], prefix=read_only_prefix(out))
    finally:
        os.chmod(out, 0o755)
    assert run.rc == 2, run
    assert f"output folder {out} is not writable" in run.err, run
    assert list(out.iterdir()) == []
    (out / "b_ro").mkdir()
    try:
        run = cli(["--input", inp, "--output", out, *FAST], prefix=read_only_prefix(out / "b_ro"))
    finally:
        os.chmod(out / "b_ro", 0o755)
    assert run.rc == 1, run
    recs = records(out)
    assert recs["b_ro"]["status"] == "failed" and str(out / "b_ro") in recs["b_ro"]["error"], recs["b_ro"]
    assert "cannot write stems" in recs["b_ro"]["error"] and ("Read-only file system" in recs["b_ro"]["error"]
                                                              or "Permission denied" in recs["b_ro"]["error"])
    assert "b_ro" in run.err and "song(s) failed: b_ro" in run.err
    assert list((out / "b_ro").iterdir()) == []
    for name in ("a", "c"):
        assert recs[name]["status"] == "done"
        assert_stems(out / name, SR // 2)
    assert temps(out) == []


# ----------------------------------------------------------------------------------------------------------------
# Disk full
# ----------------------------------------------------------------------------------------------------------------


def file_size_limit(nbytes):
    """preexec_fn: no file may grow past ``nbytes`` (writes beyond fail with EFBIG instead of SIGXFSZ)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def test_output_disk_full(tmp_path):
    """Stems larger than the file-size limit (RLIMIT_FSIZE, the per-process "disk full"): that song fails naming
    its folder and leaves nothing; the small songs before and after it complete."""
    inp, out = tmp_path / "in", tmp_path / "out"
    make_song(inp, "a_small", SR // 2)
    make_song(inp, "b_big", 3 * SR, seed=1)  # a float stem of 3 s is ~1.06 MB
    make_song(inp, "c_small", SR // 2, seed=2)  # ~0.18 MB
    run = cli(["--input", inp, "--output", out, *FAST], preexec=file_size_limit(600_000))
    assert run.rc == 1, run
    recs = records(out)
    big = recs["b_big"]
    assert big["status"] == "failed" and str(out / "b_big") in big["error"], big
    assert "cannot write stems: File too large" in big["error"], big
    assert "error: song b_big" in run.err
    assert list((out / "b_big").iterdir()) == []
    for name in ("a_small", "c_small"):
        assert recs[name]["status"] == "done"
        assert_stems(out / name, SR // 2)
    assert temps(out) == []


# ----------------------------------------------------------------------------------------------------------------
# Two runners, SIGTERM
# ----------------------------------------------------------------------------------------------------------------


def test_two_runners_on_one_output_folder(tmp_path):
    """While a run is separating, a second run of the same songs into the same folder refuses at once (exit 2, the
    folder named), and so does a shard of it (its songs overlap); the first completes untouched."""
    inp, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        make_song(inp, f"s{i}", SR, seed=i)
    args = ["--input", inp, "--output", out, *FAST]
    first = spawn(args, extra_env={"XUMX_SUBMISSION_DELAY": "all=4"})  # >= 16 s of separation
    start = time.monotonic()
    wait_for(lambda: has_temps(out / "s0"), first, what="the first runner's first song")
    second = cli(args, timeout=120)
    shard = cli(["--input", inp, "--output", out, "--shard", "1/2", *FAST], timeout=120)
    assert first.poll() is None, "the first runner ended too early for this test"
    assert second.rc == 2, second
    assert f"output folder {out} is in use by another runner" in second.err, second
    assert shard.rc == 2 and "in use by another runner" in shard.err, shard
    done = finish(first, start)
    assert done.rc == 0, done
    recs = records(out)
    for i in range(4):
        assert recs[f"s{i}"]["status"] == "done", recs
        assert_stems(out / f"s{i}", SR)
    assert temps(out) == []
    # the lock is released with the process: the same command now runs (and skips everything)
    again = cli(args)
    assert again.rc == 0 and "already complete" in again.err, again


def test_sigterm_mid_song_then_rerun(tmp_path):
    """SIGTERM while the second song is being written: exit 143 naming that song, no temporary file, the first
    song's stems intact, the song recorded as interrupted; the same command then finishes the batch."""
    inp, out = tmp_path / "in", tmp_path / "out"
    lengths = {"s0": SR, "s1": 3 * SR, "s2": SR}
    for i, (name, n) in enumerate(lengths.items()):
        make_song(inp, name, n, seed=i)
    args = ["--input", inp, "--output", out, *FAST]
    proc = spawn(args, extra_env={"XUMX_SUBMISSION_DELAY": "all=0.4"})
    start = time.monotonic()
    wait_for(lambda: all((out / "s0" / f"{s}.wav").exists() for s in STEMS) and has_temps(out / "s1"), proc,
             what="the second song")
    proc.send_signal(signal.SIGTERM)
    run = finish(proc, start, timeout=60)
    assert run.rc == 143, run
    assert "interrupted by SIGTERM while separating song s1" in run.err, run
    assert temps(out) == []
    assert not (out / "s1").exists() or not any((out / "s1").iterdir())
    recs = records(out)
    assert recs["s0"]["status"] == "done" and recs["s1"]["status"] == "interrupted", recs
    assert "s1" in recs["s1"]["error"]
    before = fingerprint(out / "s0")
    assert_stems(out / "s0", SR)
    rerun = cli(args)
    assert rerun.rc == 0, rerun
    recs = records(out)
    assert recs["s0"]["status"] == "skipped" and recs["s1"]["status"] == "done" and recs["s2"]["status"] == "done"
    assert fingerprint(out / "s0") == before
    for name, n in lengths.items():
        assert_stems(out / name, n)
    assert temps(out) == []


# ----------------------------------------------------------------------------------------------------------------
# Names, symlinks, rates, formats
# ----------------------------------------------------------------------------------------------------------------


def test_names_with_spaces_quotes_and_non_ascii(tmp_path):
    inp, out = tmp_path / "in dir 'x'", tmp_path / "out \"dir\" é"
    names = ["with space", "it's a \"song\"", "Beyoncé – Déjà vu", "日本語 の 曲", "tab\tand;semi$(x)"]
    for i, name in enumerate(names):
        make_song(inp, name, SR // 2, seed=i)
    sf.write(inp / "flat ünïcode 'file'.flac", tone(SR // 2, seed=9), SR, format="FLAC", subtype="PCM_16")
    (inp / "bröken 'ñame'").mkdir()
    (inp / "bröken 'ñame'" / "mixture.wav").write_text("not audio")
    run = cli(["--input", inp, "--output", out, *FAST])
    assert run.rc == 1, run
    recs = records(out)
    for name in names + ["flat ünïcode 'file'"]:
        assert recs[name]["status"] == "done", recs[name]
        assert_stems(out / name, SR // 2)
        assert name in run.out  # the final table
    bad = recs["bröken 'ñame'"]
    assert bad["status"] == "failed" and "bröken 'ñame'" in bad["error"] and "not a readable audio file" in bad[
        "error"]
    assert "song(s) failed: bröken 'ñame'" in run.err
    assert temps(out) == []


def test_symlinked_inputs(tmp_path):
    """The input folder, a song folder, a mixture and a flat file may be symlinks; a dangling one fails by name."""
    real, inp, out = tmp_path / "real", tmp_path / "in", tmp_path / "out"
    make_song(real, "folder_target", SR // 2)
    make_song(real, "file_target", SR // 2, seed=1)
    sf.write(real / "flat.wav", tone(SR // 2, seed=2), SR, subtype="PCM_16")
    songs = tmp_path / "songs"
    songs.mkdir()
    (songs / "linked_folder").symlink_to(real / "folder_target", target_is_directory=True)
    (songs / "linked_mixture").mkdir()
    (songs / "linked_mixture" / "mixture.wav").symlink_to(real / "file_target" / "mixture.wav")
    (songs / "linked_flat.wav").symlink_to(real / "flat.wav")
    (songs / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    inp.symlink_to(songs, target_is_directory=True)
    run = cli(["--input", inp, "--output", out, *FAST])
    assert run.rc == 1, run
    recs = records(out)
    for name in ("linked_folder", "linked_mixture", "linked_flat"):
        assert recs[name]["status"] == "done", recs[name]
        assert_stems(out / name, SR // 2)
        assert not (out / name).is_symlink()
    assert recs["dangling"]["status"] == "failed" and "dangling.wav: file missing" in recs["dangling"]["error"]
    # the inputs were read, never written through
    assert sorted(p.name for p in (real / "folder_target").iterdir()) == ["mixture.wav"]
    assert temps(out) == [] and temps(real) == []


def test_8k_192k_and_mono_24_bit(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    make_song(inp, "rate_8k", 8000, rate=8000)
    make_song(inp, "rate_192k", 192000, rate=192000, seed=1)
    make_song(inp, "mono_24bit", SR, channels=1, subtype="PCM_24", seed=2)
    run = cli(["--input", inp, "--output", out, *FAST])
    assert run.rc == 0, run
    recs = records(out)
    assert_stems(out / "rate_8k", 8000, 8000)
    assert_stems(out / "rate_192k", 192000, 192000)
    mono = assert_stems(out / "mono_24bit", SR)
    for s in STEMS:
        np.testing.assert_array_equal(mono[s][:, 0], mono[s][:, 1])
    assert any("8000 Hz" in w for w in recs["rate_8k"]["warnings"])
    assert any("192000 Hz" in w for w in recs["rate_192k"]["warnings"])
    assert all(r["status"] == "done" for r in recs.values())
    assert temps(out) == []


# ----------------------------------------------------------------------------------------------------------------
# A 20-minute song
# ----------------------------------------------------------------------------------------------------------------

PEAK_LIMIT_KB = 1.5e9 / 1024  # 1.5 GB


def test_twenty_minute_song_memory(tmp_path):
    """A 20-minute 44.1 kHz song with a 30 s budget: the model covers what fits, mixture/4 the rest; four stems of
    the exact length, within the budget, and the child's peak RSS <= 1.5 GB (printed with the time)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    path = inp / "long20" / "mixture.wav"
    path.parent.mkdir(parents=True)
    frames = 20 * 60 * SR
    block = tone(10 * SR)  # 10 s repeated: cheap to make, real audio for the model
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16") as f:
        for _ in range(frames // len(block)):
            f.write(block)
    run = cli(["--input", inp, "--output", out, *CHEAP, "--budget-seconds", "30", "--subtype", "PCM_16"],
              timeout=600)
    print(f"20-minute song: {run.seconds:.1f} s wall, peak RSS {run.maxrss_kb / 1024:.0f} MB")
    assert run.rc == 0, run
    rec = records(out)["long20"]
    assert rec["status"] == "done", rec
    for s in STEMS:
        info = sf.info(str(out / "long20" / f"{s}.wav"))
        assert (info.frames, info.channels, info.samplerate) == (frames, 2, SR)
    assert run.maxrss_kb <= PEAK_LIMIT_KB, f"peak RSS {run.maxrss_kb / 1024:.0f} MB > 1.5 GB"
    assert rec["within_budget"], rec
    assert temps(out) == []
    shutil.rmtree(tmp_path / "out")  # 0.4 GB of stems
