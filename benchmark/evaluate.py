"""BSS Eval v4 (museval) and MDX-2021 SDR of a folder of estimates against a MUSDB18-HQ-layout test set.

    python -m benchmark evaluate --root data/test-root --estimates out/xumx --method xumx-sliCQ --output out/eval/xumx

* ``--root``: ``<root>/<subset>/<track>/{mixture,vocals,drums,bass,other}.wav`` (default subset ``test``).
* ``--estimates``: ``<estimates>/<track>/<target>.wav`` (what ``python -m submission`` writes); museval's own
  ``<estimates>/<subset>/<track>/<target>.wav`` is accepted too.
* ``--output``: per track ``<output>/<subset>/<track>.json`` in museval's format (1 s windows, no overlap,
  512-tap time-invariant filters), readable by ``museval.EvalStore().add_eval_dir(output)``;
  ``<output>/mdx/<track>.json`` the MDX SDR per source and song; ``<output>/method.json`` the method's name.
  Tracks already evaluated are skipped.
* Aggregates: ``<output>/aggregate.csv`` / ``aggregate.pkl`` (rows: the targets and their mean; columns:
  SDR/SIR/SAR/ISR as median over frames then median over tracks, and ``MDX_SDR`` as the mean over songs), and
  ``<output>/frames.pkl`` (every frame: museval's long DataFrame plus a ``method`` column).

MDX SDR of one source: ``10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7))`` over all samples and
channels; a song's score is the mean over its sources; the leaderboard score is the mean over songs.

Several methods in one table (markdown + CSV)::

    python -m benchmark evaluate --compare out/eval/xumx out/eval/umx out/eval/IRM2 --table docs/comparison

or from Python: ``compare(["out/eval/xumx", "out/eval/umx"], "docs/comparison")``. ``--paired xumx`` adds a
track-by-track comparison of one method with the others (mean difference, songs ahead, Wilcoxon p).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmark.common import (
    TARGETS,
    PathLike,
    fit_length,
    markdown_table,
    read_wav,
    track_names,
)
from xumx_slicq import files
from xumx_slicq.audio import MDX_EPS, mdx_sdr  # noqa: F401 - the core's MDX SDR (also the int8 gate's)

METRICS = ("SDR", "SIR", "SAR", "ISR")


# --------------------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------------------


def bss_eval_track(references: np.ndarray, estimates: np.ndarray, track: str, targets: Sequence[str],
                   win: float = 1.0, hop: float = 1.0, rate: int = 44100):
    """BSS Eval v4 of one track as a :class:`museval.TrackStore`.

    Args:
        references, estimates: ``(nb_targets, nb_timesteps, nb_channels)``.
        track: track name stored in the scores.
        targets: target names in the order of the first axis.
    Returns:
        a validated ``museval.TrackStore`` (frame scores; NaN where a reference or estimate is silent).
    """
    import museval

    sdr, isr, sir, sar = museval.evaluate(references, estimates, win=int(win * rate), hop=int(hop * rate),
                                          mode="v4")  # each (nb_targets, nb_windows)
    store = museval.TrackStore(track_name=track, win=win, hop=hop)
    for j, target in enumerate(targets):
        store.add_target(target, {"SDR": sdr[j].tolist(), "SIR": sir[j].tolist(), "ISR": isr[j].tolist(),
                                  "SAR": sar[j].tolist()})
    store.validate()
    return store


def find_estimates(estimates: PathLike, track: str, subset: str = "test") -> pathlib.Path:
    """Folder of a track's estimates: ``<estimates>/<track>`` or museval's ``<estimates>/<subset>/<track>``."""
    estimates = pathlib.Path(estimates)
    for folder in (estimates / track, estimates / subset / track):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"{estimates}: no estimates for track '{track}' "
                            f"(looked for {estimates / track}/ and {estimates / subset / track}/)")


def evaluate_track(root: PathLike, estimates: PathLike, output: PathLike, track: str, subset: str = "test",
                   targets: Sequence[str] = TARGETS) -> Dict:
    """Evaluate one track: write ``<output>/<subset>/<track>.json`` (museval) and ``<output>/mdx/<track>.json``.

    Estimates are zero-padded or truncated to the reference length (mono estimates duplicated to stereo).
    Returns the MDX record ``{"track", "sdr": {target: dB}, "song": mean dB}``.
    """
    ref_dir = pathlib.Path(root) / subset / track
    est_dir = find_estimates(estimates, track, subset)
    refs, ests = [], []
    for target in targets:
        ref = read_wav(ref_dir / f"{target}.wav")  # (nb_timesteps, nb_channels)
        est = read_wav(est_dir / f"{target}.wav")
        refs.append(ref)
        ests.append(fit_length(est, ref.shape[0], ref.shape[1]))
    references, estimates_ = np.stack(refs), np.stack(ests)  # (nb_targets, nb_timesteps, nb_channels)
    mdx = {"track": track, "sdr": {t: mdx_sdr(r, e) for t, r, e in zip(targets, references, estimates_)}}
    mdx["song"] = float(np.mean(list(mdx["sdr"].values())))
    store = bss_eval_track(references, estimates_, track, targets)
    output = pathlib.Path(output)
    files.write_json(output / "mdx" / f"{track}.json", mdx)
    files.write_text(output / subset / f"{track}.json", store.json)  # museval layout, written last: "done"
    return mdx


def _is_done(output: pathlib.Path, subset: str, track: str) -> bool:
    return (output / subset / f"{track}.json").is_file() and (output / "mdx" / f"{track}.json").is_file()


@contextlib.contextmanager
def single_threaded_children():
    """One BLAS/OpenMP thread in every process started inside the block (the processes are the parallelism).

    The variables must be in the environment the children start with: BLAS libraries read them once, when
    numpy is imported, which a ``spawn`` worker does before any initialiser runs. Without this, N workers on
    N cores each start N BLAS threads, and museval slowed to a crawl on a 16-core machine. The parent's own
    values are restored on exit.
    """
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    os.environ.update({var: "1" for var in _THREAD_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def evaluate_dir(root: PathLike, estimates: PathLike, output: PathLike, method: Optional[str] = None,
             subset: str = "test", targets: Sequence[str] = TARGETS, tracks: Optional[Sequence[str]] = None,
             jobs: int = 1, oracle: bool = False, progress: bool = True) -> "pandas.DataFrame":  # noqa: F821
    """Evaluate every track (skipping those already done), then aggregate; returns the aggregate table.

    ``jobs > 1`` evaluates tracks in that many processes. ``method`` defaults to the estimates folder's
    name; ``oracle`` marks the method as an oracle for the figures.
    """
    from tqdm import tqdm

    output = pathlib.Path(output)
    names = track_names(root, subset, tracks)
    method = method or pathlib.Path(estimates).resolve().name
    files.write_json(output / "method.json", {"method": method, "oracle": bool(oracle), "subset": subset,
                                              "targets": list(targets), "estimates": str(estimates),
                                              "root": str(root)})
    todo = [n for n in names if not _is_done(output, subset, n)]
    for n in todo:  # fail early, before hours of work, when an estimate folder is missing
        find_estimates(estimates, n, subset)
    bar = tqdm(total=len(names), initial=len(names) - len(todo), desc=f"evaluate {method}", unit="track",
               disable=not progress)
    errors = []
    if jobs <= 1 or len(todo) <= 1:
        for n in todo:
            evaluate_track(root, estimates, output, n, subset, targets)
            bar.update()
    else:
        import multiprocessing as mp

        with single_threaded_children(), ProcessPoolExecutor(min(jobs, len(todo)),
                                                             mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(evaluate_track, root, estimates, output, n, subset, tuple(targets)): n
                       for n in todo}
            for fut in as_completed(futures):
                try:
                    fut.result()
                except Exception as exc:  # noqa: BLE001 - report every failed track, then stop
                    errors.append(f"{futures[fut]}: {exc}")
                bar.update()
    bar.close()
    if errors:
        raise RuntimeError("evaluation failed for:\n  " + "\n  ".join(errors))
    table = aggregate(output, tracks=names)
    with files.atomic_path(output / "aggregate.csv") as tmp:
        table.to_csv(tmp)
    with files.atomic_path(output / "aggregate.pkl") as tmp:
        table.to_pickle(tmp)
    frames = load_frames(output, tracks=names)
    with files.atomic_path(output / "frames.pkl") as tmp:
        frames.to_pickle(tmp)
    return table


# --------------------------------------------------------------------------------------------------------------
# Loading and aggregation
# --------------------------------------------------------------------------------------------------------------


def json_files(folder: pathlib.Path) -> List[pathlib.Path]:
    """The track JSON files of ``folder``, sorted; hidden ones (temporaries of a killed writer) left out."""
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def method_info(result_dir: PathLike) -> Dict:
    """``<result_dir>/method.json`` (name, oracle flag, subset), or defaults from the folder name."""
    result_dir = pathlib.Path(result_dir)
    path = result_dir / "method.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return {"method": result_dir.resolve().name, "oracle": False, "subset": "test"}


def load_frames(result_dir: PathLike, tracks: Optional[Sequence[str]] = None) -> "pandas.DataFrame":  # noqa: F821
    """Every frame score of an evaluation folder, with museval's own loader.

    Returns a long DataFrame with columns ``time, target, metric, score, track, method`` (museval's
    ``EvalStore.df`` plus ``method``). ``tracks`` restricts it to those tracks.
    """
    import museval
    import pandas as pd

    result_dir = pathlib.Path(result_dir)
    info = method_info(result_dir)
    subset = info.get("subset", "test")
    paths = json_files(result_dir / subset)
    if tracks is not None:
        paths = [p for p in paths if p.stem in set(tracks)]
    if not paths:
        raise FileNotFoundError(f"{result_dir / subset}: no museval track JSON files")
    store = museval.EvalStore()
    for p in paths:
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON ({exc})") from exc
        store.add_track(museval.aggregate.json2df(data, p.stem))
    df = store.df
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df["method"] = info["method"]
    return df


def load_mdx(result_dir: PathLike, tracks: Optional[Sequence[str]] = None) -> "pandas.DataFrame":  # noqa: F821
    """MDX SDR per song and source: DataFrame ``track, target, sdr`` (``target == "song"``: the song mean)."""
    import pandas as pd

    rows = []
    for p in json_files(pathlib.Path(result_dir) / "mdx"):
        if tracks is not None and p.stem not in set(tracks):
            continue
        rec = json.loads(p.read_text())
        rows += [{"track": rec["track"], "target": t, "sdr": v} for t, v in rec["sdr"].items()]
        rows.append({"track": rec["track"], "target": "song", "sdr": rec["song"]})
    return pd.DataFrame(rows, columns=["track", "target", "sdr"])


def aggregate_frames(frames: "pandas.DataFrame", targets: Sequence[str] = TARGETS) -> "pandas.DataFrame":  # noqa: F821
    """Median over frames, then median over tracks (NaN frames ignored).

    Args:
        frames: long DataFrame ``target, metric, score, track`` (see :func:`load_frames`).
    Returns:
        DataFrame, rows ``targets`` + ``"mean"`` (mean of the targets' values), columns ``SDR SIR SAR ISR``.
    """
    per_track = frames.groupby(["track", "target", "metric"])["score"].median()
    per_target = per_track.groupby(["target", "metric"]).median().unstack("metric")
    present = [t for t in targets if t in per_target.index]
    table = per_target.reindex(index=present, columns=list(METRICS))
    table.loc["mean"] = table.loc[present].mean(axis=0)
    return table


def aggregate(result_dir: PathLike, tracks: Optional[Sequence[str]] = None,
              targets: Sequence[str] = TARGETS) -> "pandas.DataFrame":  # noqa: F821
    """Per-method table of an evaluation folder: :func:`aggregate_frames` plus column ``MDX_SDR`` (mean over
    songs of each target's MDX SDR; the ``mean`` row is the MDX song score averaged over songs)."""
    table = aggregate_frames(load_frames(result_dir, tracks), targets)
    mdx = load_mdx(result_dir, tracks)
    means = mdx.groupby("target")["sdr"].mean()
    table["MDX_SDR"] = [means.get("song" if t == "mean" else t, np.nan) for t in table.index]
    table.index.name = "target"
    return table


def compare(result_dirs: Sequence[PathLike], output_prefix: Optional[PathLike] = None, metric: str = "SDR",
            targets: Sequence[str] = TARGETS, sort: bool = True) -> "pandas.DataFrame":  # noqa: F821
    """One comparison table of several evaluated methods.

    Args:
        result_dirs: evaluation folders written by :func:`evaluate_dir` (one per method).
        output_prefix: when given, writes ``<prefix>.csv`` and ``<prefix>.md``.
        metric: the BSS Eval metric of the per-target columns (median over frames, then tracks).
        sort: order rows by the mean over targets, best first.
    Returns:
        DataFrame indexed by method: one column per target, ``mean`` (of the targets), ``MDX`` (mean over
        songs of the MDX song score), ``tracks`` (how many tracks) and ``oracle``.
    """
    import pandas as pd

    rows = []
    for d in result_dirs:
        info = method_info(d)
        table = aggregate(d, targets=targets)
        row = {t: table.loc[t, metric] if t in table.index else np.nan for t in targets}
        row["mean"] = table.loc["mean", metric]
        row["MDX"] = table.loc["mean", "MDX_SDR"]
        row["tracks"] = len(json_files(pathlib.Path(d) / info.get("subset", "test")))
        row["oracle"] = bool(info.get("oracle", False))
        rows.append(pd.Series(row, name=info["method"]))
    df = pd.DataFrame(rows)
    df.index.name = "method"
    if sort:
        df = df.sort_values("mean", ascending=False, kind="stable")
    if output_prefix is not None:
        prefix = pathlib.Path(output_prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(prefix.with_name(prefix.name + ".csv"), df.to_csv())
        files.write_text(prefix.with_name(prefix.name + ".md"), comparison_markdown(df, metric))
    return df


def comparison_markdown(df: "pandas.DataFrame", metric: str = "SDR") -> str:  # noqa: F821
    """Markdown of a :func:`compare` table (oracles marked with an asterisk)."""
    targets = [c for c in df.columns if c not in ("mean", "MDX", "tracks", "oracle")]
    header = ["method", *targets, "mean", "MDX SDR", "tracks"]
    rows = [[f"{m} *" if r["oracle"] else m, *[r[t] for t in targets], r["mean"], r["MDX"], int(r["tracks"])]
            for m, r in df.iterrows()]
    note = (f"\n{metric} in dB: BSS Eval v4 median over 1 s frames, then median over tracks; mean = mean of the "
            "targets; MDX SDR = MDX-2021 global SDR, mean over sources and songs. * oracle (uses the true sources).\n")
    return markdown_table(header, rows) + note


def track_scores(result_dir: PathLike, metric: str = "SDR", targets: Sequence[str] = TARGETS) -> "pandas.DataFrame":  # noqa: F821
    """Per-track scores of an evaluation folder: median over frames, ``(tracks, targets)`` plus column ``mean``
    (mean of the targets)."""
    frames = load_frames(result_dir)
    frames = frames[frames.metric == metric]
    table = frames.groupby(["track", "target"])["score"].median().unstack("target")
    table = table.reindex(columns=[t for t in targets if t in table.columns])
    table["mean"] = table.mean(axis=1)
    return table


def paired(result_dirs: Sequence[PathLike], reference: str, output_prefix: Optional[PathLike] = None,
           metric: str = "SDR", targets: Sequence[str] = TARGETS) -> "pandas.DataFrame":  # noqa: F821
    """Paired per-track comparison of one method against every other on their common tracks.

    With 10-ish test songs a difference of medians says little by itself; this says on how many songs the
    reference is ahead and whether the per-song differences are distinguishable from zero.

    Args:
        result_dirs: evaluation folders (one per method); one of them must be the method ``reference``.
        output_prefix: when given, writes ``<prefix>.csv`` and ``<prefix>.md``.
    Returns:
        DataFrame indexed by the other methods: ``tracks`` (common), ``<target>`` and ``mean``: mean over tracks
        of ``reference - other`` (per-track medians over frames; ``mean`` = of the per-track target means),
        ``wins``: tracks where the reference's target mean is higher, ``p``: two-sided Wilcoxon signed-rank test
        of the per-track target means (NaN below 2 tracks or when all differences are 0).
    """
    import pandas as pd
    from scipy.stats import wilcoxon

    scores = {method_info(d)["method"]: track_scores(d, metric, targets) for d in result_dirs}
    if reference not in scores:
        raise ValueError(f"paired: reference method {reference!r} is not among {sorted(scores)}")
    ref = scores[reference]
    rows = []
    for name, other in scores.items():
        if name == reference:
            continue
        common = ref.index.intersection(other.index)
        diff = ref.loc[common] - other.loc[common]
        row = {"tracks": len(common), **{c: diff[c].mean() for c in diff.columns}}
        row["wins"] = int((diff["mean"] > 0).sum())
        nonzero = diff["mean"][diff["mean"] != 0]
        row["p"] = float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else float("nan")
        rows.append(pd.Series(row, name=name))
    df = pd.DataFrame(rows)
    df.index.name = "method"
    if output_prefix is not None:
        prefix = pathlib.Path(output_prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(prefix.with_name(prefix.name + ".csv"), df.to_csv())
        cols = [c for c in df.columns if c not in ("tracks", "wins", "p")]
        header = ["vs method", "tracks", *[f"Δ {c}" for c in cols], f"{reference} ahead on", "Wilcoxon p"]
        body = [[m, int(r["tracks"]), *[r[c] for c in cols], f"{int(r['wins'])}/{int(r['tracks'])}", f"{r['p']:.3g}"]
                for m, r in df.iterrows()]
        note = (f"\nΔ = {reference} minus the method, {metric} in dB, mean over the common tracks of per-track medians "
                "over 1 s frames; Wilcoxon: two-sided signed-rank test of the per-track target means.\n")
        files.write_text(prefix.with_name(prefix.name + ".md"), markdown_table(header, body) + note)
    return df


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="dataset root in MUSDB18-HQ layout")
    parser.add_argument("--subset", default="test", help="subset folder of the root (test)")
    parser.add_argument("--estimates", help="folder of estimates, <estimates>/<track>/<target>.wav")
    parser.add_argument("--method", help="method name in tables and figures (default: the estimates folder name)")
    parser.add_argument("--output", help="evaluation folder of this method")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS),
                        help="targets to evaluate (default: %(default)s)")
    parser.add_argument("--tracks", nargs="+", help="only these tracks")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="tracks evaluated in parallel (processes; default: 4 or the CPU count if lower)")
    parser.add_argument("--oracle", action="store_true", help="mark the method as an oracle in figures")
    parser.add_argument("--compare", nargs="+", metavar="DIR",
                        help="instead of evaluating: one table of these evaluation folders")
    parser.add_argument("--table", help="with --compare: write <TABLE>.csv and <TABLE>.md")
    parser.add_argument("--paired", metavar="METHOD",
                        help="with --compare: also compare METHOD track by track with each other method "
                             "(mean difference, songs ahead, Wilcoxon p); with --table writes <TABLE>_paired.*")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.precision", 2):
        if args.compare:
            df = compare(args.compare, args.table)
            print(df.to_string())
            if args.table:
                print(f"wrote {args.table}.csv and {args.table}.md")
            if args.paired:
                prefix = f"{args.table}_paired" if args.table else None
                print(paired(args.compare, args.paired, prefix).to_string())
                if prefix:
                    print(f"wrote {prefix}.csv and {prefix}.md")
            return 0
        missing = [f"--{k}" for k in ("root", "estimates", "output") if not getattr(args, k)]
        if missing:
            parser.error(f"missing {', '.join(missing)} (or use --compare)")
        table = evaluate_dir(args.root, args.estimates, args.output, args.method, args.subset, args.targets,
                             args.tracks, args.jobs, args.oracle, progress=not args.no_progress)
        print(table.to_string())
        print(f"wrote {args.output}/aggregate.csv, aggregate.pkl, frames.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
