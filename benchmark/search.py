"""Random search over sliCQ parameters, scored by the mix-phase oracle (MPI) on a validation split.

    python -m benchmark search --root /data/MUSDB18-HQ --iterations 60 --seed 42 --output benchmark/results/search

As in the original xumx-sliCQ: every iteration draws a frequency scale (bark, mel, cqlog, vqlog), a number of
bins (10-300) and a lowest frequency fmin (10-130 Hz), fmax = Nyquist, slice length chosen automatically;
the score is the SDR of the mix-phase oracle (true magnitude x mixture phase, inverted) with that transform.
The STFT 4096 / 1024 and the chosen default (Bark, 262 bins, 32.9 Hz) are scored on the same clips as
reference lines.

Score of one transform: per track and target the MDX-style global SDR
``10 log10(sum s^2 / sum (s - s_hat)^2)`` over the clip; median over tracks per target; mean over targets
(``sdr``). ``--bss`` adds BSS Eval v4 (museval) median SDR (``bss_sdr``; slow).

Tracks: ``--split valid`` (default) is the validation split of ``xumx_slicq.data.list_tracks`` (the official
14 MUSDB18 tracks on MUSDB18-HQ); ``--max-tracks``, ``--start`` and ``--seconds`` crop the work. Transforms
whose automatic slice length exceeds ``--max-sllen`` are recorded as skipped (too slow and memory-hungry).

Writes ``<output>/search.json`` (every trial), ``search.csv`` and ``search.md`` (best first), ``search.png``
(score vs bins and vs fmin per scale, with the reference lines).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from benchmark.common import TARGETS, markdown_table, save_figure_atomic
from benchmark.evaluate import mdx_sdr
from benchmark.oracles import slicq_oracle, stft_oracle
from xumx_slicq import files

SEARCH_SCALES = ("bark", "mel", "cqlog", "vqlog")
DEFAULT = {"scale": "bark", "fbins": 262, "fmin": 32.9}


def sample_params(rng: np.random.Generator, scales: Sequence[str] = SEARCH_SCALES, bins=(10, 300),
                  fmin=(10.0, 130.0)) -> Dict:
    """One random draw: ``{"scale", "fbins" (inclusive range), "fmin" (Hz, 0.1 Hz steps)}``."""
    return {"scale": str(rng.choice(list(scales))), "fbins": int(rng.integers(bins[0], bins[1] + 1)),
            "fmin": round(float(rng.uniform(*fmin)), 1)}


def load_clips(root: str, split: str = "valid", seconds: Optional[float] = 30.0, start: float = 0.0,
               max_tracks: Optional[int] = None, targets: Sequence[str] = TARGETS) -> List[Dict]:
    """Clips of a split: ``[{"track", "mix" (nb_channels, n), "sources" (nb_targets, nb_channels, n)}]`` float32
    tensors, ``seconds`` from ``start`` (whole tracks when ``seconds`` is None)."""
    from xumx_slicq.data import SAMPLE_RATE, list_tracks

    tracks = list_tracks(root, split)
    if max_tracks:
        tracks = tracks[:max_tracks]
    clips = []
    for t in tracks:
        first = min(int(start * SAMPLE_RATE), max(t.nb_frames - 1, 0))
        frames = None if seconds is None else min(int(seconds * SAMPLE_RATE), t.nb_frames - first)
        mix = torch.from_numpy(t.read("mixture", first, frames))  # (nb_channels, n)
        sources = torch.from_numpy(np.stack([t.read(s, first, frames) for s in targets]))  # (nb_targets, ...)
        clips.append({"track": t.name, "mix": mix, "sources": sources})
    return clips


def score_estimates(clips: Sequence[Dict], estimates: Sequence[torch.Tensor], targets: Sequence[str] = TARGETS,
                    bss: bool = False) -> Dict:
    """Scores of one transform's estimates (one ``(nb_targets, nb_channels, n)`` tensor per clip).

    Returns ``{"sdr": mean over targets of the median over tracks, "per_target": {t: dB}, "per_track": {name:
    {t: dB}}}`` and with ``bss`` also ``"bss_sdr"`` (museval median over frames, tracks; mean over targets).
    """
    per_track = {}
    bss_rows = []
    for clip, est in zip(clips, estimates):
        ref = clip["sources"].numpy()
        est = est.numpy()
        per_track[clip["track"]] = {t: mdx_sdr(ref[j], est[j]) for j, t in enumerate(targets)}
        if bss:
            from benchmark.evaluate import bss_eval_track

            # museval wants (nb_targets, nb_timesteps, nb_channels)
            store = bss_eval_track(ref.transpose(0, 2, 1), est.transpose(0, 2, 1), clip["track"], targets)
            bss_rows.append(store.df)
    per_target = {t: float(np.median([v[t] for v in per_track.values()])) for t in targets}
    out = {"sdr": float(np.mean(list(per_target.values()))), "per_target": per_target, "per_track": per_track}
    if bss:
        import pandas as pd

        from benchmark.evaluate import aggregate_frames

        df = pd.concat(bss_rows, ignore_index=True)
        df["score"] = pd.to_numeric(df["score"], errors="coerce")
        out["bss_sdr"] = float(aggregate_frames(df, targets).loc["mean", "SDR"])
    return out


def evaluate_params(params: Dict, clips: Sequence[Dict], max_sllen: int = 262144, bss: bool = False) -> Dict:
    """Build the sliCQT of ``params`` (fmax = Nyquist) and score its mix-phase oracle on ``clips``.

    Returns the trial record: the parameters, ``sllen``, ``trlen``, ``nb_bins``, ``nb_blocks``,
    ``coefs_per_second`` (complex coefficients per second and channel, a cost measure), the scores and
    ``seconds`` taken; ``skipped`` with a reason instead of scores when the slice length is over ``max_sllen``.
    """
    from xumx_slicq.transforms import SliCQT

    record = dict(params)
    t0 = time.perf_counter()
    try:
        slicqt = SliCQT(scale=params["scale"], fbins=params["fbins"], fmin=params["fmin"], fmax=22050.0)
    except ValueError as exc:
        return {**record, "skipped": f"invalid transform: {exc}"}
    coefs = sum(b.nb_bins * b.T for b in slicqt.blocks)  # per slice and channel
    record.update(sllen=slicqt.sllen, trlen=slicqt.trlen, nb_bins=slicqt.nb_bins, nb_blocks=len(slicqt.blocks),
                  coefs_per_second=coefs / (slicqt.sllen / 2 / 44100.0))  # one slice per hop of sllen/2
    if slicqt.sllen > max_sllen:
        return {**record, "skipped": f"slice length {slicqt.sllen} > --max-sllen {max_sllen}"}
    with torch.no_grad():
        estimates = [slicq_oracle(c["mix"], c["sources"], slicqt) for c in clips]
    record.update(score_estimates(clips, estimates, bss=bss))
    record["seconds"] = time.perf_counter() - t0
    return record


def stft_reference(clips: Sequence[Dict], bss: bool = False) -> Dict:
    """The STFT 4096 / 1024 mix-phase oracle on the same clips."""
    t0 = time.perf_counter()
    with torch.no_grad():
        estimates = [stft_oracle("MPI-STFT", c["mix"], c["sources"]) for c in clips]
    return {"name": "STFT 4096/1024", **score_estimates(clips, estimates, bss=bss),
            "seconds": time.perf_counter() - t0}


def run_search(clips: Sequence[Dict], iterations: int = 60, seed: int = 42, max_sllen: int = 262144,
               bss: bool = False, progress: bool = True) -> Dict:
    """The random search: ``{"trials": [...], "stft": {...}, "default": {...}}`` (trials in draw order)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    draws = [sample_params(rng) for _ in range(iterations)]  # all draws first: the sequence depends on seed only
    trials = []
    bar = tqdm(draws, desc="sliCQ search", unit="trial", disable=not progress)
    for i, params in enumerate(bar):
        rec = {"iteration": i, **evaluate_params(params, clips, max_sllen, bss)}
        trials.append(rec)
        if "sdr" in rec:
            bar.set_postfix_str(f"{params['scale']}-{params['fbins']} {params['fmin']} Hz: {rec['sdr']:.2f} dB")
    return {"trials": trials, "stft": stft_reference(clips, bss),
            "default": {"name": "Bark-262 (default)", **evaluate_params(DEFAULT, clips, max_sllen, bss)}}


