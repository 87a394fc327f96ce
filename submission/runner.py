"""The batch runner behind ``python -m submission``: find songs, shard them, skip finished ones, separate the
rest within their budgets, and keep ``summary.json`` up to date.

Songs: every sub-folder of the input holding ``mixture.wav`` (MUSDB / MDX layout; ``mixture.flac`` or
``mixture.ogg`` are accepted too), and every audio file lying directly in the input folder (one song each, named
after the file). A sub-folder without a mixture is reported as a failed song.

Sharding: a song belongs to shard ``sha1(name) mod N``, so the split is deterministic, disjoint, covers every
song, and does not move songs between shards when others are added. ``--jobs J`` runs J worker processes, each
the shard ``I + N j`` of ``N J`` (which is exactly shard I of N split J ways).

Summaries: an unsharded run writes ``<output>/summary.json``; a shard writes ``summary.shard-K-of-M.json`` after
every song, then merges every shard file in the output folder into ``summary.json`` under a file lock (the last
shard to finish therefore writes the complete one). ``--merge`` does the merge alone, also across output folders.

One runner per output folder and shard: :func:`output_lock` holds ``<output>/.xumx-lock`` (exclusive for an
unsharded run, shared for a shard, which also holds ``.xumx-lock.shard-I-of-N`` exclusively), so a second run of
the same songs into the same folder refuses at once, naming the folder, instead of racing the first on the same
stems and summary. The lock files stay (empty); the kernel releases the locks when a runner ends, however it ends.

Interruption: :func:`interruptible` turns SIGTERM (and SIGINT) into :class:`Interrupted`, raised in the main
thread, so the normal clean-up runs (the song's temporary stems are removed, its record says ``interrupted``);
the exit code is 128 + the signal's number and a rerun finishes the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from xumx_slicq import files

from xumx_slicq.audio_io import AUDIO_EXTENSIONS, InputError, OutputError, probe, remove_stale_temps, stems_complete
from xumx_slicq.budget import song_budget

MIXTURE_NAMES = ("mixture.wav", "mixture.flac", "mixture.ogg")
SUMMARY = "summary.json"
EXIT_OK, EXIT_SONG_FAILED, EXIT_FATAL = 0, 1, 2
#: the output folder's lock file (see :func:`output_lock`)
LOCK_NAME = ".xumx-lock"


class FatalError(RuntimeError):
    """A problem that stops the whole batch (unreadable input folder, unwritable output, no model)."""


class Interrupted(BaseException):
    """SIGTERM / SIGINT received (a BaseException, so no ``except Exception`` swallows it); ``song`` is the song
    being separated when it arrived, if any."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.song: Optional[str] = None

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a killed command."""
        return 128 + self.signum


@contextlib.contextmanager
def interruptible(signums: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Raise :class:`Interrupted` in the main thread on the first of ``signums``; later ones are ignored while
    the clean-up runs. The previous handlers are restored on exit. Does nothing outside the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"fired": False}

    def handler(signum, frame):
        if state["fired"]:
            return
        state["fired"] = True
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def output_lock(output: os.PathLike, index: int = 0, nb_shards: int = 1) -> Iterator[None]:
    """Hold the output folder's lock for shard ``index`` of ``nb_shards``; :class:`FatalError` at once when
    another runner holds a conflicting one (same folder, unsharded or the same shard)."""
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    what = "all songs" if nb_shards == 1 else f"shard {index}/{nb_shards}"
    wanted = [(output / LOCK_NAME, fcntl.LOCK_EX if nb_shards == 1 else fcntl.LOCK_SH)]
    if nb_shards > 1:
        wanted.append((output / f"{LOCK_NAME}.shard-{index}-of-{nb_shards}", fcntl.LOCK_EX))
    with contextlib.ExitStack() as stack:
        for path, mode in wanted:
            handle = stack.enter_context(open(path, "a"))
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FatalError(f"output folder {output} is in use by another runner ({path.name} is locked); "
                                 f"not starting a second run of {what} into it: wait for the other one to end "
                                 f"or choose another --output") from None
        yield


@dataclasses.dataclass
class Song:
    """One song of the input: its name (output folder), mixture file, or why it has none."""

    name: str
    mixture: Optional[pathlib.Path]
    problem: Optional[str] = None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def discover(input_dir: os.PathLike) -> List[Song]:
    """Songs under ``input_dir``, sorted by name. Raises :class:`FatalError` if the folder cannot be listed."""
    input_dir = pathlib.Path(input_dir)
    if not input_dir.exists():
        raise FatalError(f"input folder {input_dir} does not exist")
    if not input_dir.is_dir():
        raise FatalError(f"input {input_dir} is not a folder")
    try:
        entries = sorted(os.scandir(input_dir), key=lambda e: e.name)
    except OSError as exc:
        raise FatalError(f"input folder {input_dir} cannot be read: {exc.strerror or exc}") from exc
    songs: Dict[str, Song] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = pathlib.Path(entry.path)
        if entry.is_dir():
            try:
                names = set(os.listdir(path))
            except OSError as exc:
                songs[entry.name] = Song(entry.name, None, f"{path}: song folder cannot be read: "
                                                           f"{exc.strerror or exc}")
                continue
            mixture = next((path / n for n in MIXTURE_NAMES if n in names), None)
            songs[entry.name] = Song(entry.name, mixture,
                                     None if mixture else f"{path}: no mixture.wav in the song folder")
        elif path.suffix.lower() in AUDIO_EXTENSIONS:
            name = path.stem if path.stem not in songs else path.name
            songs[name] = Song(name, path)
    return sorted(songs.values(), key=lambda s: s.name)


def parse_shard(text: str) -> Tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/3), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return i, n


def shard_of(name: str, nb_shards: int) -> int:
    """The shard of a song: ``sha1(name) mod nb_shards`` (stable across runs and machines)."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:15], 16) % nb_shards


