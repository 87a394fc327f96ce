"""The standard BSS Eval figure: one box per method, rows = targets, columns = SDR / SIR / SAR / ISR.

    python -m benchmark boxplot --results out/eval/xumx out/eval/umx out/oracles/eval/* --output docs/boxplot.png

Each ``--results`` folder is an evaluation written by ``python -m benchmark evaluate`` (or ``oracles``). Boxes
are horizontal, without fliers; methods are sorted by their median vocals SDR (best on top) and oracles (if any)
are drawn in a distinct colour. Each box holds one value per track (the median over its 1 s frames, as in SiSEC
2018), or every 1 s frame with ``--level frames``; the default ``--level auto`` takes per-track medians from
10 tracks on and frames below (3 values do not make a box).

Boxes are notched (the notch is the median's ~95% interval, median +- 1.57 IQR / sqrt(n)) only at the track
level with at least 10 tracks: below that the notch is wider than the box itself and is drawn outside it, and
the 1 s frames of one song are not independent, so a notch over frames would claim a precision it does not have.

Also writes ``<output stem>.md``: a compact per-target SDR table (median over frames, then tracks).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import List, Optional, Sequence

from benchmark.common import TARGETS, PathLike, markdown_table, save_figure_atomic
from benchmark.evaluate import METRICS, load_frames, method_info
from xumx_slicq import files

MODEL_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#bcbd22")
CLIP_DB = 60.0  # x-axis limit for columns whose scores go beyond it
ORACLE_COLOURS = ("#ff7f0e", "#d62728", "#e377c2", "#f5b041", "#c0392b", "#7f7f7f")
# fewer tracks than this: ``--level auto`` boxes the 1 s frames, and no box is notched (1.57 IQR / sqrt(n) is wider
# than half the box below n ~ 10, so the notch would stick out of it)
MIN_TRACKS = 10
LEVELS = ("auto", "track", "frames")


def load_results(result_dirs: Sequence[PathLike]) -> "pandas.DataFrame":  # noqa: F821
    """Frame scores of several evaluation folders in one long DataFrame (columns ``time target metric score
    track method oracle``)."""
    import pandas as pd

    frames, seen = [], {}
    for d in result_dirs:
        info = method_info(d)
        if info["method"] in seen:
            raise ValueError(f"boxplot: method name {info['method']!r} used twice ({seen[info['method']]} and {d})")
        seen[info["method"]] = d
        df = load_frames(d)
        df["oracle"] = bool(info.get("oracle", False))
        frames.append(df)
    if not frames:
        raise ValueError("boxplot: no --results folders given")
    return pd.concat(frames, ignore_index=True)


def method_order(df: "pandas.DataFrame", by_target: str = "vocals") -> List[str]:  # noqa: F821
    """Methods sorted by median ``by_target`` SDR (median over frames, then tracks), best first."""
    sdr = df[(df.metric == "SDR") & (df.target == by_target)]
    per_track = sdr.groupby(["method", "track"])["score"].median()
    medians = per_track.groupby("method").median().reindex(df["method"].unique())
    return list(medians.sort_values(ascending=False, na_position="last").index)


def resolve_level(level: str, tracks: int) -> str:
    """``"track"`` or ``"frames"``: ``auto`` is per-track medians from :data:`MIN_TRACKS` tracks on, else frames."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if level == "auto":
        return "track" if tracks >= MIN_TRACKS else "frames"
    return level