def results_table(result: Dict) -> str:
    """Markdown: reference lines, then the scored trials best first, then the skipped ones."""
    has_bss = "bss_sdr" in result["stft"]
    header = ["#", "scale", "bins", "fmin Hz", "sllen", "blocks", "coef/s", "SDR", *TARGETS]
    if has_bss:
        header.append("BSS SDR")

    def row(label, r):
        fmin = f"{r['fmin']:.1f}" if "fmin" in r else "–"
        out = [label, r.get("scale", "–"), r.get("fbins", "–"), fmin, r.get("sllen", "–"),
               r.get("nb_blocks", "–"), f"{r['coefs_per_second']:.0f}" if "coefs_per_second" in r else "–",
               r.get("sdr", float("nan")), *[r.get("per_target", {}).get(t, float("nan")) for t in TARGETS]]
        return out + ([r.get("bss_sdr", float("nan"))] if has_bss else [])

    scored = sorted((t for t in result["trials"] if "sdr" in t), key=lambda t: -t["sdr"])
    rows = [row("STFT 4096/1024 (reference)", {**result["stft"], "coefs_per_second": 2049 * 44100 / 1024}),
            row("Bark-262 default", result["default"])]
    rows += [row(str(t["iteration"]), t) for t in scored]
    text = markdown_table(header, rows)
    skipped = [t for t in result["trials"] if "skipped" in t]
    if skipped:
        text += "\nSkipped: " + "; ".join(f"#{t['iteration']} {t['scale']}-{t['fbins']} {t['fmin']} Hz "
                                           f"({t['skipped']})" for t in skipped) + "\n"
    return text