def select_shard(songs: Sequence[Song], index: int, nb_shards: int) -> List[Song]:
    """The songs of shard ``index`` of ``nb_shards``."""
    return [s for s in songs if shard_of(s.name, nb_shards) == index]


def summary_name(index: int, nb_shards: int) -> str:
    """File name of a run's own summary: ``summary.json`` or ``summary.shard-I-of-N.json``."""
    return SUMMARY if nb_shards == 1 else f"summary.shard-{index}-of-{nb_shards}.json"


def read_records(folders: Sequence[os.PathLike]) -> Dict[str, Dict]:
    """Latest record of every song found in the summaries (``summary*.json``) of ``folders``."""
    latest: Dict[str, Dict] = {}
    for folder in folders:
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("summary*.json")):
            try:
                songs = json.loads(path.read_text()).get("songs", [])
            except (OSError, ValueError, AttributeError):
                continue
            for rec in songs:
                if not isinstance(rec, dict) or "song" not in rec or rec.get("status") == "pending":
                    continue
                old = latest.get(rec["song"])
                if old is None or str(rec.get("finished_at", "")) >= str(old.get("finished_at", "")):
                    latest[rec["song"]] = rec
    return latest


def build_summary(records: Dict[str, Dict], all_songs: Sequence[str], meta: Dict) -> Dict:
    """The summary document: every song (``pending`` when no record yet) plus counts."""
    songs = [records.get(name, {"song": name, "status": "pending"}) for name in sorted(set(all_songs) | set(records))]
    counts: Dict[str, int] = {}
    for r in songs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {**meta, "updated_at": _now(), "counts": counts, "songs": songs}


def merge_summaries(output: os.PathLike, folders: Sequence[os.PathLike], all_songs: Sequence[str] = (),
                    meta: Optional[Dict] = None) -> Dict:
    """Merge the summaries of ``folders`` (and ``output``) into ``<output>/summary.json``, under a file lock."""
    import fcntl

    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".summary.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            sources = [output] + [pathlib.Path(f) for f in folders if pathlib.Path(f) != output]
            records = read_records(sources)
            previous = {}
            try:
                previous = json.loads((output / SUMMARY).read_text())
            except (OSError, ValueError):
                pass
            names = set(all_songs) | {r.get("song") for r in previous.get("songs", []) if isinstance(r, dict)}
            summary = build_summary(records, sorted(n for n in names if n), {**(meta or {}), "merged_from": [
                str(s) for s in sources]})
            files.write_json(output / SUMMARY, summary)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return summary


