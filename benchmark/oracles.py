"""Oracle estimates (they use the true sources): the floors and ceilings of every comparison.

    python -m benchmark oracles --root DIR --output out/oracles [--methods MIX IRM1 IRM2 MPI-STFT MPI-sliCQ]

* ``MIX``: the mixture itself as every target's estimate (the floor).
* ``IRM1`` / ``IRM2``: ideal ratio masks ``|S_j|^p / sum_k |S_k|^p`` (p = 1 magnitude, p = 2 power) on the
  mixture's STFT (4096 / 1024, Hann), inverted.
* ``MPI-STFT``: mix-phase inversion, true target magnitude x mixture phase, STFT 4096 / 1024.
* ``MPI-sliCQ``: the same on the sliCQ transform (``SliCQT()`` defaults: Bark, 262 bins, 32.9 Hz - 22050 Hz),
  the ceiling of any sliCQ magnitude model that keeps the mixture phase.

Estimates go to ``<output>/estimates/<METHOD>/<track>/<target>.wav`` (32-bit float, so no quantisation) and are
then evaluated like any method into ``<output>/eval/<METHOD>/`` (see ``python -m benchmark evaluate``); tracks
already written or evaluated are skipped. ``python -m benchmark boxplot --results <output>/eval/*`` draws them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from benchmark.common import SAMPLE_RATE, TARGETS, PathLike, read_track, track_names
from xumx_slicq import files
from xumx_slicq.transforms import mix_phase

ORACLES = ("MIX", "IRM1", "IRM2", "MPI-STFT", "MPI-sliCQ")
EPS = 1e-10


# --------------------------------------------------------------------------------------------------------------
# Pure functions on tensors
# --------------------------------------------------------------------------------------------------------------


def ratio_mask_estimates(source_specs: torch.Tensor, mix_spec: torch.Tensor, power: float,
                         eps: float = EPS) -> torch.Tensor:
    """Ideal ratio masks applied to the mixture.

    Args:
        source_specs: complex ``(nb_targets, ...)`` spectra of the true sources (any transform, same grid).
        mix_spec: complex ``(...)`` spectrum of the mixture.
        power: mask exponent (1: magnitude ratio, 2: power ratio / "Wiener-like").
    Returns:
        complex ``(nb_targets, ...)``: ``|S_j|^p / (eps + sum_k |S_k|^p) * X``.
    """
    weights = source_specs.abs() ** power  # (nb_targets, ...)
    masks = weights / (eps + weights.sum(dim=0, keepdim=True))  # sum over the target axis
    return masks.to(mix_spec.dtype) * mix_spec.unsqueeze(0)  # broadcast the mixture over targets


def stft_oracle(method: str, mix: torch.Tensor, sources: torch.Tensor, n_fft: int = 4096, n_hop: int = 1024,
                phase: str = "mixture") -> torch.Tensor:
    """An STFT oracle (``IRM1``, ``IRM2``, ``MPI-STFT``) of one track.

    Args:
        method: ``"IRM1"``, ``"IRM2"`` or ``"MPI-STFT"``.
        mix: ``(nb_channels, nb_timesteps)`` mixture.
        sources: ``(nb_targets, nb_channels, nb_timesteps)`` true sources.
        phase: ``"mixture"`` (the oracle) or ``"source"`` (MPI only: each source's own phase, a sanity check
            that must reconstruct the sources exactly).
    Returns:
        ``(nb_targets, nb_channels, nb_timesteps)`` estimates.
    """
    from xumx_slicq.baselines import ISTFT, STFT

    stft, istft = STFT(n_fft, n_hop), ISTFT(n_fft, n_hop)
    length = mix.shape[-1]
    mix_spec = stft(mix)  # (nb_channels, nb_bins, nb_frames)
    src_spec = stft(sources)  # (nb_targets, nb_channels, nb_bins, nb_frames)
    if method in ("IRM1", "IRM2"):
        est = ratio_mask_estimates(src_spec, mix_spec, power=1.0 if method == "IRM1" else 2.0)
    elif method == "MPI-STFT":
        ref = src_spec if phase == "source" else mix_spec.unsqueeze(0)  # (1, ...) broadcasts over targets
        est = mix_phase(src_spec.abs(), ref)
    else:
        raise ValueError(f"unknown STFT oracle {method!r}; expected IRM1, IRM2 or MPI-STFT")
    return istft(est, length=length)


def slicq_oracle(mix: torch.Tensor, sources: torch.Tensor, slicqt=None, phase: str = "mixture") -> torch.Tensor:
    """Mix-phase inversion with the sliCQ transform (``MPI-sliCQ``) of one track.

    Args:
        mix: ``(nb_channels, nb_timesteps)`` mixture.
        sources: ``(nb_targets, nb_channels, nb_timesteps)`` true sources.
        slicqt: a :class:`xumx_slicq.transforms.SliCQT` (default: ``SliCQT()``, Bark-262).
        phase: ``"mixture"`` (the oracle) or ``"source"`` (each source's own phase: exact reconstruction).
    Returns:
        ``(nb_targets, nb_channels, nb_timesteps)`` estimates. Sources are transformed one at a time, so memory
        is that of two transforms of the song.
    """
    from xumx_slicq.transforms import SliCQT

    slicqt = SliCQT() if slicqt is None else slicqt
    length = mix.shape[-1]
    mix_blocks = slicqt(mix[None])  # blocks (1, nb_channels, nb_bins_b, nb_slices, T_b)
    out = []
    for source in sources:
        src_blocks = slicqt(source[None])
        refs = src_blocks if phase == "source" else mix_blocks
        est = [mix_phase(s.abs(), r) for s, r in zip(src_blocks, refs)]
        out.append(slicqt.inverse(est, length)[0])  # (nb_channels, nb_timesteps)
    return torch.stack(out)


def oracle_estimates(method: str, mix: torch.Tensor, sources: torch.Tensor, slicqt=None) -> torch.Tensor:
    """Any oracle of :data:`ORACLES`: ``(nb_channels, n)`` mixture, ``(nb_targets, nb_channels, n)`` sources ->
    ``(nb_targets, nb_channels, n)`` estimates."""
    if method == "MIX":
        return mix.unsqueeze(0).expand_as(sources).clone()  # (nb_targets, nb_channels, n)
    if method == "MPI-sliCQ":
        return slicq_oracle(mix, sources, slicqt)
    if method in ("IRM1", "IRM2", "MPI-STFT"):
        return stft_oracle(method, mix, sources)
    raise ValueError(f"unknown oracle {method!r}; expected one of {', '.join(ORACLES)}")


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def write_oracle_track(method: str, track_dir: PathLike, out_dir: PathLike, targets: Sequence[str] = TARGETS,
                       slicqt=None) -> Dict[str, pathlib.Path]:
    """Compute one oracle for one track folder and write ``<out_dir>/<target>.wav`` (float WAV, atomic)."""
    import soundfile as sf

    audio = read_track(track_dir, targets)  # each (nb_timesteps, nb_channels)
    mix = torch.from_numpy(audio["mixture"].T.copy())  # (nb_channels, nb_timesteps)
    sources = torch.from_numpy(np.stack([audio[t].T for t in targets]))  # (nb_targets, nb_channels, nb_timesteps)
    with torch.no_grad():
        est = oracle_estimates(method, mix, sources, slicqt).numpy()
    paths = {}
    for j, target in enumerate(targets):
        paths[target] = pathlib.Path(out_dir) / f"{target}.wav"
        with files.atomic_path(paths[target]) as tmp:
            sf.write(tmp, est[j].T, SAMPLE_RATE, subtype="FLOAT")  # (nb_timesteps, nb_channels)
    return paths


def run_oracles(root: PathLike, output: PathLike, methods: Sequence[str] = ORACLES, subset: str = "test",
                targets: Sequence[str] = TARGETS, tracks: Optional[Sequence[str]] = None, evaluate: bool = True,
                jobs: int = 1, progress: bool = True) -> Dict[str, object]:
    """Write the estimates of every oracle and track (skipping existing ones), then evaluate each oracle.

    Returns ``{method: aggregate table}`` (or ``{method: estimates folder}`` without ``evaluate``).
    """
    from tqdm import tqdm

    from xumx_slicq.transforms import SliCQT

    bad = [m for m in methods if m not in ORACLES]
    if bad:
        raise ValueError(f"unknown oracle(s) {', '.join(bad)}; expected some of {', '.join(ORACLES)}")
    output = pathlib.Path(output)
    names = track_names(root, subset, tracks)
    slicqt = SliCQT() if "MPI-sliCQ" in methods else None
    jobs_todo = [(m, n) for m in methods for n in names
                 if not all((output / "estimates" / m / n / f"{t}.wav").is_file() for t in targets)]
    for m, n in tqdm(jobs_todo, desc="oracle estimates", unit="track", disable=not progress):
        write_oracle_track(m, pathlib.Path(root) / subset / n, output / "estimates" / m / n, targets, slicqt)
    results: Dict[str, object] = {}
    for m in methods:
        if evaluate:
            from benchmark.evaluate import evaluate_dir

            results[m] = evaluate_dir(root, output / "estimates" / m, output / "eval" / m, m, subset, targets,
                                      names, jobs, oracle=True, progress=progress)
        else:
            results[m] = output / "estimates" / m
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark oracles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="dataset root in MUSDB18-HQ layout")
    parser.add_argument("--subset", default="test", help="subset folder of the root (test)")
    parser.add_argument("--output", required=True, help="folder for estimates/ and eval/")
    parser.add_argument("--methods", nargs="+", default=list(ORACLES), choices=ORACLES, 
                        help="oracles to run (default: all, %(default)s)")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="targets (default: %(default)s)")
    parser.add_argument("--tracks", nargs="+", help="only these tracks")
    parser.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                        help="evaluate the estimates (BSS Eval + MDX SDR; default on)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="tracks evaluated in parallel (processes; default: 4 or the CPU count if lower)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    results = run_oracles(args.root, args.output, args.methods, args.subset, args.targets, args.tracks,
                          args.evaluate, args.jobs, progress=not args.no_progress)
    if args.evaluate:
        from benchmark.evaluate import compare

        dirs = [pathlib.Path(args.output) / "eval" / m for m in args.methods]
        table = compare(dirs, pathlib.Path(args.output) / "oracles")
        print(table.to_string(float_format=lambda v: f"{v:.2f}"))
        print(f"wrote {args.output}/oracles.csv and oracles.md")
    else:
        for m, path in results.items():
            print(f"{m}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
