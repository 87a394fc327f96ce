"""Tests of the synthetic corpus generator (train.synth / train.synthesis)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from train.stats import stem_statistics
from train.synthesis import generate_corpus, track_name
from train.synthesis.fluid import render_parts
from train.synthesis.events import Part
from train.synthesis.plan import GENRES, MIN_ACTIVE_FRACTION, plan_song
from train.synthesis.theory import Grid, diatonic_chord, scale_pitch_classes, voice_chord
from train.synthesis.voice import SungNote, sing

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 8.0
FILES = ("mixture", "drums", "bass", "other", "vocals")

needs_tools = pytest.mark.skipif(shutil.which("espeak-ng") is None or
                                 not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file(),
                                 reason="needs espeak-ng and the FluidR3 GM soundfont")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Corpus A (seed 11, jobs 1), its re-run B (seed 11, jobs 2) and C (seed 12): 2 train + 1 test songs of 8 s."""
    base = tmp_path_factory.mktemp("synth")
    summary = generate_corpus(base / "a", 2, 1, SECONDS, seed=11, jobs=1, progress=False)
    generate_corpus(base / "b", 2, 1, SECONDS, seed=11, jobs=2, progress=False)
    generate_corpus(base / "c", 1, 0, SECONDS, seed=12, jobs=1, progress=False)
    return base, summary


def tracks(root: Path) -> list[Path]:
    return sorted(p for split in ("train", "test") for p in (root / split).iterdir() if p.is_dir())


@needs_tools
def test_layout_and_names(corpora):
    base, summary = corpora
    assert summary["made"] == 3 and summary["skipped"] == 0
    found = [f"{p.parent.name}/{p.name}" for p in tracks(base / "a")]
    assert sorted(found) == ["test/synth_test_0000", "train/synth_train_0000", "train/synth_train_0001"]
    for folder in tracks(base / "a"):
        assert sorted(p.name for p in folder.iterdir()) == sorted([f"{f}.wav" for f in FILES] + ["song.json"])
    assert track_name("test", 7) == "synth_test_0007"


@needs_tools
def test_format_and_exact_duration(corpora):
    base, _ = corpora
    for folder in tracks(base / "a"):
        for name in FILES:
            info = sf.info(folder / f"{name}.wav")
            assert info.samplerate == 44100 and info.channels == 2
            assert info.format == "WAV" and info.subtype == "PCM_16"
            assert info.frames == int(round(SECONDS * 44100))


@needs_tools
def test_mixture_is_sum_of_stems(corpora):
    base, _ = corpora
    for folder in tracks(base / "a"):
        audio = {n: sf.read(folder / f"{n}.wav", dtype="int16")[0].astype(np.int64) for n in FILES}
        error = np.abs(audio["mixture"] - sum(audio[n] for n in FILES[1:])).max()
        assert error <= 4
        assert np.abs(audio["mixture"]).max() < 32767  # never clips


@needs_tools
def test_same_seed_same_bytes_any_jobs(corpora):
    base, _ = corpora
    for folder in tracks(base / "a"):
        other = base / "b" / folder.parent.name / folder.name
        for name in [f"{f}.wav" for f in FILES] + ["song.json"]:
            assert (folder / name).read_bytes() == (other / name).read_bytes(), f"{folder.name}/{name} differs"


@needs_tools
def test_different_seed_different_song(corpora):
    base, _ = corpora
    a = base / "a" / "train" / "synth_train_0000"
    c = base / "c" / "train" / "synth_train_0000"
    meta_a, meta_c = (json.loads((p / "song.json").read_text()) for p in (a, c))
    assert (meta_a["genre"], meta_a["bpm"], meta_a["key"]) != (meta_c["genre"], meta_c["bpm"], meta_c["key"])
    xa = sf.read(a / "mixture.wav")[0][:, 0]
    xc = sf.read(c / "mixture.wav")[0][:, 0]
    assert abs(np.corrcoef(xa, xc)[0, 1]) < 0.3
    # songs within one corpus differ too
    xb = sf.read(base / "a" / "train" / "synth_train_0001" / "mixture.wav")[0][:, 0]
    assert abs(np.corrcoef(xa, xb)[0, 1]) < 0.3


@needs_tools
def test_every_stem_audible_with_realistic_silence(corpora):
    base, _ = corpora
    for folder in tracks(base / "a"):
        for name in FILES:
            x, rate = sf.read(folder / f"{name}.wav")
            s = stem_statistics(x, rate)
            assert s["active_rms_dbfs"] > -35, f"{folder.name}/{name} too quiet: {s}"
            limit = {"mixture": 0.0, "vocals": 0.7}.get(name, 0.6)
            assert s["silence_ratio"] <= limit, f"{folder.name}/{name} silent too often: {s}"
        meta = json.loads((folder / "song.json").read_text())
        assert meta["notes"]["vocals"] > 0 and meta["notes"]["drums"] > 0 and meta["notes"]["bass"] > 0


@needs_tools
def test_musdb_reads_the_corpus(corpora):
    musdb = pytest.importorskip("musdb")
    if shutil.which("ffprobe") is None:
        pytest.skip("musdb needs ffmpeg")
    base, _ = corpora
    db = musdb.DB(root=str(base / "a"), is_wav=True)
    assert sorted(t.name for t in db.tracks) == ["synth_test_0000", "synth_train_0000", "synth_train_0001"]
    track = [t for t in db.tracks if t.subset == "test"][0]
    assert track.rate == 44100
    mix = track.audio
    vocals = track.targets["vocals"].audio
    assert mix.shape == (int(SECONDS * 44100), 2) and vocals.shape == mix.shape
    stems = sum(track.sources[s].audio for s in ("drums", "bass", "other", "vocals"))
    assert np.abs(stems - mix).max() <= 4 / 32768 + 1e-9


