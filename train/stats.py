"""`python -m train.stats`: per-stem statistics of a multitrack corpus, optionally compared with other corpora.

For every track and every file (mixture, drums, bass, other, vocals) of a MUSDB18-HQ-layout root:

- ``rms_dbfs``: RMS over the whole file and both channels, in dB relative to a full-scale square wave
  (a full-scale sine reads -3.01 dBFS);
- ``active_rms_dbfs``: the same RMS over only the 1 s frames that are not silent (loudness while playing);
- ``lufs``: integrated loudness after ITU-R BS.1770 (K-weighting, 400 ms blocks with 75 % overlap, absolute gate
  -70 LUFS, relative gate -10 LU), implemented here from the standard's description; NaN for silent files;
- ``silence_ratio``: fraction of non-overlapping 1 s frames whose RMS is below ``--silence-db`` (default -60 dBFS);
- ``centroid_hz``: median spectral centroid (magnitude-weighted mean frequency) of the mono downmix over
  2048-sample frames (hop 1024) that are within 60 dB of the file's loudest frame.

Outputs (under --output): ``stats_tracks.csv`` (one row per corpus/track/stem), ``stats_summary.json``
(median and quartiles per corpus and stem), ``stats.png`` (distributions per stem, one colour per corpus),
and a table on stdout.

Example::

    python -m train.stats --root data --compare /path/to/musdb18hq --subset test --output out/stats
    python -m train.stats --root corpus_v1 --label v1 --compare corpus_v2 --compare-label v2 \
        [--compare /path/to/musdb18hq --compare-label MUSDB18-HQ] --output out/stats_v1_v2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from xumx_slicq import files

FILES = ("mixture", "drums", "bass", "other", "vocals")
METRICS = ("rms_dbfs", "active_rms_dbfs", "lufs", "silence_ratio", "centroid_hz")


def list_tracks(root: str | Path, subset: str) -> list[Path]:
    """Track folders of a MUSDB18-HQ-layout root (folders holding mixture.wav), sorted by subset then name.

    `subset` is "train", "test" or "all".
    """
    root = Path(root)
    subsets = ("train", "test") if subset == "all" else (subset,)
    tracks = []
    for name in subsets:
        folder = root / name
        if folder.is_dir():
            tracks += sorted(p for p in folder.iterdir() if (p / "mixture.wav").is_file())
    return tracks


def k_weighting(sample_rate: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """BS.1770 K-weighting as two biquads [(b, a), (b, a)] for `sample_rate` (shelf, then high-pass).

    Both come from analog prototypes through the bilinear transform with frequency pre-warping; at 48 kHz they
    reproduce the coefficient table printed in the standard.
    """
    # Stage 1: high shelf, +4 dB above ~1.7 kHz (head diffraction).
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    b_shelf = np.array([vh + vb * k / q + k * k, 2 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    a_shelf = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    # Stage 2: second-order high-pass at ~38 Hz (RLB weighting).
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    b_high = np.array([1.0, -2.0, 1.0])
    a_high = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return [(b_shelf, a_shelf), (b_high, a_high)]


def integrated_loudness(x: np.ndarray, sample_rate: float) -> float:
    """BS.1770 integrated loudness (LUFS) of x (nb_samples, nb_channels); NaN when every block is gated out."""
    y = x.astype(np.float64)
    for b, a in k_weighting(sample_rate):
        y = signal.lfilter(b, a, y, axis=0)
    block, hop = int(0.4 * sample_rate), int(0.1 * sample_rate)
    if y.shape[0] < block:
        return float("nan")
    starts = np.arange(0, y.shape[0] - block + 1, hop)
    cumsum = np.concatenate([np.zeros((1, y.shape[1])), np.cumsum(y ** 2, axis=0)])  # (nb_samples + 1, channels)
    power = (cumsum[starts + block] - cumsum[starts]) / block  # (nb_blocks, nb_channels) mean square per block
    total = power.sum(axis=1)  # channel weights are 1 for left/right
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(total)
    gated = total[loud > -70.0]
    if gated.size == 0:
        return float("nan")
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    gated = total[(loud > -70.0) & (loud > relative)]
    return float(-0.691 + 10 * np.log10(gated.mean()))


def _db(power: float) -> float:
    """Mean square -> dBFS (full-scale square wave = 0 dBFS); -inf for silence."""
    return float(10 * np.log10(power)) if power > 0 else float("-inf")


def stem_statistics(x: np.ndarray, sample_rate: float, silence_db: float = -60.0) -> dict[str, float]:
    """Statistics of one file x (nb_samples, nb_channels) with values in [-1, 1]. Keys: METRICS."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    frame = int(sample_rate)
    nb = x.shape[0] // frame
    frames = x[: nb * frame].reshape(nb, frame, x.shape[1])  # (nb_frames, frame, nb_channels)
    frame_power = np.mean(frames ** 2, axis=(1, 2))
    if x.shape[0] > nb * frame and nb == 0:  # shorter than one frame: one partial frame
        frame_power = np.array([np.mean(x ** 2)])
    silent = frame_power < 10 ** (silence_db / 10)
    active = frame_power[~silent]
    mono = x.mean(axis=1)
    n_fft, hop = 2048, 1024
    if mono.shape[0] >= n_fft:
        nb_win = 1 + (mono.shape[0] - n_fft) // hop
        idx = np.arange(n_fft)[None, :] + hop * np.arange(nb_win)[:, None]  # (nb_win, n_fft) sample indices
        spec = np.abs(np.fft.rfft(mono[idx] * np.hanning(n_fft), axis=1))  # (nb_win, n_fft // 2 + 1)
        energy = np.sum(spec ** 2, axis=1)
        keep = energy > energy.max() * 1e-6 if energy.max() > 0 else np.zeros_like(energy, dtype=bool)
        freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
        centroids = (spec[keep] @ freqs) / np.maximum(spec[keep].sum(axis=1), 1e-12)
        centroid = float(np.median(centroids)) if centroids.size else float("nan")
    else:
        centroid = float("nan")
    return {
        "rms_dbfs": _db(float(np.mean(x ** 2))),
        "active_rms_dbfs": _db(float(active.mean())) if active.size else float("-inf"),
        "lufs": integrated_loudness(x, sample_rate),
        "silence_ratio": float(silent.mean()) if silent.size else 1.0,
        "centroid_hz": centroid,
    }


