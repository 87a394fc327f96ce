"""Separation speed and peak memory of the xumx-sliCQ separator, file to file (streaming).

Each measurement runs in its own subprocess, so peak RSS (``ru_maxrss``) is that run's alone. The input is a
song of the requested length: the demo signal (:func:`xumx_slicq.audio.demo_signal`: the demo songs
``data/test/*/mixture.wav`` concatenated, or, when they are missing, a reproducible noisy chord), repeated.

    python -m benchmark.separator_speed --minutes 3 --wiener off torch numba --memory-minutes 3 10 20

Writes ``<output>/separator_speed.json`` and ``.csv``. The model is the shipped one when ``--model`` points to
it, or the default architecture with random weights (``--model random``: same cost, meaningless stems).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from xumx_slicq.audio import demo_signal

from xumx_slicq import files

SR = 44100


def make_song(path: str, minutes: float) -> None:
    """Write a stereo 16-bit song of ``minutes`` minutes to ``path``: the demo signal, repeated (written piece by
    piece, so a long song never sits in memory)."""
    import soundfile as sf

    n = int(minutes * 60 * SR)
    base, _ = demo_signal("data/test")  # (nb_timesteps, 2) float32
    reps = -(-n // len(base))
    with sf.SoundFile(path, "w", samplerate=SR, channels=2, subtype="PCM_16") as f:
        for _ in range(reps):
            f.write(base[: n - f.tell()] if n - f.tell() < len(base) else base)


def time_file_separation(separator, path: str, warm_up: bool = True, ceiling: bool = True) -> dict:
    """Time one file-to-file separation (``Separator.separate_file`` into a temporary folder) after an optional
    untimed 1 s warm-up; returns ``audio_seconds``, ``separation_s``, ``rtf``, ``warmup_s``, ``peak_rss_mb`` (this
    process's peak), ``threads`` and, with ``ceiling``, ``ceiling``: :func:`xumx_slicq.flops.stage_report` of the
    run (stage seconds, context share, network GMAC per audio second, achieved GMAC/s) with the float32 matmul
    peak measured right after it at the same thread count (:func:`xumx_slicq.flops.matmul_peak_gmacs`)."""
    import soundfile as sf
    import torch

    from xumx_slicq import flops

    warm = 0.0
    if warm_up:
        t0 = time.perf_counter()
        separator.separate_segment(torch.zeros(1, 2, SR))
        warm = time.perf_counter() - t0
    separator.reset_stats()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        separator.separate_file(path, out)
        seconds = time.perf_counter() - t0
    info = sf.info(path)
    row = {"audio_seconds": info.duration, "separation_s": seconds, "rtf": seconds / info.duration,
           "warmup_s": warm, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "threads": torch.get_num_threads()}
    if ceiling:
        peak = flops.matmul_peak_gmacs(torch.get_num_threads())
        row["ceiling"] = flops.stage_report(separator.model, separator.stats, info.frames, seconds, peak["gmacs"])
        row["ceiling"]["peak"] = peak
    return row


def _child(args: argparse.Namespace) -> int:
    """One measurement: separate ``args.input`` with one configuration and print a JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from xumx_slicq.model import XUMXSliCQ
    from xumx_slicq.separator import Separator, load_separator

    options = dict(wiener=args.wiener[0], niter=args.niter, chunk_seconds=args.chunk_seconds)
    t0 = time.perf_counter()
    if args.model == "random":
        torch.manual_seed(0)
        separator = Separator(XUMXSliCQ().eval(), **options)
    else:
        separator = load_separator(args.model, **options)
    setup = time.perf_counter() - t0
    # numba compiles (or loads from its cache) outside the timed run, reported separately
    row = time_file_separation(separator, args.input, warm_up=args.wiener[0] == "numba")
    print(json.dumps({"wiener": args.wiener[0], "niter": args.niter, "audio_seconds": row["audio_seconds"],
                      "separation_s": row["separation_s"], "rtf": row["rtf"], "setup_s": setup + row["warmup_s"],
                      "warmup_s": row["warmup_s"], "peak_rss_mb": row["peak_rss_mb"], "threads": row["threads"],
                      "chunk_seconds": args.chunk_seconds}))
    return 0


def _run_child(input_path: str, wiener: str, args: argparse.Namespace) -> Dict:
    cmd = [sys.executable, "-m", "benchmark.separator_speed", "--child", "--input", input_path, "--wiener", wiener,
           "--niter", str(args.niter), "--model", args.model, "--chunk-seconds", str(args.chunk_seconds)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement failed ({wiener}, {input_path}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.separator_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="song length for the speed runs (3)")
    parser.add_argument("--wiener", nargs="+", default=["off", "torch", "numba"],
                        choices=["off", "torch", "numba"], help="Wiener-EM paths to time (default: all, %(default)s)")
    parser.add_argument("--niter", type=int, default=1, help="Wiener-EM iterations (1)")
    parser.add_argument("--memory-minutes", type=float, nargs="*", default=[3.0, 10.0, 20.0],
                        help="song lengths for the peak-memory runs (wiener path: the first of --wiener; "
                             "default 3 10 20)")
    parser.add_argument("--model", default="random", help="model folder, or 'random' (default architecture)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="separator chunk length (30)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's choice)")
    parser.add_argument("--output", default="benchmark/results", help="output folder (default %(default)s)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    results: Dict[str, List[Dict]] = {"speed": [], "memory": []}
    with tempfile.TemporaryDirectory() as tmp:
        song = os.path.join(tmp, "song.wav")
        make_song(song, args.minutes)
        for wiener in args.wiener:
            r = _run_child(song, wiener, args)
            results["speed"].append(r)
            print(f"{args.minutes:g} min, wiener={wiener:<5} {r['separation_s']:8.1f} s  RTF {r['rtf']:.3f}  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB  (setup {r['setup_s']:.1f} s, numba warm-up "
                  f"{r['warmup_s']:.1f} s)", flush=True)
        for minutes in args.memory_minutes:
            path = os.path.join(tmp, f"song_{minutes:g}.wav")
            make_song(path, minutes)
            r = _run_child(path, args.wiener[0], args)
            results["memory"].append({"minutes": minutes, **r})
            print(f"memory: {minutes:g} min, wiener={args.wiener[0]}: peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{r['separation_s']:.1f} s", flush=True)
            os.unlink(path)
    summary = {"model": args.model, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_average": os.getloadavg(), **results}
    path = os.path.join(args.output, "separator_speed.json")
    files.write_json(path, summary)
    csv_path = os.path.join(args.output, "separator_speed.csv")
    with files.atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "minutes", "wiener", "separation_s", "rtf", "peak_rss_mb"])
        for r in results["speed"]:
            w.writerow(["speed", r["audio_seconds"] / 60, r["wiener"], r["separation_s"], r["rtf"], r["peak_rss_mb"]])
        for r in results["memory"]:
            w.writerow(["memory", r["minutes"], r["wiener"], r["separation_s"], r["rtf"], r["peak_rss_mb"]])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
