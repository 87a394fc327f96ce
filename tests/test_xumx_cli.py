"""Tests of the ``xumx-slicq`` command (:mod:`xumx_slicq.cli`), degraded reporting, progress lines, the model's
location when installed, and the packaging metadata.

Models are small randomly initialised xumx-sliCQ networks saved into a temporary folder; audio is generated.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
import soundfile as sf

from xumx_slicq import checkpoint, cli
from xumx_slicq.audio_io import InputError, probe_any
from xumx_slicq.engine import STEMS, Engine

ROOT = pathlib.Path(__file__).resolve().parents[1]
SR = 44100
FAST = ["--backend", "torch", "--wiener", "torch", "--chunk-seconds", "2", "--threads", "1"]


def noise(seconds, seed=0, channels=2):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((int(seconds * SR), channels))).astype(np.float32)


def summary(out):
    data = json.loads((pathlib.Path(out) / "summary.json").read_text())
    return {r["song"]: r for r in data["songs"]}, data


# ----------------------------------------------------------------------------------------------------------------
# The command end to end (a subprocess, as a user runs it)
# ----------------------------------------------------------------------------------------------------------------


def test_command_on_a_mixed_folder_with_a_broken_file(model_dir, tmp_path):
    inp = tmp_path / "in"
    (inp / "musdb_song").mkdir(parents=True)
    sf.write(inp / "a.wav", noise(2.5, 1), SR)
    sf.write(inp / "b.flac", noise(1.5, 2), SR, subtype="PCM_24")
    sf.write(inp / "c.ogg", noise(1.0, 3), SR)
    sf.write(inp / "d.mp3", noise(1.5, 4), SR)
    sf.write(inp / "musdb_song" / "mixture.wav", noise(1.0, 5), SR)
    sf.write(tmp_path / "e.wav", noise(1.0, 6, channels=1), 22050)  # a file given directly, mono, 22.05 kHz
    (inp / "broken.wav").write_bytes(b"RIFF....WAVEnot really audio")
    (inp / "notes.txt").write_text("not a song")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "xumx_slicq", str(inp), str(tmp_path / "e.wav"),
                           str(tmp_path / "missing.flac"), "-o", str(out), "--model", str(model_dir), *FAST],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stderr
    # the failures are named with their reason, at the end
    tail = proc.stderr[proc.stderr.index("input(s) failed"):]
    assert "broken.wav" in tail and "not a readable audio file" in tail
    assert "missing.flac" in tail and "no such file" in tail
    assert "notes" not in proc.stdout + proc.stderr  # not audio: not a song
    # every other song was written, each stem at the input's rate and exact length
    expected = {"a": (2.5, SR, 2), "b": (1.5, SR, 2), "c": (1.0, SR, 2), "d": (1.5, SR, 2), "musdb_song": (1.0, SR, 2),
                "e": (2.0, 22050, 1)}  # 1 s of 44.1 kHz samples written as 22.05 kHz
    records, data = summary(out)
    for name, (seconds, rate, _) in expected.items():
        assert records[name]["status"] == "done", records[name]
        for stem in STEMS:
            info = sf.info(out / name / f"{stem}.wav")
            assert info.samplerate == rate and info.subtype == "PCM_16" and info.channels == 2
            if name != "d":  # mp3 decoders may pad the start; soundfile reports the decoded length
                assert info.frames == int(seconds * rate), (name, stem, info.frames)
        assert records[name]["degraded"] is False and records[name]["budget_s"] is None  # quality first
    assert records["broken"]["status"] == "failed" and "broken.wav" in records["broken"]["error"]
    assert data["counts"] == {"done": 6, "failed": 2}
    # progress: one line per song, in order
    assert re.search(r"\[1/8\] .*a\.wav", proc.stderr) and "quality first" in proc.stderr


# ----------------------------------------------------------------------------------------------------------------
# Options (in-process: main() returns the exit code)
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_song(tmp_path_factory):
    folder = tmp_path_factory.mktemp("song")
    sf.write(folder / "song.wav", noise(2.0, 7), SR, subtype="FLOAT")
    return folder / "song.wav"


def test_stems_format_and_subtype(model_dir, one_song, tmp_path):
    out = tmp_path / "out"
    code = cli.main([str(one_song), "-o", str(out), "--model", str(model_dir), *FAST, "--stems", "vocals,drums",
                     "--format", "flac", "--subtype", "PCM_24"])
    assert code == 0
    assert sorted(p.name for p in (out / "song").iterdir()) == ["drums.flac", "vocals.flac"]
    for stem in ("drums", "vocals"):
        info = sf.info(out / "song" / f"{stem}.flac")
        assert (info.format, info.subtype, info.frames) == ("FLAC", "PCM_24", 2 * SR)


def test_two_stems_is_the_stem_and_the_sum_of_the_rest(model_dir, one_song, tmp_path):
    full, two = tmp_path / "full", tmp_path / "two"
    assert cli.main([str(one_song), "-o", str(full), "--model", str(model_dir), *FAST, "--subtype", "FLOAT"]) == 0
    assert cli.main([str(one_song), "-o", str(two), "--model", str(model_dir), *FAST, "--subtype", "FLOAT",
                     "--two-stems", "vocals"]) == 0
    assert sorted(p.name for p in (two / "song").iterdir()) == ["no_vocals.wav", "vocals.wav"]
    stems = {s: sf.read(full / "song" / f"{s}.wav", dtype="float32")[0] for s in STEMS}
    vocals = sf.read(two / "song" / "vocals.wav", dtype="float32")[0]
    rest = sf.read(two / "song" / "no_vocals.wav", dtype="float32")[0]
    np.testing.assert_allclose(vocals, stems["vocals"], atol=1e-5)
    np.testing.assert_allclose(rest, stems["bass"] + stems["drums"] + stems["other"], atol=1e-5)
    assert np.abs(rest).max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("argv,message", [
    (["--stems", "vocals,guitar"], "unknown stem"),
    (["--two-stems", "piano"], "not a stem"),
    (["--stems", "vocals", "--two-stems", "vocals"], "exclude each other"),
    (["--format", "flac", "--subtype", "FLOAT"], "FLAC holds no float"),
    (["--budget-factor", "0"], "must be > 0"),
])
def test_bad_options_are_refused(argv, message, one_song, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([str(one_song), "-o", str(tmp_path / "o"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_every_default():
    text = cli.build_parser().format_help()
    options = re.findall(r"^\s+(--[a-z-]+)", text, flags=re.M)
    assert "--two-stems" in options and "--budget-factor" in options
    for action in cli.build_parser()._actions:
        if action.option_strings and action.help and action.dest not in ("help", "version", "output"):
            assert "default" in action.help, action.option_strings


def test_missing_model_is_fatal(one_song, tmp_path, capsys):
    code = cli.main([str(one_song), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nomodel"), *FAST])
    assert code == 2 and "nomodel" in capsys.readouterr().err


def test_unwritable_output_is_fatal(one_song, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main([str(one_song), "-o", str(blocker / "out"), *FAST])
    assert code == 2 and "not writable" in capsys.readouterr().err


def test_song_names_stay_unique(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("song.wav", "song.flac", "x/song.wav"):
        sf.write(tmp_path / name, noise(0.1), SR)
    songs = cli.find_songs([tmp_path / "song.wav", tmp_path / "song.flac", tmp_path / "x" / "song.wav"])
    assert [s.name for s in songs] == ["song", "song_flac", "song_wav"]
    again = cli.find_songs([tmp_path / "song.wav"] * 3)
    assert [s.name for s in again] == ["song", "song_wav", "song-2"]


# ----------------------------------------------------------------------------------------------------------------
# m4a / mp4 through ffmpeg
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_m4a_is_decoded_with_ffmpeg(tmp_path):
    wav = tmp_path / "s.wav"
    sf.write(wav, noise(1.0), SR)
    m4a = tmp_path / "s.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    (tmp_path / "scratch").mkdir()
    info = probe_any(m4a, tmp_path / "scratch")
    assert info.rate == SR and info.channels == 2 and abs(info.duration - 1.0) < 0.1


def test_m4a_without_ffmpeg_names_the_file(tmp_path, monkeypatch):
    m4a = tmp_path / "song.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 64)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InputError, match=r"song\.m4a.*ffmpeg is not installed"):
        probe_any(m4a, tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Reports tell the truth: degraded songs
# ----------------------------------------------------------------------------------------------------------------


def test_budget_fallback_is_reported_as_degraded(model_dir, tmp_path, monkeypatch, capsys):
    """Wiener-EM made slow (3 s per chunk) under a 12 s limit: the command drops it, and says so."""
    sf.write(tmp_path / "slow.wav", noise(8.0, 9), SR)
    monkeypatch.setenv("XUMX_SUBMISSION_DELAY", "wiener=3")
    out = tmp_path / "out"
    code = cli.main([str(tmp_path / "slow.wav"), "-o", str(out), "--model", str(model_dir), *FAST,
                     "--budget-seconds", "12"])
    err = capsys.readouterr().err
    assert code == 0
    rec = summary(out)[0]["slow"]
    assert rec["degraded"] is True and rec["best_path"] == "wiener-torch-1"
    bad = rec["degraded_chunks"]  # no-wiener, and mixture/4 too when the machine is busy
    assert bad and all(c["path"] in ("no-wiener", "mixture/4") and c["reason"].startswith("time budget")
                       for c in bad)
    assert [c["chunk"] for c in bad] == [i for i, p in enumerate(rec["chunks"]) if p != "wiener-torch-1"]
    # every record names its chunk's span of the song; Wiener-EM may be taken up again by a later chunk when the
    # time saved allows it, so the last degraded chunk need not be the song's last
    spans = [(c["start_s"], c["end_s"]) for c in bad]
    assert all(0.0 <= a < b <= 8.0 for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    if bad[-1]["chunk"] == len(rec["chunks"]) - 1:
        assert bad[-1]["end_s"] == pytest.approx(8.0)
    assert any("DEGRADED" in w for w in rec["warnings"])
    assert "warning: " in err and "DEGRADED" in err and "slow" in err
    assert summary(out)[1]["degraded_songs"] == ["slow"]


def test_planned_mixture_quarter_is_degraded(model_dir, tmp_path):
    """No time for any model path: mixture/4 chosen by the planner (not an emergency) used to read as a clean song.
    The cost model says every model path needs 100 s per second of input, so the outcome does not depend on how
    fast the machine is (a 0.6 s budget let the no-Wiener path fit on a fast machine)."""
    logs = []
    engine = Engine(model_dir, backend="torch", wiener="torch", chunk_seconds=2.0, context_seconds=1.0,
                    log=logs.append)
    for path in engine.ladder:
        if path.kind == "model":
            engine.costs.update(path, 100.0, 1.0)
    sf.write(tmp_path / "s.wav", noise(4.0, 5), SR)
    result = engine.separate(tmp_path / "s.wav", {s: tmp_path / "o" / f"{s}.wav" for s in STEMS}, 2.0)
    rec = result.record()
    assert rec["degraded"] is True and rec["degraded_chunks"]
    assert {c["path"] for c in rec["degraded_chunks"]} <= {"mixture/4", "mixture/4 (emergency)"}
    # planned by the watchdog, not only an emergency
    assert any(c["path"] == "mixture/4" for c in rec["degraded_chunks"]), rec["degraded_chunks"]
    covered = sum(c["end_s"] - c["start_s"] for c in rec["degraded_chunks"])
    assert covered == pytest.approx(4.0, abs=0.01)  # the whole song, and the record says so
    assert any("DEGRADED" in m for m in logs)


def test_best_path_everywhere_is_not_degraded(model_dir, tmp_path):
    engine = Engine(model_dir, backend="torch", wiener="torch", chunk_seconds=2.0, context_seconds=1.0,
                    calibrate=False, log=lambda m: None)
    sf.write(tmp_path / "s.wav", noise(3.0, 5), SR)
    result = engine.separate(tmp_path / "s.wav", {s: tmp_path / "o" / f"{s}.wav" for s in STEMS}, float("inf"))
    rec = result.record()
    assert rec["degraded"] is False and rec["degraded_chunks"] == [] and rec["budget_s"] is None
    assert set(rec["chunks"]) == {"wiener-torch-1"}
    json.dumps(rec, allow_nan=False)  # strict JSON: no Infinity


# ----------------------------------------------------------------------------------------------------------------
# Never silent: progress lines while calibrating and separating
# ----------------------------------------------------------------------------------------------------------------


def test_calibration_and_songs_report_progress(model_dir, tmp_path, monkeypatch):
    logs = []
    engine = Engine(model_dir, backend="torch", wiener="torch", chunk_seconds=2.0, context_seconds=1.0,
                    calibrate=False, log=logs.append, heartbeat=0.1)
    assert any(m.startswith("loading the model") for m in logs)
    for sep in engine.variants.values():  # every path now takes >= 0.5 s per call
        real = sep.separate_segment
        monkeypatch.setattr(sep, "separate_segment", lambda x, real=real: (time.sleep(0.5), real(x))[1])
    logs.clear()
    engine.calibrate(seconds=1.0)
    assert any(m.startswith("calibrating path 1/2") for m in logs), logs
    assert sum("still calibrating" in m for m in logs) >= 3, logs  # a line every 0.1 s while a path is timed
    logs.clear()
    sf.write(tmp_path / "s.wav", noise(2.0), SR)
    engine.separate(tmp_path / "s.wav", {s: tmp_path / "o" / f"{s}.wav" for s in STEMS}, float("inf"))
    assert any(re.search(r"s\.wav: chunk \d+/\d+ on wiener-torch-1", m) for m in logs), logs


def test_submission_no_budget(model_dir, tmp_path):
    from submission.__main__ import main

    inp = tmp_path / "in"
    (inp / "x").mkdir(parents=True)
    sf.write(inp / "x" / "mixture.wav", noise(1.5), SR)
    code = main(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", str(model_dir), "--no-budget",
                 "--backend", "torch", "--wiener", "torch", "--chunk-seconds", "2", "--context-seconds", "1",
                 "--no-progress", "--threads", "1"])
    assert code == 0
    rec = summary(tmp_path / "out")[0]["x"]
    assert rec["budget_s"] is None and rec["degraded"] is False and rec["path"] == "wiener-torch-1"


# ----------------------------------------------------------------------------------------------------------------
# Installed: where the model is found, what pip installs
# ----------------------------------------------------------------------------------------------------------------


def test_model_found_by_variable_checkout_or_package(tmp_path, monkeypatch):
    checkout, package = tmp_path / "checkout", tmp_path / "package"
    monkeypatch.setattr(checkpoint, "CHECKOUT_MODEL_DIR", checkout)
    monkeypatch.setattr(checkpoint, "PACKAGE_MODEL_DIR", package)
    monkeypatch.delenv("XUMX_MODEL_DIR", raising=False)
    assert checkpoint.default_model_dir() == checkout  # nothing anywhere: the checkout's path, for the message
    package.mkdir()
    (package / "xumx_slicq.json").write_text("{}")
    assert checkpoint.default_model_dir() == package  # installed: the package's copy
    checkout.mkdir()
    (checkout / "xumx_slicq.json").write_text("{}")
    assert checkpoint.default_model_dir() == checkout  # a checkout's model first
    monkeypatch.setenv("XUMX_MODEL_DIR", str(tmp_path / "mine"))
    assert checkpoint.default_model_dir() == tmp_path / "mine"
    with pytest.raises(FileNotFoundError, match="XUMX_MODEL_DIR"):
        checkpoint.find_model()


def test_pyproject_installs_the_runtime_pins_the_command_and_the_model():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.lower()] = version
    deps = project["project"]["dependencies"]
    names = [d.split("==")[0].lower() for d in deps]
    for dep in deps:  # the same pins as requirements.txt, so the two never disagree
        name, version = dep.split("==")
        assert pins.get(name.lower()) == version, dep
    assert {"torch", "numpy", "scipy", "soundfile", "numba", "tqdm"} <= set(names)
    assert sum(n.startswith("onnxruntime") for n in names) == 1  # never the CPU and GPU wheels together
    assert not {"pytest", "musdb", "museval", "pandas", "matplotlib", "pretty-midi", "pedalboard"} & set(names)
    assert project["project"]["scripts"]["xumx-slicq"] == "xumx_slicq.cli:run"
    setuptools = project["tool"]["setuptools"]
    subpackages = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "xumx_slicq").rglob("__init__.py")}
    assert subpackages <= set(setuptools["packages"])  # a new subpackage must be listed
    assert setuptools["package-dir"]["xumx_slicq.pretrained"] == "pretrained-model"
    assert "*.pth" in setuptools["package-data"]["xumx_slicq.pretrained"]
