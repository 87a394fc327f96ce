"""``xumx-slicq`` (also ``python -m xumx_slicq``): separate songs into stems from the command line.

A thin layer over :class:`xumx_slicq.engine.Engine`::

    xumx-slicq song.mp3 other.flac folder/ -o out/        # -> out/<song>/{bass,drums,other,vocals}.wav
    xumx-slicq song.wav -o out/ --two-stems vocals         # -> out/song/{vocals,no_vocals}.wav
    xumx-slicq folder/ -o out/ --stems vocals,drums --format flac --subtype PCM_24

Inputs are audio files (wav, flac, ogg, mp3, aiff...; m4a/mp4 through ffmpeg) and folders: every audio file
directly inside a folder is a song, and so is every ``<song>/mixture.*`` sub-folder (MUSDB18 layout; a folder
holding ``mixture.*`` itself is one song). Stems go to ``<out>/<song>/<stem>.<ext>`` at the input's sample rate
and exact length; ``<out>/summary.json`` records every song (time, paths taken, ``degraded``, errors).

Quality first by default: every chunk takes the best path (``--niter`` Wiener-EM iterations), however long it
takes. ``--budget-factor F`` (or ``--budget-seconds S``) instead gives each song a time limit and lets the
watchdog fall back to cheaper paths (the MDX-challenge behaviour); such songs are reported as degraded.

Exit codes: 0 every song separated, 1 some inputs failed (each is named with the reason; the others were
separated), 2 nothing could run (no model, output folder not writable, bad options).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from . import __version__, files
from .budget import CHUNK_SECONDS, CONTEXT_SECONDS, FADE_SECONDS

EXIT_OK, EXIT_FAILED, EXIT_FATAL = 0, 1, 2
SUMMARY = "summary.json"
#: names a song folder's mixture may have (MUSDB18 layout)
MIXTURE_STEM = "mixture"


@dataclass
class Song:
    """One input song: its output name, its file, or why it cannot be separated."""

    name: str
    path: Optional[pathlib.Path]
    problem: Optional[str] = None


def _audio_extensions() -> tuple:
    from .audio_io import AUDIO_EXTENSIONS, FFMPEG_EXTENSIONS

    return AUDIO_EXTENSIONS + FFMPEG_EXTENSIONS


def _mixture_in(folder: pathlib.Path) -> Optional[pathlib.Path]:
    """``folder/mixture.<audio extension>`` if there is one."""
    for ext in _audio_extensions():
        candidate = folder / f"{MIXTURE_STEM}{ext}"
        if candidate.is_file():
            return candidate
    return None


def find_songs(inputs: Sequence[os.PathLike]) -> List[Song]:
    """The songs of the command line's inputs, in order; names are unique (a clash gets the file's extension
    or a number appended)."""
    exts = _audio_extensions()
    found: List[Song] = []
    for raw in inputs:
        path = pathlib.Path(raw)
        if path.is_dir():
            own = _mixture_in(path)
            if own is not None:  # a MUSDB song folder itself
                found.append(Song(path.resolve().name, own))
                continue
            try:
                entries = sorted(path.iterdir(), key=lambda p: p.name)
            except OSError as exc:
                found.append(Song(path.name, None, f"{path}: folder cannot be read: {exc.strerror or exc}"))
                continue
            songs = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    mixture = _mixture_in(entry)
                    if mixture is not None:
                        songs.append(Song(entry.name, mixture))
                elif entry.suffix.lower() in exts:
                    songs.append(Song(entry.stem, entry))
            if not songs:
                found.append(Song(path.name, None, f"{path}: no audio files and no <song>/mixture.* folders in it"))
            found.extend(songs)
        elif path.exists():
            found.append(Song(path.stem, path))
        else:
            found.append(Song(path.stem or str(path), None, f"{path}: no such file or folder"))
    used: Dict[str, int] = {}
    for song in found:
        name = song.name
        if name in used and song.path is not None:
            name = f"{song.name}_{song.path.suffix.lstrip('.')}" if song.path.suffix else name
        while name in used:
            name = f"{song.name}-{used[song.name] + 1}"
            used[song.name] += 1
        used.setdefault(name, 1)
        song.name = name
    return found


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every option shows its default)."""
    p = argparse.ArgumentParser(prog="xumx-slicq", description=__doc__.replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER",
                   help="audio files, folders of audio files, or MUSDB-style folders of <song>/mixture.wav")
    p.add_argument("-o", "--output", type=pathlib.Path, required=True,
                   help="output folder: stems go to <output>/<song>/<stem>.<ext> (required)")
    p.add_argument("--model", type=pathlib.Path, default=None,
                   help="trained model folder (<name>.pth + <name>.json) (default: $XUMX_MODEL_DIR, else the "
                        "shipped model)")
    p.add_argument("--arch", default=None, choices=("xumx-slicq", "umx", "xumx"),
                   help="which model of the folder (default: xumx-slicq when present)")
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    g = p.add_argument_group("output")
    g.add_argument("--stems", default=None,
                   help="comma-separated stems to write, e.g. vocals,drums (default: all: bass,drums,other,vocals)")
    g.add_argument("--two-stems", default=None, metavar="STEM",
                   help="write STEM and no_STEM (the sum of the other stems), e.g. --two-stems vocals for a "
                        "karaoke track (default: off)")
    g.add_argument("--format", choices=("wav", "flac"), default="wav", help="file format of the stems (default wav)")
    g.add_argument("--subtype", choices=("PCM_16", "PCM_24", "FLOAT"), default="PCM_16",
                   help="sample format of the stems (default PCM_16; FLOAT is wav only, never clipped)")
    g = p.add_argument_group("quality and time")
    g.add_argument("--budget-factor", type=float, default=None,
                   help="give each song a time limit of F x its duration and let the watchdog take cheaper paths "
                        "to meet it (MDX challenge: 1.57) (default: no limit, quality first)")
    g.add_argument("--budget-seconds", type=float, default=None,
                   help="a fixed time limit per song in seconds instead (default: no limit)")
    g.add_argument("--niter", type=int, default=1, help="Wiener-EM iterations of the best path (default 1)")
    g.add_argument("--wiener", choices=("auto", "numba", "torch", "off"), default="auto",
                   help="Wiener-EM implementation (default auto: numba first, torch if it fails; with a budget the "
                        "cheaper measured one)")
    g.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "onnxruntime-int8"), default="auto",
                   help="network backend (default auto: the fastest on this machine of torch, the float32 ONNX file "
                        "and the gated int8 ONNX file when they exist next to the weights, measured on first use "
                        "and cached; onnxruntime-int8 needs the gated xumx_slicq_int8.onnx)")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    g.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS,
                   help="longest piece separated at once; memory grows with it, not with the song "
                        "(default %(default)g)")
    g.add_argument("--context-seconds", type=float, default=CONTEXT_SECONDS,
                   help="extra input on each side of a chunk, rounded to the slice hop (default %(default)g)")
    g.add_argument("--fade-seconds", type=float, default=FADE_SECONDS,
                   help="cross-fade at chunk boundaries, at most twice the context (default %(default)s; "
                        "None: the context)")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    g.add_argument("--quiet", action="store_true", help="only warnings, errors and the final table (default off)")
    return p


