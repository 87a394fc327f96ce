"""UMX and X-UMX baselines (re-implemented): STFT front-end, models, and their training losses.

``build_baseline(arch, config)`` rebuilds either model from ``model.arch`` and ``model.get_config()``.
"""

from .losses import MultiDomainLoss, freq_combination_loss, mse_loss, time_combination_loss, weighted_sdr
from .stft import ISTFT, STFT, magnitude
from .umx import DEFAULT_TARGETS, UMX, compute_input_stats, wiener_postprocess
from .xumx import XUMX

ARCHITECTURES = {"umx": UMX, "xumx": XUMX}

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_TARGETS",
    "ISTFT",
    "MultiDomainLoss",
    "STFT",
    "UMX",
    "XUMX",
    "build_baseline",
    "compute_input_stats",
    "freq_combination_loss",
    "magnitude",
    "mse_loss",
    "time_combination_loss",
    "weighted_sdr",
    "wiener_postprocess",
]


def build_baseline(arch: str, config: dict | None = None) -> UMX:
    """Build an untrained baseline.

    Args:
        arch: ``"umx"`` or ``"xumx"``.
        config: constructor arguments (``model.get_config()``); defaults give umxhq / X-UMX.
    Returns:
        the model (an :class:`UMX` or :class:`XUMX`).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"baselines/__init__.py: unknown arch {arch!r}, expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**(config or {}))
