"""Corpus v2 master bus: bus compression, loudness to a genre's LUFS target (pyloudnorm), a look-ahead limiter,
16-bit stems whose integer sum is the mixture.

Sum-exactness: every master-bus stage is a gain curve computed from the mixture (or, for the limiter, from the
mixture and every stem) and applied identically to each stem and to the mixture, so after the master the
mixture is still the sum of the stems; the stems are then quantised to 16 bits and the mixture is their integer
sum (exact to the LSB). A non-linear plugin on the mixture alone (pedalboard's Limiter, say) would break that,
which is why the compressor and limiter here are gain computers (mix.glue_gain, mix.limiter_gain) and not
pedalboard plugins. Integrated loudness (ITU-R BS.1770) is measured with pyloudnorm.
"""

from __future__ import annotations

import numpy as np

from train.synthesis.mix import INT16_FULL_SCALE, PEAK_CEILING, SAMPLE_RATE, active_rms, glue_gain, limiter_gain
from train.synthesis.styles_v2 import MixStyle


def integrated_lufs(mix: np.ndarray) -> float:
    """Integrated loudness (LUFS) of a (2, nb_samples) signal; -inf when silent or shorter than one 400 ms block."""
    try:
        import pyloudnorm
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("corpus v2 needs pyloudnorm: pip install pyloudnorm==0.2.0") from err
    if mix.shape[1] < int(0.4 * SAMPLE_RATE) + 1:
        return float("-inf")
    return float(pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(np.asarray(mix, dtype=np.float64).T))


def quantise(stems: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """Float (2, n) stems -> int16 (n, 2) stems + "mixture" (their integer sum); returns (audio, safety gain).

    A last uniform gain keeps every stem and the mixture under PEAK_CEILING of full scale.
    """
    mix = sum(stems.values())
    peak = max([float(np.abs(mix).max())] + [float(np.abs(s).max()) for s in stems.values()])
    gain = PEAK_CEILING / peak if peak > PEAK_CEILING else 1.0
    out = {n: np.round(x.T * np.float32(gain * INT16_FULL_SCALE)).astype(np.int16) for n, x in stems.items()}
    total = sum(out[n].astype(np.int32) for n in stems)
    if np.abs(total).max() > INT16_FULL_SCALE:  # cannot happen with PEAK_CEILING; guard the invariant anyway
        raise AssertionError("mixture would clip after quantisation")
    out["mixture"] = total.astype(np.int16)
    return out, gain


def master_v2(stems: dict[str, np.ndarray], rng: np.random.Generator, style: MixStyle
              ) -> tuple[dict[str, np.ndarray], dict]:
    """Bus compressor -> loudness gain to a LUFS target -> limiter -> 16-bit stems; all gains shared by the stems.

    Args:
        stems: name -> float32 (2, nb_samples) stem (scaled in place).
        rng: generator for the compressor settings and the loudness target.
        style: the genre's loudness range and limiter depth.
    Returns:
        (name -> int16 (nb_samples, 2) arrays including "mixture", info dict with the measured loudness).
    """
    names = list(stems)
    stems = {n: np.asarray(stems[n], dtype=np.float32) for n in names}
    mix = sum(stems[n] for n in names)  # (2, nb_samples)
    threshold = 20 * np.log10(active_rms(mix) + 1e-12) + float(rng.uniform(-3, 1))
    ratio = float(rng.uniform(2.0, 4.0))
    glue = glue_gain(mix, threshold, ratio, attack=0.005, release=0.12).astype(np.float32)
    for x in [mix] + [stems[n] for n in names]:
        x *= glue
    target = float(rng.uniform(*style.lufs))
    measured = integrated_lufs(mix)
    if np.isfinite(measured):
        gain = 10 ** ((target - measured) / 20)
    else:  # too short to measure: fall back to an RMS target
        gain = 10 ** ((target + 3) / 20) / max(active_rms(mix), 1e-9)
    detector = np.abs(mix)
    for n in names:
        np.maximum(detector, np.abs(stems[n]), out=detector)
    detector *= np.float32(gain)
    limit = (limiter_gain(detector, PEAK_CEILING, float(rng.uniform(*style.limiter_db))) * gain).astype(np.float32)
    del detector
    for n in names:
        stems[n] *= limit
    out, safety = quantise(stems)
    final = integrated_lufs(out["mixture"].T.astype(np.float64) / INT16_FULL_SCALE)
    info = {"lufs_target": round(target, 2), "lufs": round(final, 2) if np.isfinite(final) else None,
            "glue_ratio": round(ratio, 2), "safety_gain_db": round(float(20 * np.log10(safety)), 2),
            "mixture_peak_dbfs": round(float(20 * np.log10(max(1, np.abs(out["mixture"]).max()) / INT16_FULL_SCALE)),
                                       2)}
    return out, info