def _stem_names(args, parser: argparse.ArgumentParser) -> List[str]:
    from .engine import STEMS

    if args.stems and args.two_stems:
        parser.error("--stems and --two-stems exclude each other")
    if args.two_stems:
        if args.two_stems not in STEMS:
            parser.error(f"--two-stems {args.two_stems}: not a stem ({', '.join(STEMS)})")
        return [args.two_stems, f"no_{args.two_stems}"]
    if args.stems:
        names = [s.strip() for s in args.stems.split(",") if s.strip()]
        unknown = [s for s in names if s not in STEMS]
        if unknown or not names:
            parser.error(f"--stems {args.stems}: unknown stem(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(STEMS)}")
        return list(dict.fromkeys(names))
    return list(STEMS)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_summary(output: pathlib.Path, records: Sequence[Dict], meta: Dict) -> pathlib.Path:
    """``<output>/summary.json``: this run's records, replacing earlier records of the same songs."""
    path = output / SUMMARY
    try:
        earlier = json.loads(path.read_text()).get("songs", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    mine = {r["song"] for r in records}
    songs = [r for r in earlier if isinstance(r, dict) and r.get("song") not in mine] + list(records)
    counts: Dict[str, int] = {}
    for r in songs:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    degraded = sorted(r["song"] for r in songs if r.get("degraded"))
    return files.write_json(path, {**meta, "updated_at": _now(), "counts": counts, "degraded_songs": degraded,
                                   "songs": songs})


def format_table(records: Sequence[Dict]) -> str:
    """Song, status, duration, time, paths taken (``DEGRADED`` marked) or the error."""
    rows = [("song", "status", "duration", "time", "paths / error")]
    for r in records:
        def num(key):
            return f"{r[key]:.1f}s" if isinstance(r.get(key), (int, float)) else "-"

        detail = r.get("error") or (r.get("path", "") + ("  [DEGRADED]" if r.get("degraded") else ""))
        rows.append((r["song"], r["status"], num("duration_s"), num("time_s"), detail))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + str(row[4]) for row in rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``xumx-slicq``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stems = _stem_names(args, parser)
    if args.format == "flac" and args.subtype == "FLOAT":
        parser.error("--format flac takes --subtype PCM_16 or PCM_24 (FLAC holds no float samples)")
    if args.niter < 0:
        parser.error("--niter must be >= 0")
    for name in ("budget_factor", "budget_seconds", "chunk_seconds"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    budgeted = args.budget_factor is not None or args.budget_seconds is not None

    def log(msg: str, always: bool = False) -> None:
        if always or not args.quiet or msg.startswith(("warning", "error")):
            print(msg, file=sys.stderr, flush=True)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available here (use --device cpu)", file=sys.stderr)
        return EXIT_FATAL

    from .audio_io import InputError, OutputError, probe_any
    from .budget import song_budget
    from .checkpoint import default_model_dir
    from .engine import Engine

    output = args.output
    try:
        files.temp_path(output / ".xumx-write-test").unlink()
    except OSError as exc:
        print(f"error: output folder {output} is not writable: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FATAL
    songs = find_songs(args.inputs)
    model_dir = args.model or default_model_dir()
    log(f"xumx-slicq {__version__}: {len(songs)} song(s) -> {output}; stems {', '.join(stems)} as "
        f"{args.format} {args.subtype}; " + (f"time limit per song: "
        f"{args.budget_seconds:g} s" if args.budget_seconds else f"time limit per song: {args.budget_factor:g} x "
        f"its duration" if budgeted else "quality first (no time limit)"))
    try:
        engine = Engine(model_dir, args.arch, backend=args.backend, niter=args.niter, wiener=args.wiener,
                        device=args.device, chunk_seconds=args.chunk_seconds, subtype=args.subtype,
                        context_seconds=args.context_seconds, fade_seconds=args.fade_seconds,
                        calibrate=budgeted and any(s.problem is None for s in songs), log=log,
                        output_format=args.format.upper())
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: cannot load the model from {model_dir}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    meta = {"command": "xumx-slicq", "version": __version__, "model": str(model_dir), "output": str(output),
            "stems": stems, "format": args.format, "subtype": args.subtype,
            "budget": (f"{args.budget_seconds:g} s" if args.budget_seconds else
                       f"{args.budget_factor:g} x duration" if budgeted else "none (quality first)")}
    records: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="xumx-slicq-") as scratch:
        for k, song in enumerate(songs, 1):
            start = time.monotonic()
            rec: Dict = {"song": song.name, "input": str(song.path) if song.path else None,
                         "output": str(output / song.name)}
            try:
                if song.problem:
                    raise InputError(song.problem)
                info = probe_any(song.path, scratch)
                budget = (song_budget(info.duration, args.budget_factor or 1.0, args.budget_seconds)
                          if budgeted else math.inf)
                log(f"[{k}/{len(songs)}] {song.path} ({info.duration:.1f} s, {info.rate} Hz, {info.channels} ch)"
                    + (f", limit {budget:.1f} s" if budgeted else ""))
                finals = {s: output / song.name / f"{s}.{args.format}" for s in stems}
                result = engine.separate(info.path, finals, budget, start=start, info=info)
                rec.update(result.record(), status="done", error=None, stems={s: str(p) for s, p in finals.items()})
                log(f"[{k}/{len(songs)}] {song.name}: done in {result.time:.1f} s, paths: {result.path}"
                    + (" (DEGRADED)" if result.degraded else "") + f" -> {output / song.name}")
            except (InputError, OutputError, ValueError) as exc:
                rec.update(status="failed", error=str(exc), time_s=round(time.monotonic() - start, 3))
                log(f"error: [{k}/{len(songs)}] {exc}")
            except Exception as exc:  # noqa: BLE001 - one song's failure never stops the others
                rec.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                           time_s=round(time.monotonic() - start, 3))
                log(f"error: [{k}/{len(songs)}] {song.path or song.name}: unexpected {type(exc).__name__}: {exc}")
            rec["finished_at"] = _now()
            records.append(rec)
            try:
                write_summary(output, records, meta)
            except OSError as exc:
                log(f"warning: cannot write {output / SUMMARY}: {exc.strerror or exc}")
    print(format_table(records))
    degraded = [r for r in records if r.get("degraded")]
    if degraded:
        print(f"warning: {len(degraded)} song(s) DEGRADED (some chunks below the best path; see "
              f"{output / SUMMARY}): " + ", ".join(r["song"] for r in degraded), file=sys.stderr)
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        print(f"error: {len(failed)} of {len(records)} input(s) failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r['error']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
