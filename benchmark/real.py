"""Real-music check (report-only): MDX SDR of models on the real MUSDB18 excerpt that ships with ``stempeg``.

    python -m benchmark real --model pretrained-model [--model runs/xyz ...] --output benchmark/results/real

The ``stempeg`` wheel carries ``stempeg/data/The Easton Ellises - Falcon 69.stem.mp4``: 6 s of a MUSDB18 test
track as a 5-stream stem file (AAC), streams in the MUSDB18 order mixture, drums, bass, other, vocals. Each given
model separates the mixture stream; its MDX SDR (``10 log10(sum s^2 / sum (s - s_hat)^2)`` over the whole
excerpt, per target, and the mean of the four targets) is reported beside two references computed on the same
audio: the ``mixture/4`` floor (every target estimated as a quarter of the mixture) and the ``MPI-sliCQ`` oracle
(true target magnitudes with the mixture phase on the default sliCQ transform, the ceiling of a mix-phase sliCQ
model).

One excerpt of one song: a sanity check of how the synthetic-trained models transfer to a real recording, never
a figure to train, tune or pick checkpoints on. Writes ``<output>/real.json`` and ``<output>/real.md``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from benchmark.common import SAMPLE_RATE, TARGETS, PathLike, markdown_table
from benchmark.evaluate import mdx_sdr
from xumx_slicq.files import write_json, write_text

#: stream index of each source in a MUSDB18 ``.stem.mp4`` (stream 0 is the mixture)
STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
EXCERPT_NAME = "The Easton Ellises - Falcon 69.stem.mp4"
DEFAULT_OUTPUT = "benchmark/results/real"


def default_excerpt() -> pathlib.Path:
    """Path of the MUSDB18 excerpt inside the installed ``stempeg`` package (raises if it is missing)."""
    try:
        import stempeg
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("the real-music check needs the stempeg package (pip install musdb==0.4.3)") from err
    path = pathlib.Path(stempeg.__file__).resolve().parent / "data" / EXCERPT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall stempeg (it ships the excerpt in its package data)")
    return path


def read_excerpt(path: Optional[PathLike] = None) -> Dict[str, np.ndarray]:
    """Read a MUSDB18 stem file into ``{"mixture", "drums", "bass", "other", "vocals"}`` float32 arrays
    ``(nb_channels, nb_timesteps)`` at 44.1 kHz, all cut to the shortest stream (AAC streams can differ by a frame).
    """
    import stempeg

    path = default_excerpt() if path is None else pathlib.Path(path)
    audio, rate = stempeg.read_stems(str(path), dtype=np.float32, sample_rate=SAMPLE_RATE)
    # audio: (nb_streams, nb_timesteps, nb_channels)
    if audio.ndim != 3 or audio.shape[0] < len(STREAMS):
        raise ValueError(f"{path}: expected {len(STREAMS)} streams, got an array of shape {audio.shape}")
    if int(rate) != SAMPLE_RATE:
        raise ValueError(f"{path}: read at {rate} Hz, expected {SAMPLE_RATE}")
    length = audio.shape[1]
    return {name: np.ascontiguousarray(audio[index, :length].T) for name, index in STREAMS.items()}


def scores(references: Dict[str, np.ndarray], estimates: Dict[str, np.ndarray],
           targets: Sequence[str] = TARGETS) -> Dict[str, float]:
    """MDX SDR per target (``(nb_channels, nb_timesteps)`` arrays, estimates cut/padded to the reference) + mean."""
    out = {}
    for target in targets:
        ref = references[target]
        est = np.asarray(estimates[target], dtype=np.float64)[:, : ref.shape[1]]
        if est.shape[1] < ref.shape[1]:
            est = np.pad(est, ((0, 0), (0, ref.shape[1] - est.shape[1])))
        out[target] = mdx_sdr(ref, est)
    out["mean"] = float(np.mean([out[t] for t in targets]))
    return out


def reference_estimates(stems: Dict[str, np.ndarray]) -> Dict[str, Dict[str, np.ndarray]]:
    """The ``mixture/4`` floor and the ``MPI-sliCQ`` oracle estimates of the excerpt."""
    import torch

    from benchmark.oracles import slicq_oracle

    mix = stems["mixture"]
    floor = {t: mix / 4 for t in TARGETS}
    sources = torch.from_numpy(np.stack([stems[t] for t in TARGETS]).astype(np.float32))
    oracle = slicq_oracle(torch.from_numpy(mix.astype(np.float32)), sources).numpy()
    return {"mixture/4": floor, "MPI-sliCQ": {t: oracle[j] for j, t in enumerate(TARGETS)}}


def model_estimates(model_dir: PathLike, mix: np.ndarray, arch: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Separate ``mix`` ``(nb_channels, nb_timesteps)`` with the model saved in ``model_dir`` (torch backend)."""
    from xumx_slicq.separator import load_separator, separate_array

    separator = load_separator(model_dir, arch=arch)
    out = separate_array(separator, np.ascontiguousarray(mix.T), SAMPLE_RATE)  # {target: (nb_timesteps, nb_ch)}
    return {t: y.T for t, y in out.items()}


