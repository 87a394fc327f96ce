"""Training-data throughput: samples/s of 1 s stereo chunks (random track mixing + augmentations) through a
torch DataLoader with 2 workers (and, for reference, in the main process).

    python -m benchmark.data_throughput --root data --output benchmark/results

Prints a table and writes ``<output>/data_throughput.json``. One sample = one (x, y) item: a stereo mixture
chunk and its 4 stereo targets.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from xumx_slicq import files
from xumx_slicq.data import ChunkDataset, make_train_loader


def measure(dataset: ChunkDataset, batch_size: int, workers: int, batches: int, warmup: int, seed: int) -> dict:
    """Iterate `warmup` then `batches` batches; returns samples/s, batches/s and the seconds spent."""
    loader = make_train_loader(dataset, batch_size=batch_size, num_workers=workers, seed=seed,
                               persistent_workers=False)
    total = warmup + batches
    done = 0
    start = None
    shape = None
    while done < total:
        for x, y in loader:
            if done == warmup:
                start = time.perf_counter()
            shape = (tuple(x.shape), tuple(y.shape))
            done += 1
            if done == total:
                break
    elapsed = time.perf_counter() - start
    return {"workers": workers, "batch_size": batch_size, "batches": batches, "seconds": round(elapsed, 3),
            "samples_per_s": round(batches * batch_size / elapsed, 1), "batches_per_s": round(batches / elapsed, 2),
            "x_shape": shape[0], "y_shape": shape[1]}


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(prog="python -m benchmark.data_throughput",
                                description="Samples/s of training chunks through a DataLoader.")
    p.add_argument("--root", required=True, help="dataset root in MUSDB18-HQ layout")
    p.add_argument("--output", default="benchmark/results",
                   help="folder for data_throughput.json (default %(default)s)")
    p.add_argument("--split", default="train", choices=("train", "valid", "test"), help="split to read (default train)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32, the original recipe)")
    p.add_argument("--seq-dur", type=float, default=1.0, help="chunk length in seconds (default 1)")
    p.add_argument("--batches", type=int, default=40, help="timed batches (default 40)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    p.add_argument("--samples-per-track", type=int, default=64, help="items per track and epoch (default 64)")
    p.add_argument("--skip-silent", action="store_true", help="redraw silent source chunks")
    p.add_argument("--main-process", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure with 0 workers (default: on)")
    p.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    try:
        dataset = ChunkDataset(args.root, split=args.split, seq_dur=args.seq_dur,
                               samples_per_track=args.samples_per_track, skip_silent=args.skip_silent, seed=args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    runs = [measure(dataset, args.batch_size, args.workers, args.batches, args.warmup, args.seed)]
    if args.main_process and args.workers != 0:
        runs.append(measure(dataset, args.batch_size, 0, max(5, args.batches // 4), 1, args.seed))
    result = {"root": str(Path(args.root).resolve()), "split": args.split, "nb_tracks": len(dataset.tracks),
              "seq_dur": args.seq_dur, "skip_silent": args.skip_silent, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(), "platform": platform.platform(), "runs": runs}
    print(f"{'workers':>8} {'batch':>6} {'samples/s':>10} {'batches/s':>10} {'seconds':>8}")
    for r in runs:
        print(f"{r['workers']:>8} {r['batch_size']:>6} {r['samples_per_s']:>10} {r['batches_per_s']:>10} "
              f"{r['seconds']:>8}")
    print(f"{len(dataset.tracks)} tracks, {args.seq_dur} s stereo chunks, x {runs[0]['x_shape']}, y {runs[0]['y_shape']}"
          f", load average {result['load_average'][0]:.2f} on {os.cpu_count()} cores")
    out = Path(args.output)
    files.write_json(out / "data_throughput.json", result)
    print(f"wrote {out / 'data_throughput.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