def format_table(records: Sequence[Dict]) -> str:
    """A plain-text table: song, status, duration, budget, time, path (and the error of failed songs)."""
    rows = [("song", "status", "duration", "budget", "time", "path / error")]
    for r in records:
        def num(key):
            return f"{r[key]:.1f}s" if isinstance(r.get(key), (int, float)) else "-"

        detail = r.get("error") or (r.get("path") or "") + ("  [DEGRADED]" if r.get("degraded") else "")
        rows.append((r["song"], r["status"], num("duration_s"), num("budget_s"), num("time_s"), detail))
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row[:5], widths)) + "  " + str(row[5]) for row in rows)


def check_output_writable(output: pathlib.Path) -> None:
    """Create ``output`` and prove a file can be written there; :class:`FatalError` naming the problem if not."""
    try:
        tmp = files.temp_path(output / ".xumx-write-test")
        try:
            tmp.write_bytes(b"0" * 4096)
        finally:
            tmp.unlink()
    except OSError as exc:
        raise FatalError(f"output folder {output} is not writable: {exc.strerror or exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# One process: a share of the songs
# ----------------------------------------------------------------------------------------------------------------


def run_share(args, songs: List[Song], all_names: List[str], log) -> int:
    """Separate ``songs`` (this process's share) into ``args.output``; returns the exit code."""
    from xumx_slicq.engine import STEMS, Engine

    output = pathlib.Path(args.output)
    index, nb = args.shard_index, args.shard_count
    own_summary = output / summary_name(index, nb)
    meta = {"input": str(args.input), "output": str(output), "shard": f"{index}/{nb}",
            "model": str(args.model) if args.model else "pretrained-model", "budget_factor": args.budget_factor,
            "no_budget": bool(getattr(args, "no_budget", False)),
            "budget_seconds": args.budget_seconds}
    previous = read_records([output])
    records: Dict[str, Dict] = {}

    def save() -> None:
        names = all_names if nb == 1 else [s.name for s in songs]
        files.write_json(own_summary, build_summary(records, names, meta))

    # resume: songs whose four stems are complete are skipped before the model is even loaded
    todo: List[Tuple[Song, object]] = []
    for song in songs:
        finals = {s: output / song.name / f"{s}.wav" for s in STEMS}
        if song.problem is None and args.resume:
            try:
                info = probe(song.mixture)
            except InputError as exc:
                todo.append((song, exc))
                continue
            if stems_complete(finals, info.frames, info.rate):
                rec = dict(previous.get(song.name, {}))
                rec.update(song=song.name, status="skipped", finished_at=_now(), error=None,
                           note="complete from an earlier run")
                records[song.name] = rec
                continue
            todo.append((song, info))
        else:
            todo.append((song, None))
    if records:
        log(f"resume: {len(records)} song(s) already complete, {len(todo)} to do")
    save()
    engine = None
    if any(song.problem is None and not isinstance(x, InputError) for song, x in todo):
        try:
            engine = Engine(args.model, args.arch, backend=args.backend, niter=args.niter, wiener=args.wiener,
                            device=args.device, chunk_seconds=args.chunk_seconds,
                            context_seconds=args.context_seconds, fade_seconds=args.fade_seconds,
                            safety=args.safety, subtype=args.subtype,
                            calibrate=args.calibrate and not getattr(args, "no_budget", False),
                            progress=args.progress, log=log)
        except (FileNotFoundError, ValueError) as exc:
            raise FatalError(f"cannot load the model: {exc}") from exc
    bar = None
    if args.progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="songs", unit="song")
    failed = 0
    for song, info in todo:
        start = time.monotonic()
        rec = {"song": song.name, "input": str(song.mixture) if song.mixture else None, "output":
               str(output / song.name), "shard": f"{index}/{nb}"}
        try:
            if song.problem:
                raise InputError(song.problem)
            if isinstance(info, InputError):
                raise info
            if info is None:
                info = probe(song.mixture)
            budget = (math.inf if getattr(args, "no_budget", False) else
                      song_budget(info.duration, args.budget_factor, args.budget_seconds, args.budget_floor))
            rec.update(duration_s=round(info.duration, 3), budget_s=round(budget, 3) if budget < math.inf else None)
            remove_stale_temps(output / song.name)
            finals = {s: output / song.name / f"{s}.wav" for s in STEMS}
            result = engine.separate(song.mixture, finals, budget, start=start, info=info)
            rec.update(result.record(), status="done", error=None)
            log(f"{song.name}: done in {result.time:.1f} s of {budget:.1f} s ({result.path})"
                + (" DEGRADED" if result.degraded else ""))
        except Interrupted as exc:
            exc.song = song.name
            # the engine removes its temporaries on the way out, except when the signal lands between their creation
            # and its clean-up block (seen in the battery): sweep the song's folder too
            with contextlib.suppress(OSError):
                remove_stale_temps(output / song.name)
            rec.update(status="interrupted", error=f"{exc} while separating {song.name}; temporary files removed, "
                       f"rerun to finish", time_s=round(time.monotonic() - start, 3), finished_at=_now())
            records[song.name] = rec
            save()
            raise
        except (InputError, OutputError) as exc:
            failed += 1
            rec.update(status="failed", error=str(exc), time_s=round(time.monotonic() - start, 3))
            log(f"error: song {song.name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one song's failure never stops the batch
            failed += 1
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                       time_s=round(time.monotonic() - start, 3))
            log(f"error: song {song.name}: unexpected {type(exc).__name__}: {exc}")
        rec["finished_at"] = _now()
        records[song.name] = rec
        save()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if nb > 1:
        merge_summaries(output, [], all_names, {k: v for k, v in meta.items() if k != "shard"})
    return EXIT_SONG_FAILED if failed else EXIT_OK