def plot(result: Dict, path: str) -> None:
    """Scatter plots of the trials' SDR against bins and against fmin, coloured by scale, with reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [t for t in result["trials"] if "sdr" in t]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    colours = dict(zip(SEARCH_SCALES, ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")))
    for ax, key, label in ((axes[0], "fbins", "bins"), (axes[1], "fmin", "fmin (Hz)")):
        for scale in SEARCH_SCALES:
            pts = [t for t in scored if t["scale"] == scale]
            if pts:
                ax.scatter([t[key] for t in pts], [t["sdr"] for t in pts], s=22, color=colours[scale], label=scale,
                           alpha=0.85)
        ax.axhline(result["stft"]["sdr"], ls="--", color="#d62728", lw=1,
                   label=f"STFT 4096/1024 ({result['stft']['sdr']:.2f} dB)")
        if "sdr" in result["default"]:
            ax.axhline(result["default"]["sdr"], ls=":", color="k", lw=1,
                       label=f"Bark-262 default ({result['default']['sdr']:.2f} dB)")
            ax.plot([DEFAULT[key]], [result["default"]["sdr"]], "k*", ms=10)
        if scored:
            best = max(scored, key=lambda t: t["sdr"])
            ax.annotate(f"best: {best['scale']}-{best['fbins']}, {best['fmin']} Hz", (best[key], best["sdr"]),
                        textcoords="offset points", xytext=(6, -12), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mix-phase oracle SDR (dB)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    n_tracks = len(result["stft"]["per_track"])
    fig.suptitle(f"random sliCQ search: {len(scored)} transforms scored on {n_tracks} clips "
                 f"(skipped {len(result['trials']) - len(scored)})", fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def write_csv(result: Dict, path: pathlib.Path) -> None:
    """One row per trial (best first), plus the two reference rows."""
    import pandas as pd

    rows = []
    for name, r in (("stft-4096-1024", result["stft"]), ("bark-262-default", result["default"])):
        rows.append({"iteration": name, **{k: v for k, v in r.items() if k not in ("per_track", "per_target", "name")},
                     **{f"sdr_{t}": r.get("per_target", {}).get(t) for t in TARGETS}})
    for t in sorted(result["trials"], key=lambda t: -t.get("sdr", -math.inf)):
        rows.append({**{k: v for k, v in t.items() if k not in ("per_track", "per_target")},
                     **{f"sdr_{x}": t.get("per_target", {}).get(x) for x in TARGETS}})
    files.write_text(path, pd.DataFrame(rows).to_csv(index=False))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="dataset root in MUSDB18-HQ layout (required unless --replot)")
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"), help="tracks scored (valid)")
    parser.add_argument("--iterations", type=int, default=60, help="random draws (60)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per track (30; 0 = whole tracks)")
    parser.add_argument("--start", type=float, default=0.0, help="clip start in seconds (0)")
    parser.add_argument("--max-tracks", type=int, help="use only the first N tracks of the split")
    parser.add_argument("--max-sllen", type=int, default=262144, help="skip transforms with longer slices (262144)")
    parser.add_argument("--bss", action="store_true", help="also BSS Eval v4 median SDR (slow)")
    parser.add_argument("--output", default="benchmark/results/search",
                        help="output folder (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw search.md / search.csv / search.png from <output>/search.json")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.output)
    if args.replot:
        import json

        result = json.loads((out / "search.json").read_text())
        write_csv(result, out / "search.csv")
        files.write_text(out / "search.md", results_table(result))
        plot(result, str(out / "search.png"))
        print(f"redrew {out}/search.md, search.csv, search.png")
        return 0
    if not args.root:
        parser.error("--root is required")
    clips = load_clips(args.root, args.split, args.seconds or None, args.start, args.max_tracks)
    result = run_search(clips, args.iterations, args.seed, args.max_sllen, args.bss, not args.no_progress)
    result["settings"] = {"root": args.root, "split": args.split, "tracks": [c["track"] for c in clips],
                          "seconds": args.seconds, "start": args.start, "iterations": args.iterations,
                          "seed": args.seed, "max_sllen": args.max_sllen,
                          "command": "python -m benchmark search " + " ".join(argv if argv is not None else sys.argv[1:])}
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / "search.json", result)
    write_csv(result, out / "search.csv")
    table = results_table(result)
    files.write_text(out / "search.md", table)
    plot(result, str(out / "search.png"))
    print(table)
    print(f"wrote {out}/search.json, search.csv, search.md, search.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
