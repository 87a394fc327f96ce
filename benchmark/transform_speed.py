"""Speed of the sliCQ transform: ours (PyTorch) vs the reference nsgt 0.19 vs torch.stft/istft (4096/1024).

Forward + inverse of the same stereo signal, after a warm-up, best and median of several repeats.
Prints a table and writes ``<output>/transform_speed.json`` and ``.csv``.

    python -m benchmark.transform_speed --seconds 30 --output benchmark/results
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from xumx_slicq import files
from xumx_slicq.audio import demo_audio
from xumx_slicq.timing import time_calls
from xumx_slicq.transforms import SliCQT


def _time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> List[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (:func:`xumx_slicq.timing.time_calls`), after a warm-up call
    unless ``warmup`` is False (then the first call is one of the ``repeats``)."""
    if warmup:
        return time_calls(fn, repeats).wall_s
    timing = time_calls(fn, repeats - 1)
    return [timing.first_s, *timing.wall_s]


def _load_audio(path: Optional[str], seconds: float, rate: int) -> np.ndarray:
    """(nb_channels, nb_timesteps) float64: a file's first seconds, or the demo chord
    (:func:`xumx_slicq.audio.demo_audio` without demo songs)."""
    if path:
        import soundfile as sf

        audio, file_rate = sf.read(path, dtype="float64", always_2d=True, frames=int(seconds * rate))
        if file_rate != rate:
            raise SystemExit(f"error: {path} is {file_rate} Hz; this benchmark needs {rate} Hz")
        return np.ascontiguousarray(audio.T)
    audio, _ = demo_audio(seconds, root=None)  # (nb_timesteps, 2) float32 at 44.1 kHz
    return np.ascontiguousarray(audio.T, dtype=np.float64)


def run(seconds: float, repeats: int, audio_path: Optional[str], with_reference: bool, threads: int) -> Dict:
    torch.set_num_threads(threads)
    rate = 44100
    audio = _load_audio(audio_path, seconds, rate)
    length = audio.shape[-1]
    x32 = torch.from_numpy(audio).float()[None]  # (1, nb_channels, nb_timesteps)
    slicqt = SliCQT()  # Bark-262, 32.9 Hz - 22050 Hz, sllen 18060, trlen 4516

    results: Dict[str, Dict] = {}

    blocks = slicqt(x32)
    fwd = _time(lambda: slicqt(x32), repeats)
    inv = _time(lambda: slicqt.inverse(blocks, length), repeats)
    both = _time(lambda: slicqt.inverse(slicqt(x32), length), repeats)
    err = (slicqt.inverse(blocks, length) - x32).pow(2).mean().sqrt() / x32.pow(2).mean().sqrt()
    results["xumx_slicq"] = dict(forward_s=min(fwd), inverse_s=min(inv), total_s=min(both),
                                 total_median_s=statistics.median(both), rel_rmse=err.item(), dtype="float32")

    window = torch.hann_window(4096)

    def stft_roundtrip():
        spec = torch.stft(x32[0], 4096, 1024, window=window, return_complex=True)
        return torch.istft(spec, 4096, 1024, window=window, length=length)

    spec = torch.stft(x32[0], 4096, 1024, window=window, return_complex=True)
    results["torch_stft_4096_1024"] = dict(
        forward_s=min(_time(lambda: torch.stft(x32[0], 4096, 1024, window=window, return_complex=True), repeats)),
        inverse_s=min(_time(lambda: torch.istft(spec, 4096, 1024, window=window, length=length), repeats)),
        total_s=min(both_stft := _time(stft_roundtrip, repeats)), total_median_s=statistics.median(both_stft),
        dtype="float32",
    )

    if with_reference:
        from benchmark import reference_nsgt

        ref = reference_nsgt.load()
        nsgt = ref.NSGT_sliced(ref.make_scale("bark", 262, 32.9, 22050.0), slicqt.sllen, slicqt.trlen, rate,
                               real=True, matrixform=False, multichannel=True)

        def ref_forward():
            return list(nsgt.forward([audio]))

        def ref_inverse(coefs):
            return np.concatenate([np.asarray(s) for s in nsgt.backward(coefs)], axis=-1)[:, :length]

        coefs = ref_forward()
        rf = _time(ref_forward, max(1, repeats // 3))
        ri = _time(lambda: ref_inverse(coefs), max(1, repeats // 3))
        rb = _time(lambda: ref_inverse(ref_forward()), max(1, repeats // 3), warmup=False)
        rec = ref_inverse(coefs)
        results["nsgt_0.19"] = dict(forward_s=min(rf), inverse_s=min(ri), total_s=min(rb),
                                    total_median_s=statistics.median(rb),
                                    rel_rmse=float(np.sqrt(np.mean((rec - audio) ** 2) / np.mean(audio**2))),
                                    dtype="float64")

    ours = results["xumx_slicq"]["total_s"]
    summary = {
        "audio_seconds": length / rate,
        "channels": int(audio.shape[0]),
        "threads": threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "repeats": repeats,
        "results": results,
        "speedup_vs_nsgt": (results["nsgt_0.19"]["total_s"] / ours) if with_reference else None,
        "ratio_vs_stft": ours / results["torch_stft_4096_1024"]["total_s"],
        "real_time_factor": ours / (length / rate),
    }
    return summary


def _write(summary: Dict, output: str) -> None:
    files.write_json(os.path.join(output, "transform_speed.json"), summary)
    with files.atomic_path(os.path.join(output, "transform_speed.csv")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "forward_s", "inverse_s", "total_s", "total_median_s", "audio_seconds"])
        for name, r in summary["results"].items():
            writer.writerow([name, r["forward_s"], r["inverse_s"], r["total_s"], r["total_median_s"],
                             summary["audio_seconds"]])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.transform_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length (default 30)")
    parser.add_argument("--audio", help="a 44.1 kHz file to use instead of a synthetic stereo signal")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per transform (default 5)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's choice, %(default)s here)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also time nsgt 0.19 (needs it installed; default on)")
    parser.add_argument("--output", default="benchmark/results",
                        help="folder for transform_speed.json/.csv (default %(default)s)")
    args = parser.parse_args(argv)
    summary = run(args.seconds, args.repeats, args.audio, args.reference, args.threads)
    print(f"{summary['audio_seconds']:.1f} s stereo, Bark-262, {summary['threads']} threads, torch {summary['torch']}")
    print(f"{'method':<24}{'forward s':>12}{'inverse s':>12}{'fwd+inv s':>12}{'median s':>12}")
    for name, r in summary["results"].items():
        print(f"{name:<24}{r['forward_s']:>12.4f}{r['inverse_s']:>12.4f}{r['total_s']:>12.4f}"
              f"{r['total_median_s']:>12.4f}")
    if summary["speedup_vs_nsgt"]:
        print(f"xumx_slicq is {summary['speedup_vs_nsgt']:.1f}x faster than nsgt 0.19 (forward + inverse)")
    print(f"xumx_slicq / torch STFT time ratio: {summary['ratio_vs_stft']:.2f}; "
          f"real-time factor {summary['real_time_factor']:.4f}")
    _write(summary, args.output)
    print(f"wrote {os.path.join(args.output, 'transform_speed.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