@needs_tools
def test_resume_skips_complete_tracks(corpora):
    base, _ = corpora
    before = (base / "a" / "test" / "synth_test_0000" / "mixture.wav").stat().st_mtime_ns
    summary = generate_corpus(base / "a", 2, 1, SECONDS, seed=11, jobs=1, progress=False)
    assert summary["made"] == 0 and summary["skipped"] == 3
    assert (base / "a" / "test" / "synth_test_0000" / "mixture.wav").stat().st_mtime_ns == before


def test_plans_are_varied_and_cover_every_stem():
    """Arrangement only (no audio): coverage minimums hold, stems drop out in some sections, styles vary."""
    genres, tonics, modes, tempos, dropouts = set(), set(), set(), [], {"drums": 0, "bass": 0, "vocals": 0}
    for seed in range(60):
        seconds = (12.0, 30.0, 180.0)[seed % 3]
        plan = plan_song(np.random.default_rng(seed), seconds)
        for stem, minimum in MIN_ACTIVE_FRACTION.items():
            assert plan.active_fraction(stem) >= minimum, (seed, stem)
        assert plan.nb_bars * plan.grid.bar_seconds >= seconds - 1e-6
        assert 1 <= len(plan.others) <= 3
        genres.add(plan.genre.name)
        tonics.add(plan.tonic)
        modes.add(plan.mode)
        tempos.append(plan.grid.bpm)
        if seconds == 180.0:
            for stem in dropouts:
                dropouts[stem] += plan.active_fraction(stem) < 1.0
    assert len(genres) >= 7 and len(tonics) >= 10 and len(modes) == 4
    assert max(tempos) - min(tempos) > 50
    assert dropouts["vocals"] >= 15 and dropouts["drums"] >= 3 and dropouts["bass"] >= 3  # of 20 long songs
    assert {g.name for g in GENRES} >= genres


def test_theory_helpers():
    assert scale_pitch_classes(2, "major") == (2, 4, 6, 7, 9, 11, 1)
    g = diatonic_chord(0, "major", "4")
    assert (g.root, g.intervals, g.name) == (7, (0, 4, 7), "G")
    e = diatonic_chord(9, "minor", "4h", seventh=True)  # A harmonic minor: E7
    assert (e.root, e.intervals, e.name) == (4, (0, 4, 7, 10), "E7")
    assert diatonic_chord(0, "minor", "0").name == "Cm"
    first = voice_chord(diatonic_chord(0, "major", "0"), None, 55, 72, 3)
    second = voice_chord(diatonic_chord(0, "major", "3"), first, 55, 72, 3)
    assert sorted(p % 12 for p in second) == sorted([5, 9, 0])
    assert sum(abs(a - b) for a, b in zip(first, second)) <= 4  # smooth voice leading C -> F
    grid = Grid(bpm=120, beats_per_bar=4, swing=1 / 3, swing_unit=0.5)
    assert grid.seconds(0.5) == pytest.approx(0.5 * (1 + 1 / 3) * 0.5)
    assert grid.seconds(1.0) == pytest.approx(0.5) and grid.bar_seconds == pytest.approx(2.0)


@needs_tools
def test_fluidsynth_render_is_deterministic():
    part = Part("piano", program=0)
    for k, pitch in enumerate((60, 64, 67, 72)):
        part.add(0.1 * k, 0.3, pitch, 100)
    first = render_parts([part], 22050)
    noise = Part("organ", program=16)
    noise.add(0.0, 0.4, 50, 90)
    render_parts([noise], 12345)  # an unrelated render in between must not change the next one
    second = render_parts([part], 22050)
    assert first.shape == (2, 22050) and np.abs(first).max() > 0.01
    assert first.tobytes() == second.tobytes()


@needs_tools
def test_sung_pitch_follows_the_notes():
    """Praat-measured pitch of a sung line is within 50 cents of its notes (median over each note's middle)."""
    parselmouth = pytest.importorskip("parselmouth")
    notes, t, previous = [], 0.1, None
    for pitch, word in zip((57, 60, 64, 62, 57), ("la", "love", "you", "so", "high")):
        notes.append(SungNote(t, 0.5, pitch, word, 1.0, previous))
        previous, t = pitch, t + 0.5
    audio = sing(notes, "en-us+m3", int(3.0 * 44100), np.random.default_rng(0))
    pitch = parselmouth.Sound(audio, 44100).to_pitch(0.01, 60, 600)
    f0, times = pitch.selected_array["frequency"], pitch.xs()
    for note in notes:
        sel = (times > note.start + 0.2) & (times < note.start + 0.4) & (f0 > 0)
        assert sel.sum() >= 5, f"{note.word} unvoiced"
        cents = 1200 * np.log2(np.median(f0[sel]) / (440 * 2 ** ((note.pitch - 69) / 12)))
        assert abs(cents) < 50, (note, cents)


def test_cli_help_and_errors(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "train.synth", "--help"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and "--seconds" in ok.stdout and "--jobs" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "train.synth", "--out", str(tmp_path), "--train", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "at least one song" in bad.stderr