def model_label(model_dir: PathLike, arch: Optional[str] = None) -> str:
    """Row label of a model: its folder (relative to the working directory when inside it) and architecture."""
    from xumx_slicq.checkpoint import find_model

    found_arch, _ = find_model(model_dir, arch)
    path = pathlib.Path(model_dir).resolve()
    try:
        name = str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        name = str(path)
    return f"{name} ({found_arch})"


def report(rows: Dict[str, Dict[str, float]], targets: Sequence[str] = TARGETS) -> str:
    """Markdown table: one row per method, MDX SDR per target and mean, in dB."""
    header = ["method"] + [f"{t} SDR" for t in targets] + ["mean SDR"]
    body = [[name] + [vals[t] for t in targets] + [vals["mean"]] for name, vals in rows.items()]
    return markdown_table(header, body)


def run(models: Sequence[PathLike], output: PathLike, excerpt: Optional[PathLike] = None,
        arch: Optional[str] = None) -> Dict:
    """Score every model and the two references on the excerpt; write ``real.json`` and ``real.md``."""
    path = default_excerpt() if excerpt is None else pathlib.Path(excerpt)
    stems = read_excerpt(path)
    rows: Dict[str, Dict[str, float]] = {}
    for name, est in reference_estimates(stems).items():
        rows[name] = scores(stems, est)
    for model_dir in models:
        rows[model_label(model_dir, arch)] = scores(stems, model_estimates(model_dir, stems["mixture"], arch))
    output = pathlib.Path(output)
    result = {"excerpt": path.name, "seconds": round(stems["mixture"].shape[1] / SAMPLE_RATE, 3),
              "metric": "MDX SDR (dB)", "targets": list(TARGETS),
              "rows": {name: {k: round(v, 3) for k, v in vals.items()} for name, vals in rows.items()}}
    write_json(output / "real.json", result)
    text = (f"# Real-music check: {path.name} ({result['seconds']} s, report-only)\n\n"
            "MDX SDR in dB; `mixture/4` is the floor, `MPI-sliCQ` the mix-phase sliCQ oracle.\n\n"
            + report(rows) + "\n")
    write_text(output / "real.md", text)
    return result


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m benchmark real", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[],
                        help="model folder to score (repeatable; default: none, only the floor and the oracle)")
    parser.add_argument("--arch", default=None,
                        help="architecture to load from each folder (default: the folder's first, xumx-slicq first)")
    parser.add_argument("--excerpt", default=None,
                        help=f"MUSDB18 .stem.mp4 file (default: stempeg's bundled '{EXCERPT_NAME}')")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"folder for real.json and real.md (default: {DEFAULT_OUTPUT})")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; prints the table."""
    args = build_parser().parse_args(argv)
    for model_dir in args.model:
        if not os.path.isdir(model_dir):
            print(f"error: --model {model_dir} is not a folder", file=sys.stderr)
            return 2
    result = run(args.model, args.output, args.excerpt, args.arch)
    rows: Dict[str, Dict[str, float]] = result["rows"]
    print(report(rows))
    print(f"wrote {pathlib.Path(args.output) / 'real.json'} and real.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
