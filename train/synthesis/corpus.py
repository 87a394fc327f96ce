"""Corpus generation: many songs in parallel, written atomically in MUSDB18-HQ layout.

    out/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav   44.1 kHz, stereo, 16-bit PCM
    out/{train,test}/<track>/song.json                               the song's plan and mix settings
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from xumx_slicq import files

from train.synthesis.song import GENERATOR_VERSION, STEMS, render_song

#: corpus style -> generator version written in song.json (v1 stays the default and byte-for-byte reproducible)
STYLE_VERSIONS = {"v1": GENERATOR_VERSION, "v2": 2}

SAMPLE_RATE = 44100
FILES = ("mixture",) + STEMS


def track_name(split: str, index: int) -> str:
    """Stable, readable folder name of a track, e.g. 'synth_test_0002'."""
    return f"synth_{split}_{index:04d}"


@dataclass(frozen=True)
class Task:
    """One track to make."""

    out: str
    split: str
    index: int
    seconds: float
    seed: int
    style: str = "v1"


def _is_complete(folder: Path, task: Task) -> bool:
    """True when `folder` already holds this exact track (same seed/duration/version) with all its files."""
    meta_path = folder / "song.json"
    if not meta_path.is_file() or not all((folder / f"{n}.wav").is_file() for n in FILES):
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (meta.get("seed"), meta.get("split"), meta.get("index"), meta.get("seconds"),
            meta.get("generator_version")) == (task.seed, task.split, task.index, task.seconds,
                                               STYLE_VERSIONS[task.style])


def make_track(task: Task, resume: bool = True) -> tuple[str, float, bool]:
    """Render and write one track; returns (relative folder, CPU seconds of this process spent on it, skipped?)."""
    folder = Path(task.out) / task.split / track_name(task.split, task.index)
    rel = f"{task.split}/{folder.name}"
    if resume and _is_complete(folder, task):
        return rel, 0.0, True
    start = time.process_time()
    if task.style == "v2":
        from train.synthesis.song_v2 import render_song_v2  # pedalboard/pyloudnorm only when v2 is asked for
        audio, meta = render_song_v2(task.seed, task.split, task.index, task.seconds)
    else:
        audio, meta = render_song(task.seed, task.split, task.index, task.seconds)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "song.json").unlink(missing_ok=True)  # written last: marks the folder complete
    for name in FILES:  # int16 (nb_samples, 2) as 16-bit PCM
        with files.atomic_path(folder / f"{name}.wav") as tmp:
            sf.write(str(tmp), audio[name], SAMPLE_RATE, subtype="PCM_16", format="WAV")
    files.write_text(folder / "song.json", json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return rel, time.process_time() - start, False


def _worker(args: tuple[Task, bool]) -> tuple[str, float, bool]:
    """Pool entry point (module level so it pickles)."""
    return make_track(*args)


def tune_malloc() -> None:
    """Keep freed memory in the heap instead of returning every large numpy buffer to the OS (glibc only).

    A song allocates many multi-megabyte temporaries; with glibc's defaults each one is a fresh mmap and page
    faults add system time. No effect on results.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve large blocks from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass


def generate_corpus(out: str | Path, nb_train: int, nb_test: int, seconds: float, seed: int, jobs: int = 1,
                    resume: bool = True, progress: bool = True, style: str = "v1") -> dict:
    """Generate a corpus of `nb_train` + `nb_test` songs of `seconds` seconds each under `out`.

    Args:
        out: output root (created).
        nb_train, nb_test: number of tracks per split.
        seconds: duration of every track (exact to the sample).
        seed: corpus seed; the same seed gives byte-identical files whatever `jobs` is.
        jobs: worker processes (tracks are rendered in parallel, one per process).
        resume: skip tracks already complete in `out` with the same parameters.
        progress: show a tqdm progress bar.
        style: "v1" (default, the original corpus) or "v2" (recorded kits, MuseScore General, effects, festival
            voice; see song_v2.py).
    Returns:
        Summary dict: tracks made/skipped, wall-clock seconds, audio seconds, speed (x real time), and the CPU
        seconds the workers spent rendering (speed per CPU second, independent of other load on the machine).
    """
    if nb_train < 0 or nb_test < 0 or nb_train + nb_test == 0:
        raise ValueError(f"need a positive number of tracks, got train={nb_train}, test={nb_test}")
    if seconds <= 0:
        raise ValueError(f"--seconds must be positive, got {seconds}")
    if style not in STYLE_VERSIONS:
        raise ValueError(f"unknown corpus style {style!r}; expected one of {', '.join(STYLE_VERSIONS)}")
    if style == "v2":  # fail before any work when a v2 resource is missing
        from train.synthesis.resources import require
        from train.synthesis.song_v2 import NEEDED
        require(NEEDED)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [Task(str(out), "train", i, float(seconds), seed, style) for i in range(nb_train)]
    tasks += [Task(str(out), "test", i, float(seconds), seed, style) for i in range(nb_test)]
    jobs = max(1, min(jobs, len(tasks)))
    start = time.perf_counter()
    made = skipped = 0
    cpu = 0.0
    bar = tqdm(total=len(tasks), unit="track", desc="synth", disable=not progress)
    if jobs == 1:
        tune_malloc()
        results = (make_track(t, resume) for t in tasks)
        pool = None
    else:
        # spawn, not fork: a parent that already used FluidSynth/Praat (threads, locks) can deadlock forked children
        pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=tune_malloc)
        results = pool.imap_unordered(_worker, [(t, resume) for t in tasks])
    try:
        for rel, spent, was_skipped in results:
            cpu += spent
            skipped += was_skipped
            made += not was_skipped
            bar.set_postfix_str(rel)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    wall = time.perf_counter() - start
    audio = made * seconds
    return {"made": made, "skipped": skipped, "wall_seconds": round(wall, 2), "audio_seconds": audio,
            "x_real_time": round(audio / wall, 2) if made else None, "jobs": jobs,
            "cpu_seconds": round(cpu, 2), "x_real_time_per_cpu_second": round(audio / cpu, 2) if cpu else None}
