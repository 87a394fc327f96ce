"""``python -m submission``: separate a folder of songs within the MDX-2021 time limits, resumably.

Every ``<input>/<song>/mixture.wav`` (or audio file directly in ``<input>``) becomes
``<output>/<song>/{bass,drums,other,vocals}.wav`` (stereo, the mixture's rate and exact length). Each song gets a
time budget (default 1.57 x its duration, the challenge's round-2 limit); a watchdog picks the best separation
path that fits before every chunk and falls back to cheaper ones (fewer Wiener-EM iterations, no Wiener-EM,
mixture / 4) so four valid stems always exist inside the limit. Finished songs are skipped on a rerun; a
failed song never stops the batch (exit code 1 at the end); ``<output>/summary.json`` lists every song.

Exit codes: 0 all songs done, 1 some songs failed, 2 the batch could not run (input, output, model, or another
runner already writing the same songs into the output folder), 143 / 130 interrupted by SIGTERM / SIGINT (the
song in progress is left without temporaries; rerun the same command to finish).
Examples::

    python -m submission --input data/test --output data/results
    python -m submission --input songs --output out --budget-seconds 240 --wiener numba --niter 2
    python -m submission --input songs --output out --shard 1/4 --jobs 2     # one of 4 machines, 2 workers
    python -m submission --merge --output out --merge-from out-shard0 out-shard1   # separate output folders
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from xumx_slicq.budget import CHUNK_SECONDS, CONTEXT_SECONDS, FADE_SECONDS


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m submission", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=pathlib.Path, default=None,
                   help="folder of song folders (<song>/mixture.wav) or of audio files (default: "
                        "$TEST_DATASET_PATH or ./data/test)")
    p.add_argument("--output", type=pathlib.Path, default=None,
                   help="results folder (default: $RESULTS_DATASET_PATH or ./data/results)")
    p.add_argument("--model", type=pathlib.Path, default=None,
                   help="saved model folder (default: the shipped pretrained-model/)")
    p.add_argument("--arch", default=None, help="architecture to load from the model folder (default: any)")
    g = p.add_argument_group("time budget")
    g.add_argument("--budget-factor", type=float, default=1.57,
                   help="per-song limit as a multiple of the song's duration (default 1.57)")
    g.add_argument("--budget-seconds", type=float, default=None,
                   help="a fixed per-song limit in seconds instead (e.g. 240, the round-1 limit)")
    g.add_argument("--no-budget", action="store_true",
                   help="quality first: no time limit, every chunk on the best path, no calibration (default off)")
    g.add_argument("--budget-floor", type=float, default=5.0,
                   help="smallest per-song limit with --budget-factor, for very short songs (default 5 s)")
    g.add_argument("--safety", type=float, default=0.15,
                   help="fraction of every budget the watchdog keeps in reserve (default 0.15)")
    g.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="time the paths on 8 s of noise before the first song (default on; off: the first "
                        "song's first chunk calibrates)")
    g = p.add_argument_group("separation")
    g.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="network backend passed to load_separator (torch when unsupported; default auto)")
    g.add_argument("--wiener", choices=("auto", "numba", "torch", "off"), default="auto",
                   help="Wiener-EM implementation; auto (the default) measures numba and torch and uses the cheaper")
    g.add_argument("--niter", type=int, default=1, help="most Wiener-EM iterations (default 1)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS,
                   help="longest chunk; shorter ones when a chunk would take > 1/3 of a budget (default %(default)g)")
    g.add_argument("--context-seconds", type=float, default=CONTEXT_SECONDS,
                   help="extra input on each side of a chunk, rounded to the slice hop (default %(default)g)")
    g.add_argument("--fade-seconds", type=float, default=FADE_SECONDS,
                   help="cross-fade at chunk boundaries, at most twice the context (default %(default)s; None: the "
                        "context)")
    g.add_argument("--subtype", choices=("FLOAT", "PCM_16", "PCM_24"), default="FLOAT",
                   help="sample format of the stems (default FLOAT: no clipping, no quantisation)")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    g = p.add_argument_group("batch")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip songs whose four stems are complete (default on)")
    g.add_argument("--shard", default="0/1",
                   help="I/N: process only shard I of N (sha1 of the song name mod N; default 0/1)")
    g.add_argument("--jobs", type=int, default=1,
                   help="worker processes on this machine, each with cpu_count/J threads (default 1)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars over songs and over the chunks of long songs (default on)")
    g.add_argument("--merge", action="store_true",
                   help="only merge summaries (of --output and --merge-from folders) into <output>/summary.json")
    g.add_argument("--merge-from", type=pathlib.Path, nargs="*", default=[],
                   help="other output folders whose summaries --merge includes (one folder per shard)")
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    import contextlib

    from .runner import (EXIT_FATAL, EXIT_OK, EXIT_SONG_FAILED, FatalError, Interrupted, check_output_writable,
                         discover, format_table, interruptible, merge_summaries, output_lock, parse_shard,
                         read_records, run_jobs, run_share, select_shard)

    parser = build_parser()
    args = parser.parse_args(argv)
    args.input = args.input or pathlib.Path(os.environ.get("TEST_DATASET_PATH", "./data/test"))
    args.output = args.output or pathlib.Path(os.environ.get("RESULTS_DATASET_PATH", "./data/results"))
    try:
        args.shard_index, args.shard_count = parse_shard(args.shard)
    except ValueError as exc:
        parser.error(str(exc))
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.niter < 0:
        parser.error("--niter must be >= 0")
    if args.budget_seconds is not None and args.budget_seconds <= 0:
        parser.error("--budget-seconds must be > 0")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        if args.progress:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    try:
        with interruptible():
            if args.merge:
                summary = merge_summaries(args.output, args.merge_from)
                print(format_table(summary["songs"]))
                return EXIT_OK if not summary["counts"].get("failed") else EXIT_SONG_FAILED
            songs = discover(args.input)
            if not songs:
                raise FatalError(f"input folder {args.input} holds no songs (no <song>/mixture.wav, no audio "
                                 f"files)")
            check_output_writable(args.output)
            share = select_shard(songs, args.shard_index, args.shard_count)
            names = [s.name for s in songs]
            # the --jobs workers take the locks of their own shards
            lock = (output_lock(args.output, args.shard_index, args.shard_count) if args.jobs == 1
                    else contextlib.nullcontext())
            with lock:
                log(f"{len(songs)} song(s) in {args.input}; shard {args.shard}: {len(share)}")
                if args.jobs > 1:
                    code = run_jobs(args, share, names, log)
                else:
                    code = run_share(args, share, names, log)
    except FatalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except Interrupted as exc:
        where = f" while separating song {exc.song}" if exc.song else ""
        print(f"error: {exc}{where}; no temporary file left, finished songs kept; rerun the same command to "
              f"finish", file=sys.stderr)
        return exc.exit_code
    records = read_records([args.output])
    print(format_table([records.get(s.name, {"song": s.name, "status": "pending"}) for s in share]))
    degraded = [s.name for s in share if records.get(s.name, {}).get("degraded")]
    if degraded:
        print(f"warning: {len(degraded)} song(s) DEGRADED (some chunks below the best path, see "
              f"{args.output / 'summary.json'}): {', '.join(degraded)}", file=sys.stderr)
    failed = [s.name for s in share if records.get(s.name, {}).get("status") == "failed"]
    if failed:
        print(f"error: {len(failed)} song(s) failed: {', '.join(failed)} (see {args.output / 'summary.json'})",
              file=sys.stderr)
        return max(code, EXIT_SONG_FAILED)
    return code


def exit_now(code: int) -> None:
    """Exit with ``code``. A separating thread still inside the network (a chunk abandoned at a deadline or by an
    interruption) would abort the interpreter's shutdown ("terminate called without an active exception", exit
    -6), so while one is alive the process ends at once, after flushing; every file is closed or removed by then."""
    import threading

    if any(t.name == "xumx-separate" and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_now(main())
