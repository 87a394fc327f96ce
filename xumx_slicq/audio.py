"""Audio helpers shared by the separator and the apps."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["resample"]


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