def plot(df: "pandas.DataFrame", output: PathLike, level: str = "auto",  # noqa: F821
         targets: Sequence[str] = TARGETS, metrics: Sequence[str] = METRICS, title: Optional[str] = None) -> List[str]:
    """Draw the FacetGrid boxplot to ``output`` (PNG); returns the method order used.

    Args:
        df: long DataFrame from :func:`load_results`.
        level: ``"track"`` (one value per track: median over frames), ``"frames"`` (every frame) or ``"auto"``
            (see :func:`resolve_level`). Boxes are notched only at the track level with every box holding at least
            :data:`MIN_TRACKS` values.
    """
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    tracks = int(df["track"].nunique())
    level = resolve_level(level, tracks)
    targets = [t for t in targets if t in set(df.target)]
    df = df[df.target.isin(targets) & df.metric.isin(metrics)].dropna(subset=["score"])
    if level == "track":
        df = df.groupby(["method", "oracle", "track", "target", "metric"], as_index=False)["score"].median()
    smallest_box = int(df.groupby(["method", "target", "metric"])["score"].size().min()) if len(df) else 0
    notch = level == "track" and smallest_box >= MIN_TRACKS
    order = method_order(df)
    oracles = set(df.loc[df.oracle, "method"])
    models = [m for m in order if m not in oracles]
    palette = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}
    palette.update({m: ORACLE_COLOURS[i % len(ORACLE_COLOURS)] for i, m in enumerate(o for o in order if o in oracles)})

    sns.set_theme(style="whitegrid", font_scale=0.9)
    grid = sns.FacetGrid(df, row="target", col="metric", row_order=targets, col_order=list(metrics),
                         height=0.35 * len(order) + 0.9, aspect=2.0 if len(order) < 6 else 1.6, sharex="col",
                         margin_titles=True)
    grid.map_dataframe(sns.boxplot, x="score", y="method", hue="method", order=order, hue_order=order,
                       palette=palette, orient="h", notch=notch, showfliers=False, dodge=False, legend=False,
                       linewidth=0.8)
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    clipped = []
    for j, metric in enumerate(metrics):  # keep near-infinite scores (e.g. the mixture's SAR) from squashing a column
        high = df.loc[df.metric == metric, "score"].max()
        if high > CLIP_DB:
            grid.axes[0, j].set_xlim(right=CLIP_DB)
            clipped.append(metric)
    grid.set_axis_labels("dB", "")
    for ax in grid.axes.flat:
        for label in ax.get_yticklabels():
            if label.get_text() in oracles:
                label.set_color(ORACLE_COLOURS[0])
                label.set_fontstyle("italic")
    grid.figure.suptitle(title or default_title(level, tracks, bool(oracles), notch, clipped), y=1.0)
    grid.figure.tight_layout()
    save_figure_atomic(grid.figure, output, dpi=110, bbox_inches="tight")
    return order


def default_title(level: str, tracks: int, oracles: bool, notch: bool, clipped: Sequence[str] = ()) -> str:
    """The figure's title: what a box holds, and only what the figure shows (oracles, notches, cut axes)."""
    unit = "per-track medians" if level == "track" else "1 s frames"
    parts = [f"BSS Eval v4 ({unit} of {tracks} track{'s' if tracks != 1 else ''})"]
    if oracles:
        parts.append("oracles in italics / warm colours")
    if notch:
        parts.append("notches: ~95% interval of the median")
    if clipped:
        parts.append(f"{'/'.join(clipped)} axis cut at {CLIP_DB:g} dB")
    return "; ".join(parts)


def sdr_table(df: "pandas.DataFrame", order: Sequence[str], targets: Sequence[str] = TARGETS) -> str:  # noqa: F821
    """Compact markdown table: median SDR per target (median over frames, then tracks) and their mean."""
    sdr = df[df.metric == "SDR"]
    per_track = sdr.groupby(["method", "target", "track"])["score"].median()
    med = per_track.groupby(["method", "target"]).median().unstack("target")
    targets = [t for t in targets if t in med.columns]
    oracles = set(df.loc[df.oracle, "method"])
    rows = []
    for m in order:
        values = [med.loc[m, t] for t in targets]
        rows.append([f"{m} *" if m in oracles else m, *values, float(sum(values) / len(values))])
    tracks = df["track"].nunique()
    return (markdown_table(["method", *targets, "mean"], rows)
            + f"\nSDR in dB, median over 1 s frames then over {tracks} tracks{'; * oracle' if oracles else ''}.\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark boxplot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", nargs="+", required=True, metavar="DIR", help="evaluation folders")
    parser.add_argument("--output", required=True, help="PNG file to write (and <stem>.md next to it)")
    parser.add_argument("--level", choices=LEVELS, default="auto",
                        help=f"box values: per-track medians (track, as SiSEC), every 1 s frame (frames), or auto: "
                             f"track from {MIN_TRACKS} tracks on, frames below (default auto). Boxes are notched "
                             f"only at the track level with at least {MIN_TRACKS} tracks: with fewer the notch is "
                             f"wider than the box, and frames of one song are not independent")
    parser.add_argument("--title", help="figure title (default: what the boxes hold, and the oracles if any)")
    args = parser.parse_args(argv)
    df = load_results(args.results)
    tracks = int(df["track"].nunique())
    level = resolve_level(args.level, tracks)
    if args.level == "auto":
        print(f"{tracks} track(s): boxes of {'per-track medians' if level == 'track' else '1 s frames'}")
    order = plot(df, args.output, level, title=args.title)
    table = sdr_table(df, order)
    md = pathlib.Path(args.output).with_suffix(".md")
    files.write_text(md, table)
    print(table)
    print(f"wrote {args.output} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