def stem_file_statistics(path: str | Path, label: str, silence_db: float = -60.0) -> list[dict]:
    """Rows {corpus, track, stem, *METRICS} of one MUSDB18 ``.stem.mp4`` file (streams in FILES order), e.g. the
    real excerpt that ships with stempeg; needs stempeg and ffmpeg."""
    try:
        import stempeg
    except ImportError as err:
        raise RuntimeError("reading .stem.mp4 files needs stempeg (pip install musdb==0.4.3)") from err
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such stem file")
    audio, rate = stempeg.read_stems(str(path), dtype=np.float32)  # (nb_streams, nb_samples, nb_channels)
    if audio.ndim != 3 or audio.shape[0] < len(FILES):
        raise RuntimeError(f"{path}: expected {len(FILES)} streams, got an array of shape {audio.shape}")
    name = Path(path).name.removesuffix(".stem.mp4")
    return [{"corpus": label, "track": name, "stem": stem, **stem_statistics(audio[k], rate, silence_db)}
            for k, stem in enumerate(FILES)]


def corpus_statistics(root: str | Path, subset: str, label: str, silence_db: float = -60.0,
                      max_tracks: int | None = None, max_seconds: float | None = None,
                      progress: bool = True) -> list[dict]:
    """Rows {corpus, track, stem, *METRICS} for every track and file of a corpus."""
    tracks = list_tracks(root, subset)
    if not tracks:
        raise FileNotFoundError(f"no tracks (folders with mixture.wav) under {Path(root) / subset}"
                                if subset != "all" else f"no tracks under {root}/train or {root}/test")
    if max_tracks:
        tracks = tracks[:max_tracks]
    rows = []
    for track in tqdm(tracks, desc=f"stats {label}", unit="track", disable=not progress):
        for name in FILES:
            path = track / f"{name}.wav"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing (track {track.name} must have {', '.join(FILES)})")
            info = sf.info(str(path))
            frames = info.frames if max_seconds is None else min(info.frames, int(max_seconds * info.samplerate))
            x, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
            rows.append({"corpus": label, "track": f"{track.parent.name}/{track.name}", "stem": name,
                         **stem_statistics(x, rate, silence_db)})
    return rows


