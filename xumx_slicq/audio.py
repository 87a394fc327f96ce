"""Audio helpers shared by the separator and the apps: resampling, the MDX SDR score (benchmarks, the int8
quality gate), and the demo signal the export's parity check, the profile and the speed benchmarks run on."""

from __future__ import annotations

import math
import os
from typing import Optional, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

__all__ = ["resample", "mdx_sdr", "demo_signal", "demo_audio"]


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) of ``(nb_timesteps, nb_channels)`` audio along axis 0, as float32.

    Returns ``audio`` itself when the rates are equal.
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    if rate_in == rate_out:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(int(rate_in), int(rate_out))
    return resample_poly(audio, rate_out // g, rate_in // g, axis=0).astype(np.float32)


#: the MDX-2021 score's epsilon
MDX_EPS = 1e-7


def mdx_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = MDX_EPS) -> float:
    """MDX-2021 global SDR of one source in dB.

    Args:
        reference, estimate: arrays of the same shape, e.g. ``(nb_timesteps, nb_channels)``.
    Returns:
        ``10 log10((sum reference^2 + eps) / (sum (reference - estimate)^2 + eps))`` over every element.
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"mdx_sdr: reference {reference.shape} and estimate {estimate.shape} differ in shape")
    num = np.sum(reference**2) + eps
    den = np.sum((reference - estimate) ** 2) + eps
    return float(10.0 * np.log10(num / den))


#: sample rate of the demo signal
DEMO_RATE = 44100
#: the fallback chord: A2, C#3, E3 (an A major triad) and A4, in Hz
CHORD_HZ = (110.0, 138.6, 164.8, 440.0)


def demo_signal(root: Optional[PathLike] = "data/test") -> Tuple[np.ndarray, str]:
    """The demo signal, once through, and its description.

    The demo songs ``<root>/*/mixture.wav`` (stereo, 44.1 kHz) concatenated in name order, as float32
    ``(nb_timesteps, nb_channels)``. Without demo songs (or with ``root=None``): 30 s of a reproducible noisy
    chord (:data:`CHORD_HZ`, seed 0), the same on both channels.
    """
    import glob

    files = sorted(glob.glob(os.path.join(str(root), "*", "mixture.wav"))) if root is not None else []
    if files:
        import soundfile as sf

        parts = []
        for f in files:
            data, rate = sf.read(f, dtype="float32", always_2d=True)  # (nb_timesteps, nb_channels)
            if rate != DEMO_RATE or data.shape[1] != 2:
                raise ValueError(f"{f}: expected stereo 44.1 kHz, got {data.shape[1]} channels at {rate} Hz")
            parts.append(data)
        return np.concatenate(parts), f"{len(files)} demo songs from {root} concatenated"
    rng = np.random.default_rng(0)
    t = np.arange(30 * DEMO_RATE) / DEMO_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in CHORD_HZ)
    mono = 0.1 * chord + 0.03 * rng.standard_normal(len(t))
    desc = "synthetic noisy chord" if root is None else f"no demo songs in {root}: synthetic noisy chord"
    return np.stack([mono] * 2, axis=1).astype(np.float32), desc


def demo_audio(seconds: float, root: Optional[PathLike] = "data/test", offset_seconds: float = 0.0
               ) -> Tuple[np.ndarray, str]:
    """``seconds`` of :func:`demo_signal`, looped, from ``offset_seconds`` on; returns ``(audio, description)``.

    Returns:
        float32 ``(nb_timesteps, nb_channels)`` audio at 44.1 kHz (stereo) and what it is (demo songs or chord).
    """
    base, desc = demo_signal(root)
    n = int(round(seconds * DEMO_RATE))
    start = int(offset_seconds * DEMO_RATE) % len(base)
    if start + n > len(base):
        desc += ", looped"
    reps = -(-(start + n) // len(base))
    return np.ascontiguousarray(np.concatenate([base] * reps)[start:start + n]), desc
