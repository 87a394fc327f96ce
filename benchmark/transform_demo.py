"""sliCQ transform demo on an audio file: block layout, forward + inverse timing and reconstruction error, and a
figure of the sliCQ magnitude next to the STFT (4096/1024).

    python -m benchmark transform-demo song.wav --plot slicq.png
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from xumx_slicq.transforms import SCALES, SliCQT, overlap_add


def _stft_db(x: np.ndarray, n_fft: int = 4096, hop: int = 1024) -> np.ndarray:
    """STFT magnitude in dB of a mono signal ``(nb_timesteps,)``: ``(n_fft // 2 + 1, nb_frames)``."""
    spec = torch.stft(
        torch.from_numpy(x), n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), return_complex=True
    )
    return 20 * np.log10(spec.abs().numpy() + 1e-8)


def _slicq_image(blocks: List[Tensor], nb_frames: int) -> np.ndarray:
    """Every block's overlap-add view resampled to ``nb_frames`` columns, stacked by bin: ``(nb_bins, frames)``."""
    rows = []
    for c in blocks:
        view = overlap_add(c.abs())[0, 0].numpy()  # (nb_bins_b, frames_b)
        src = np.linspace(0, 1, view.shape[-1])
        dst = np.linspace(0, 1, nb_frames)
        rows.append(np.stack([np.interp(dst, src, r) for r in view]))
    return 20 * np.log10(np.concatenate(rows) + 1e-8)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark transform-demo",
        description="sliCQ transform demo: forward + inverse of an audio file, timing and reconstruction error, "
        "and a plot of the sliCQ magnitude next to the STFT (4096/1024).",
    )
    parser.add_argument("audio", help="audio file (any format soundfile reads)")
    parser.add_argument("--plot", metavar="PNG", help="write the sliCQ vs STFT figure here")
    parser.add_argument("--scale", default="bark", choices=SCALES, help="frequency scale (default %(default)s)")
    parser.add_argument("--fbins", type=int, default=262, help="frequency bins (default %(default)s)")
    parser.add_argument("--fmin", type=float, default=32.9, help="lowest frequency in Hz (default %(default)s)")
    parser.add_argument("--fmax", type=float, default=22050.0,
                        help="highest frequency in Hz (default %(default)s)")
    parser.add_argument("--sllen", type=int, default=None, help="slice length (default: automatic)")
    parser.add_argument("--seconds", type=float, default=None, help="only use the first N seconds")
    args = parser.parse_args(argv)

    import soundfile as sf

    try:
        audio, rate = sf.read(args.audio, dtype="float64", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - report any decoding problem with the file name
        print(f"error: cannot read {args.audio}: {exc}", file=sys.stderr)
        return 1
    if args.seconds:
        audio = audio[: int(args.seconds * rate)]
    if len(audio) == 0:
        print(f"error: {args.audio} holds no samples", file=sys.stderr)
        return 1
    fmax = min(args.fmax, rate / 2)
    slicqt = SliCQT(args.scale, args.fbins, args.fmin, fmax, rate, sllen=args.sllen)
    x = torch.from_numpy(audio.T.copy())[None]  # (1, nb_channels, nb_timesteps)
    slicqt.inverse(slicqt(x.float()), x.shape[-1])  # warm-up (FFT plans, allocations)
    t0 = time.perf_counter()
    blocks = slicqt(x.float())
    t1 = time.perf_counter()
    y = slicqt.inverse(blocks, x.shape[-1])
    t2 = time.perf_counter()
    blocks64 = slicqt(x)
    err64 = (slicqt.inverse(blocks64, x.shape[-1]) - x).abs().max().item()
    err32 = ((y.double() - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt().clamp_min(1e-12)).item()
    print(f"{args.audio}: {x.shape[-1] / rate:.2f} s, {x.shape[1]} channel(s), {rate} Hz")
    print(slicqt)
    print(f"sllen {slicqt.sllen}, trlen {slicqt.trlen}, {slicqt.nb_bins} bins in {len(slicqt.blocks)} blocks, "
          f"T from {min(b.T for b in slicqt.blocks)} to {slicqt.max_T}, {slicqt.nb_slices(x.shape[-1])} slices")
    print(f"forward {t1 - t0:.3f} s, inverse {t2 - t1:.3f} s (float32); reconstruction max error float64 "
          f"{err64:.2e}, relative RMSE float32 {err32:.2e}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        mono = audio.mean(axis=1)
        stft = _stft_db(mono)
        img = _slicq_image([b.mean(dim=1, keepdim=True) for b in blocks64], stft.shape[-1])
        duration = len(mono) / rate
        fig, axes = plt.subplots(1, 2, figsize=(14, 5), constrained_layout=True)
        vmax = max(stft.max(), img.max())
        freqs = slicqt.frequencies.numpy()
        axes[0].pcolormesh(np.linspace(0, duration, img.shape[1]), np.arange(len(freqs)), img,
                           vmin=vmax - 90, vmax=vmax, cmap="magma", shading="auto")
        ticks = np.linspace(0, len(freqs) - 1, 8).astype(int)
        axes[0].set_yticks(ticks, [f"{freqs[t]:.0f}" for t in ticks])
        axes[0].set_title(f"sliCQT magnitude ({args.scale}, {slicqt.nb_bins} bins, sllen {slicqt.sllen})")
        axes[0].set_ylabel("centre frequency (Hz, one row per bin)")
        stft_freqs = np.fft.rfftfreq(4096, 1 / rate)
        axes[1].pcolormesh(np.linspace(0, duration, stft.shape[1]), stft_freqs, stft,
                           vmin=vmax - 90, vmax=vmax, cmap="magma", shading="auto")
        axes[1].set_yscale("log")
        axes[1].set_ylim(max(args.fmin, stft_freqs[1]), rate / 2)
        axes[1].set_title("STFT magnitude (4096 / 1024)")
        axes[1].set_ylabel("frequency (Hz)")
        for ax in axes:
            ax.set_xlabel("time (s)")
        fig.savefig(args.plot, dpi=80)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