def summarise(rows: list[dict]) -> dict:
    """{corpus: {stem: {metric: {median, q25, q75, mean}}}} ignoring NaN and infinite values."""
    out: dict = {}
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        out[corpus] = {}
        for stem in FILES:
            sel = [r for r in rows if r["corpus"] == corpus and r["stem"] == stem]
            if not sel:
                continue
            entry = {"tracks": len(sel)}
            for metric in METRICS:
                v = np.array([r[metric] for r in sel], dtype=np.float64)
                v = v[np.isfinite(v)]
                entry[metric] = ({"median": float(np.median(v)), "q25": float(np.percentile(v, 25)),
                                  "q75": float(np.percentile(v, 75)), "mean": float(v.mean())}
                                 if v.size else None)
            out[corpus][stem] = entry
    return out


def format_table(summary: dict) -> str:
    """Text table: one line per corpus and stem, medians with [q25, q75]."""
    head = f"{'corpus':<14}{'stem':<9}{'n':>4}  {'RMS dBFS':>20}  {'active dBFS':>20}  {'LUFS':>20}  " \
           f"{'silence':>17}  {'centroid Hz':>22}"
    lines = [head, "-" * len(head)]
    for corpus, stems in summary.items():
        for stem, entry in stems.items():
            cells = []
            for metric, fmt in (("rms_dbfs", "{:.1f}"), ("active_rms_dbfs", "{:.1f}"), ("lufs", "{:.1f}"),
                                ("silence_ratio", "{:.2f}"), ("centroid_hz", "{:.0f}")):
                m = entry[metric]
                cells.append("n/a" if m is None else
                             f"{fmt.format(m['median'])} [{fmt.format(m['q25'])}, {fmt.format(m['q75'])}]")
            lines.append(f"{corpus[:13]:<14}{stem:<9}{entry['tracks']:>4}  {cells[0]:>20}  {cells[1]:>20}  "
                         f"{cells[2]:>20}  {cells[3]:>17}  {cells[4]:>22}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path, title: str) -> None:
    """Box plots per stem (one colour per corpus) of centroid, active RMS, RMS and silence ratio -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    panels = (("centroid_hz", "spectral centroid (Hz, log)"), ("rms_dbfs", "RMS over the whole file (dBFS)"),
              ("active_rms_dbfs", "RMS of non-silent 1 s frames (dBFS)"), ("silence_ratio", "silent 1 s frames"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / len(corpora)
    for ax, (metric, label) in zip(axes, panels):
        for ci, corpus in enumerate(corpora):
            data, positions = [], []
            for si, stem in enumerate(FILES):
                v = np.array([r[metric] for r in rows if r["corpus"] == corpus and r["stem"] == stem], float)
                data.append(v[np.isfinite(v)])
                positions.append(si + (ci - (len(corpora) - 1) / 2) * width)
            box = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False)
            for patch in box["boxes"]:
                patch.set_facecolor(colours[ci % len(colours)])
                patch.set_alpha(0.45)
            for pos, v in zip(positions, data):  # every track as a dot
                jitter = np.linspace(-width * 0.25, width * 0.25, max(len(v), 1))[: len(v)]
                ax.plot(pos + jitter, v, ".", color=colours[ci % len(colours)], markersize=3)
        ax.set_xticks(range(len(FILES)))
        ax.set_xticklabels(FILES, rotation=30)
        ax.set_title(label, fontsize=10)
        if metric == "centroid_hz":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % len(colours)], alpha=0.45) for i in range(len(corpora))]
    fig.legend(handles, corpora, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m train.stats",
        description="Per-stem loudness (RMS dBFS and BS.1770 LUFS), silence ratio and spectral centroid of a "
                    "MUSDB18-HQ-layout corpus, optionally compared with another corpus.")
    p.add_argument("--root", required=True, help="corpus root with {train,test}/<track>/{mixture,...}.wav")
    p.add_argument("--compare", action="append", default=[],
                   help="another corpus root to compare with, repeatable (e.g. --compare v2 --compare musdb18hq; "
                        "default: none)")
    p.add_argument("--compare-stem", action="append", default=[],
                   help="a MUSDB18 .stem.mp4 file as one more corpus, repeatable (e.g. stempeg's bundled real "
                        "excerpt 'The Easton Ellises - Falcon 69.stem.mp4'; default: none)")
    p.add_argument("--subset", choices=("train", "test", "all"), default="all", help="subset(s) to read (default all)")
    p.add_argument("--compare-subset", choices=("train", "test", "all"), default=None,
                   help="subset of the compared corpora (default: same as --subset)")
    p.add_argument("--label", default=None, help="name of the first corpus in outputs (default: folder name)")
    p.add_argument("--compare-label", action="append", default=[],
                   help="name of each compared corpus, in --compare order (default: folder names)")
    p.add_argument("--output", default="out/stats", help="output folder for CSV, JSON and PNG (default out/stats)")
    p.add_argument("--png", default="stats.png", help="file name of the figure inside --output (default stats.png)")
    p.add_argument("--silence-db", type=float, default=-60.0, help="silence threshold per 1 s frame (dBFS, default -60)")
    p.add_argument("--max-tracks", type=int, default=None, help="read at most this many tracks per corpus")
    p.add_argument("--max-seconds", type=float, default=None, help="read at most this many seconds per file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars (default on)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    corpora = [(args.root, args.subset, args.label or Path(args.root).resolve().name)]
    if len(args.compare_label) > len(args.compare):
        print("error: more --compare-label than --compare", file=sys.stderr)
        return 2
    for i, root in enumerate(args.compare):
        label = args.compare_label[i] if i < len(args.compare_label) else Path(root).resolve().name
        while label in [c[2] for c in corpora]:
            label += " (compare)"
        corpora.append((root, args.compare_subset or args.subset, label))
    rows = []
    try:
        for root, subset, label in corpora:
            rows += corpus_statistics(root, subset, label, args.silence_db, args.max_tracks, args.max_seconds,
                                      args.progress)
        for path in args.compare_stem:
            rows += stem_file_statistics(path, f"real: {Path(path).name.removesuffix('.stem.mp4')}"[:40],
                                         args.silence_db)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    header = ["corpus", "track", "stem", *METRICS]
    lines = [",".join(header)] + [",".join(f'"{r[h]}"' if h in ("corpus", "track") else f"{r[h]}" for h in header)
                                  for r in rows]
    files.write_text(out / "stats_tracks.csv", "\n".join(lines) + "\n")
    doc = {"silence_db": args.silence_db, "corpora": [{"root": str(Path(r).resolve()), "subset": s, "label": l}
                                                      for r, s, l in corpora], "summary": summary,
           "stem_files": [str(Path(p).resolve()) for p in args.compare_stem]}
    files.write_text(out / "stats_summary.json", json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n")
    plot(rows, out / args.png, " vs ".join(l for _, _, l in corpora) + f"  ({len(rows) // len(FILES)} tracks)")
    print(format_table(summary))
    print(f"wrote {out / 'stats_tracks.csv'}, {out / 'stats_summary.json'}, {out / args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
