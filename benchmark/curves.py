"""Training curves of one or more ``python -m train`` runs: validation (solid) and training (dashed) loss
against the number of training examples seen, one panel per architecture (their losses have different units).

    python -m benchmark curves --runs runs/gpu1/umx runs/cpu2/umx runs/gpu1/xumx-slicq --output docs/curves.png

Each ``--runs`` folder is a training output (``history.json``; the architecture is that of its saved model
``<arch>.json``, else the folder name). Runs of one architecture share a panel, which is how a rerun is compared
with the original (e.g. the same recipe on a GPU and on a CPU: same examples, so the curves should coincide).

Also writes ``<output stem>.csv`` (one row per run and epoch) and ``<output stem>.md`` (per run: epochs,
examples seen, training hours, best validation loss and its epoch).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Dict, List, Optional, Sequence

from benchmark.common import PathLike, markdown_table, save_figure_atomic
from xumx_slicq import files
from xumx_slicq.checkpoint import find_model


def run_arch(folder: PathLike) -> str:
    """The architecture of a training output folder: the model it saved (``<arch>.json``, found as the
    separator finds it), else the folder name."""
    try:
        return find_model(folder)[0]
    except FileNotFoundError:
        return pathlib.Path(folder).name


def load_run(folder: PathLike, label: Optional[str] = None) -> List[Dict[str, object]]:
    """One record per epoch of ``<folder>/history.json``: ``run arch epoch examples_seen train valid
    epoch_seconds``. Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing or empty."""
    folder = pathlib.Path(folder)
    path = folder / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"curves: {path}: no training history (is {folder} a `python -m train` output?)")
    try:
        history = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"curves: {path}: not valid JSON ({e})") from e
    if not isinstance(history, list) or not history:
        raise ValueError(f"curves: {path}: empty history")
    label = label or f"{folder.parent.name}/{folder.name}"
    arch = run_arch(folder)
    return [
        dict(run=label, arch=arch, epoch=int(r["epoch"]), examples_seen=int(r["examples_seen"]),
             train=float(r["train"]["total"]), valid=float(r["valid"]["total"]),
             epoch_seconds=float(r.get("epoch_seconds", float("nan"))))
        for r in history
    ]


def summary_table(records: Sequence[Dict[str, object]]) -> str:
    """Markdown: per run its epochs, examples, hours, best validation loss and best epoch."""
    rows = []
    for run in dict.fromkeys(r["run"] for r in records):
        rs = [r for r in records if r["run"] == run]
        best = min(rs, key=lambda r: r["valid"])
        rows.append([run, rs[0]["arch"], len(rs), rs[-1]["examples_seen"],
                     sum(r["epoch_seconds"] for r in rs) / 3600, best["valid"], best["epoch"]])
    return markdown_table(["run", "arch", "epochs", "examples seen", "hours", "best valid loss", "best epoch"],
                          rows, floatfmt=".3f")


def plot(records: Sequence[Dict[str, object]], output: PathLike, title: Optional[str] = None) -> None:
    """One panel per architecture; x = examples seen, solid = validation, dashed = training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in records))
    fig, axes = plt.subplots(1, len(archs), figsize=(5 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        runs = list(dict.fromkeys(r["run"] for r in records if r["arch"] == arch))
        for i, run in enumerate(runs):
            rs = [r for r in records if r["run"] == run]
            x = [r["examples_seen"] for r in rs]
            colour = f"C{i}"
            ax.plot(x, [r["valid"] for r in rs], "-o", color=colour, markersize=3, label=f"{run} valid")
            ax.plot(x, [r["train"] for r in rs], "--", color=colour, alpha=0.6, label=f"{run} train")
        ax.set_title(arch)
        ax.set_xlabel("training examples seen")
        ax.set_ylabel("loss (the architecture's own units)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure_atomic(fig, output, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark curves", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="training output folders (each with history.json)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: <parent>/<folder>)")
    p.add_argument("--output", required=True, help="PNG path; the CSV and markdown go next to it")
    p.add_argument("--title", help="figure title")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        print(f"error: {len(args.labels)} --labels for {len(args.runs)} --runs", file=sys.stderr)
        return 2
    labels = args.labels or [None] * len(args.runs)
    try:
        records = [r for run, label in zip(args.runs, labels) for r in load_run(run, label)]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    output = pathlib.Path(args.output)
    plot(records, output, args.title)
    columns = ["run", "arch", "epoch", "examples_seen", "train", "valid", "epoch_seconds"]
    csv = "\n".join([",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in records]) + "\n"
    files.write_text(output.with_suffix(".csv"), csv)
    table = summary_table(records)
    files.write_text(output.with_suffix(".md"), table + "\n")
    print(table)
    print(f"wrote {output}, {output.with_suffix('.csv')}, {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