# ----------------------------------------------------------------------------------------------------------------
# Several worker processes on one machine
# ----------------------------------------------------------------------------------------------------------------


def child_argv(args, shard: str, threads: int) -> List[str]:
    """Command line of one ``--jobs`` worker: this run's options, its composite shard, one job, no bar."""
    argv = [sys.executable, "-m", "submission", "--input", str(args.input), "--output", str(args.output),
            "--budget-factor", str(args.budget_factor), "--budget-floor", str(args.budget_floor),
            "--safety", str(args.safety), "--backend", args.backend, "--wiener", args.wiener,
            "--niter", str(args.niter), "--device", args.device, "--chunk-seconds", str(args.chunk_seconds),
            "--context-seconds", str(args.context_seconds), "--subtype", args.subtype, "--shard", shard,
            *(["--fade-seconds", str(args.fade_seconds)] if args.fade_seconds is not None else []),
            "--jobs", "1", "--threads", str(threads), "--no-progress",
            "--resume" if args.resume else "--no-resume", "--calibrate" if args.calibrate else "--no-calibrate"]
    if args.budget_seconds is not None:
        argv += ["--budget-seconds", str(args.budget_seconds)]
    if getattr(args, "no_budget", False):
        argv += ["--no-budget"]
    if args.model:
        argv += ["--model", str(args.model)]
    if args.arch:
        argv += ["--arch", args.arch]
    return argv


def run_jobs(args, share: List[Song], all_names: List[str], log) -> int:
    """Run ``args.jobs`` worker processes over this shard and merge their summaries."""
    jobs, index, nb = args.jobs, args.shard_index, args.shard_count
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = []
    for j in range(jobs):
        shard = f"{index + nb * j}/{nb * jobs}"  # shard I of N split J ways
        log(f"job {j}: shard {shard}, {threads} thread(s)")
        procs.append(subprocess.Popen(child_argv(args, shard, threads), env=env, cwd=root))
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(share), desc="songs", unit="song")
    names = {s.name for s in share}
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            if bar is not None:
                recs = read_records([args.output])
                bar.n = sum(1 for n in names if n in recs)
                bar.refresh()
    except (KeyboardInterrupt, Interrupted):
        for p in procs:
            p.terminate()  # SIGTERM: every worker removes its temporaries and records its song as interrupted
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        if bar is not None:
            bar.close()
    merge_summaries(args.output, [], all_names, {"input": str(args.input), "output": str(args.output)})
    codes = [p.returncode for p in procs]
    if any(c == EXIT_FATAL for c in codes):
        return EXIT_FATAL
    return EXIT_SONG_FAILED if any(codes) else EXIT_OK
