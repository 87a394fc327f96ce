"""Small helpers shared by the quality benchmarks (evaluate, oracles, boxplot, speed, search).

Reading a MUSDB18-HQ-layout track, atomic figure saves, and a dependency-free markdown table (other atomic
writes: :mod:`xumx_slicq.files`).
"""

from __future__ import annotations

import os
import pathlib
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from xumx_slicq import files

PathLike = Union[str, os.PathLike]
SAMPLE_RATE = 44100
#: the four MUSDB targets, in the project's order
TARGETS = ("vocals", "drums", "bass", "other")


def track_names(root: PathLike, subset: str = "test", tracks: Optional[Sequence[str]] = None) -> List[str]:
    """Sorted names of the track folders in ``<root>/<subset>/`` (optionally only those in ``tracks``)."""
    folder = pathlib.Path(root) / subset
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no '{subset}' folder in the dataset root {root}")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if tracks:
        missing = sorted(set(tracks) - set(names))
        if missing:
            raise FileNotFoundError(f"{folder}: no track folder(s) {', '.join(missing)}")
        names = [n for n in names if n in set(tracks)]
    if not names:
        raise FileNotFoundError(f"{folder}: holds no track folders")
    return names


def read_wav(path: PathLike, start: float = 0.0, seconds: Optional[float] = None) -> np.ndarray:
    """Read a WAV as float32 ``(nb_timesteps, nb_channels)``; ``start``/``seconds`` crop it (in seconds)."""
    import soundfile as sf

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file missing")
    try:
        with sf.SoundFile(str(path)) as f:
            first = int(round(start * f.samplerate))
            f.seek(min(first, f.frames))
            frames = -1 if seconds is None else int(round(seconds * f.samplerate))
            audio = f.read(frames, dtype="float32", always_2d=True)  # (nb_timesteps, nb_channels)
            rate = f.samplerate
    except RuntimeError as exc:
        raise ValueError(f"{path}: unreadable audio ({exc})") from exc
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    return audio


def read_track(folder: PathLike, targets: Sequence[str] = TARGETS, start: float = 0.0,
               seconds: Optional[float] = None) -> Dict[str, np.ndarray]:
    """``{"mixture": ..., target: ...}`` float32 ``(nb_timesteps, nb_channels)`` arrays of a track folder."""
    folder = pathlib.Path(folder)
    audio = {name: read_wav(folder / f"{name}.wav", start, seconds) for name in ("mixture", *targets)}
    lengths = {k: v.shape for k, v in audio.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{folder}: stems differ in shape {lengths}")
    return audio


def fit_length(audio: np.ndarray, nb_timesteps: int, nb_channels: int) -> np.ndarray:
    """Zero-pad or truncate ``(n, c)`` audio to ``(nb_timesteps, nb_channels)``; mono is duplicated."""
    if audio.shape[1] != nb_channels:
        if audio.shape[1] == 1:
            audio = np.repeat(audio, nb_channels, axis=1)  # mono estimate of a stereo reference
        else:
            raise ValueError(f"estimate has {audio.shape[1]} channels, reference {nb_channels}")
    if audio.shape[0] < nb_timesteps:
        audio = np.pad(audio, ((0, nb_timesteps - audio.shape[0]), (0, 0)))
    return audio[:nb_timesteps]


def save_figure_atomic(fig, path: PathLike, **savefig_kwargs) -> None:
    """Save a matplotlib figure to ``path`` atomically (:func:`xumx_slicq.files.atomic_path`, creating the
    folder), then close it. ``savefig_kwargs`` go to ``fig.savefig`` (e.g. ``dpi=110, bbox_inches="tight"``)."""
    import matplotlib.pyplot as plt

    try:
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], floatfmt: str = ".2f") -> str:
    """A GitHub markdown table; floats formatted with ``floatfmt``, NaN as an en dash."""

    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
