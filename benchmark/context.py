"""How much chunk context separation needs: chunked vs unchunked output and MDX SDR over context / cross-fade
settings.

    python -m benchmark context --root data/synth/test --settings 3.07/3.07 1.02/0.41 --output out/context.json

For every song of ``--root`` (``<song>/mixture.wav`` and, when present, its stems), separates the mixture once
unchunked (one piece, the reference) and once per setting ``CONTEXT/FADE`` (seconds; the context is rounded to
the slice hop, 0.2048 s) in chunks of ``--chunk-seconds``, through :class:`xumx_slicq.separator.Separator` with
the shipped model (Wiener-EM as ``--wiener`` / ``--niter``). Per setting and song it records:

* ``deviation_db``: SDR of the chunked output against the unchunked one (all targets; higher = closer; float
  error is ~130 dB), and ``max_rel``: ``max |chunked - unchunked| / max |unchunked|``;
* ``mdx_sdr``: the MDX SDR of the chunked output against the true stems (mean of the targets), next to the
  unchunked output's;
* ``processed_ratio``: input samples processed (context included) / song samples: the cost of the context.

SDR is a quality number: it does not depend on the machine's load. ``--wiener off`` isolates the transform and
the network (exact once ``context - fade / 2`` covers their reach, :func:`xumx_slicq.flops.receptive_field`);
with Wiener-EM the chunked output never equals the unchunked one exactly, because its spatial covariances are
sums over a whole chunk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmark.evaluate import mdx_sdr
from xumx_slicq import files

SR = 44100


def parse_setting(text: str) -> Tuple[float, Optional[float]]:
    """``"CONTEXT/FADE"`` or ``"CONTEXT"`` (fade = context) -> ``(context_seconds, fade_seconds or None)``."""
    try:
        if "/" in text:
            c, f = text.split("/", 1)
            return float(c), float(f)
        return float(text), None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"setting {text!r}: expected CONTEXT or CONTEXT/FADE in seconds") from exc


def load_song(folder: str, targets: Sequence[str], seconds: float = 0.0):
    """``(mixture (1, nb_channels, n) float32 tensor, {target: (n, nb_channels) array} or None)``."""
    import soundfile as sf
    import torch

    mix, rate = sf.read(os.path.join(folder, "mixture.wav"), dtype="float32", always_2d=True)
    if rate != SR:
        raise ValueError(f"{folder}/mixture.wav: expected {SR} Hz, got {rate}")
    n = len(mix) if seconds <= 0 else min(len(mix), int(seconds * SR))
    stems = {}
    for t in targets:
        path = os.path.join(folder, f"{t}.wav")
        if not os.path.isfile(path):
            stems = None
            break
        stems[t] = sf.read(path, dtype="float32", always_2d=True)[0][:n]
    return torch.from_numpy(np.ascontiguousarray(mix[:n].T))[None], stems


def evaluate_song(model, mixture, stems, settings: Sequence[Tuple[float, Optional[float]]], chunk_seconds: float,
                  wiener: str, niter: int) -> Dict:
    """The reference (unchunked) and every setting on one song; see the module docstring for the keys."""
    from xumx_slicq.separator import Separator

    length = mixture.shape[-1]
    whole_s = length / SR + 1.0
    # the reference: one piece, with as much silence around the song as any setting gives it (the network's
    # output near the song's edges depends on the zeros it sees there)
    edge = max([3.0] + [c for c, _ in settings])
    ref_sep = Separator(model, niter=niter, wiener=wiener, chunk_seconds=whole_s, context_seconds=edge)
    ref = ref_sep(mixture)[0].numpy()  # (nb_targets, nb_channels, n)
    targets = ref_sep.targets

    def sdr_vs_truth(est: np.ndarray) -> Optional[float]:
        if stems is None:
            return None
        return statistics.fmean(mdx_sdr(stems[t], est[j].T) for j, t in enumerate(targets))

    out = {"seconds": length / SR, "unchunked_mdx_sdr": sdr_vs_truth(ref), "settings": []}
    for context, fade in settings:
        sep = Separator(model, niter=niter, wiener=wiener, chunk_seconds=chunk_seconds, context_seconds=context,
                        fade_seconds=fade)
        sep.reset_stats()
        est = sep(mixture)[0].numpy()
        diff = est - ref
        out["settings"].append({
            "context_s": sep.context / SR, "fade_s": sep.fade / SR,
            "margin_s": (sep.context - sep.fade / 2) / SR,
            "deviation_db": mdx_sdr(ref, est), "max_rel": float(np.abs(diff).max() / max(np.abs(ref).max(), 1e-12)),
            "mdx_sdr": sdr_vs_truth(est),
            "processed_ratio": sum(sep.stats["segment_samples"]) / length})
    return out


def summarise(songs: Dict[str, Dict]) -> List[Dict]:
    """Per setting: mean / min deviation, mean MDX SDR and its change vs unchunked, mean processed ratio."""
    first = next(iter(songs.values()))
    rows = []
    for i, s in enumerate(first["settings"]):
        per = [song["settings"][i] for song in songs.values()]
        row = {"context_s": s["context_s"], "fade_s": s["fade_s"], "margin_s": s["margin_s"],
               "deviation_db_mean": statistics.fmean(p["deviation_db"] for p in per),
               "deviation_db_min": min(p["deviation_db"] for p in per),
               "max_rel_max": max(p["max_rel"] for p in per),
               "processed_ratio_mean": statistics.fmean(p["processed_ratio"] for p in per)}
        if all(p["mdx_sdr"] is not None for p in per):
            row["mdx_sdr_mean"] = statistics.fmean(p["mdx_sdr"] for p in per)
            row["unchunked_mdx_sdr_mean"] = statistics.fmean(song["unchunked_mdx_sdr"] for song in songs.values())
            row["mdx_sdr_change_db"] = row["mdx_sdr_mean"] - row["unchunked_mdx_sdr_mean"]
        rows.append(row)
    return rows


def table(rows: List[Dict]) -> str:
    """Markdown table of :func:`summarise`."""
    from benchmark.common import markdown_table

    have_sdr = all("mdx_sdr_mean" in r for r in rows)
    head = ["context s", "fade s", "margin s", "processed / real", "deviation dB (mean)", "deviation dB (min)",
            "max rel. diff"] + (["MDX SDR", "vs unchunked dB"] if have_sdr else [])
    body = [[r["context_s"], r["fade_s"], r["margin_s"], r["processed_ratio_mean"], r["deviation_db_mean"],
             r["deviation_db_min"], f"{r['max_rel_max']:.1e}"]
            + ([r["mdx_sdr_mean"], f"{r['mdx_sdr_change_db']:+.4f}"] if have_sdr else []) for r in rows]
    return markdown_table(head, body, floatfmt=".3f")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark context", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/synth/test",
                        help="folder of <song>/mixture.wav (+ stems for MDX SDR) (default %(default)s)")
    parser.add_argument("--settings", nargs="+", type=parse_setting,
                        default=[parse_setting(s) for s in ("3.07/3.07", "1.64/1.64", "1.02/0.41", "0.82/0.41")],
                        help="CONTEXT/FADE seconds (CONTEXT alone: fade = context) (default 3.07/3.07 1.64/1.64 "
                             "1.02/0.41 0.82/0.41)")
    parser.add_argument("--songs", type=int, default=0, help="first N songs only (default 0: all)")
    parser.add_argument("--seconds", type=float, default=0.0, help="first S seconds of each song (default 0: all)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="chunk length (default 30)")
    parser.add_argument("--wiener", choices=("torch", "numba", "off"), default="numba",
                        help="Wiener-EM backend, or off (mixture phase) (default numba)")
    parser.add_argument("--niter", type=int, default=1, help="Wiener-EM iterations (default 1)")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped pretrained-model/)")
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: torch's)")
    parser.add_argument("--output", default="out/context.json", help="JSON report (default %(default)s)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    from xumx_slicq.checkpoint import load_model

    model, _ = load_model(args.model, arch="xumx-slicq")
    folders = sorted(d for d in os.listdir(args.root) if os.path.isfile(os.path.join(args.root, d, "mixture.wav")))
    if args.songs:
        folders = folders[: args.songs]
    if not folders:
        print(f"error: {args.root}: no <song>/mixture.wav", file=sys.stderr)
        return 2
    niter = 0 if args.wiener == "off" else args.niter
    songs: Dict[str, Dict] = {}
    t0 = time.monotonic()
    for k, name in enumerate(folders):
        mixture, stems = load_song(os.path.join(args.root, name), model.targets, args.seconds)
        songs[name] = evaluate_song(model, mixture, stems, args.settings, args.chunk_seconds, args.wiener, niter)
        best = songs[name]["settings"]
        print(f"[{k + 1}/{len(folders)}] {name} ({songs[name]['seconds']:.0f} s, {time.monotonic() - t0:.0f} s): "
              + ", ".join(f"{s['context_s']:.2f}/{s['fade_s']:.2f}: {s['deviation_db']:.1f} dB" for s in best),
              flush=True)
    rows = summarise(songs)
    report = {"root": args.root, "chunk_seconds": args.chunk_seconds, "wiener": args.wiener, "niter": niter,
              "model": args.model or "pretrained-model", "summary": rows, "songs": songs,
              "command": "python -m benchmark context " + " ".join(sys.argv[1:] if argv is None else argv)}
    files.write_json(args.output, report)
    text = table(rows)
    print(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
