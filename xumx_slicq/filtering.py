"""Wiener-EM on the ragged sliCQ: the separator's entry point, dispatching to the torch or the numba backend.

The sliCQ comes as a list of blocks, block ``b`` ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)`` (no zero
padding).  Per block, each bin's ``nb_slices x T_b`` coefficients are the frames of one independent Wiener-EM
problem (norbert semantics, :mod:`xumx_slicq.wiener`), with one normaliser ``max(1, max|mix_b| / scale_factor)``
per block.

* ``backend="torch"``: :func:`xumx_slicq.wiener.wiener` on each block permuted into the STFT layout (any device,
  differentiable).
* ``backend="numba"``: :func:`xumx_slicq.wiener_numba.wiener_blocks_numba` (CPU kernels, all blocks in one
  parallel call).
"""

from __future__ import annotations

from typing import List, Sequence

from torch import Tensor

from .wiener import check_wiener_args, wiener
from .wiener_numba import wiener_blocks_numba

__all__ = ["wiener_blocks"]


def wiener_blocks(
    estimates: Sequence[Tensor],
    mixture: Sequence[Tensor],
    backend: str = "torch",
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float = 1e-10,
) -> List[Tensor]:
    """Wiener-EM block by block, each block's ``nb_slices x T_b`` coefficients flattened into frames.

    Args:
        estimates: real magnitude blocks ``(nb_samples, nb_targets, {1, nb_channels}, nb_bins_b, nb_slices, T_b)``.
        mixture: complex blocks ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``.
        backend: ``"torch"`` or ``"numba"``; anything else raises ``ValueError``.
        iterations, softmask, residual, scale_factor, eps: as in :func:`xumx_slicq.wiener.wiener`.

    Returns:
        complex blocks ``(nb_samples, nb_targets (+1 with residual), nb_channels, nb_bins_b, nb_slices, T_b)``.
    """
    check_wiener_args("wiener_blocks", estimates, mixture, "blocks", iterations, scale_factor, eps, backend)
    kwargs = dict(iterations=iterations, softmask=softmask, residual=residual, scale_factor=scale_factor, eps=eps)
    if backend == "numba":
        return wiener_blocks_numba(estimates, mixture, **kwargs)
    out = []
    for est, mix in zip(estimates, mixture):
        nb_samples, nb_channels, nb_bins, nb_slices, t = mix.shape
        nb_targets, est_channels = est.shape[1], est.shape[2]
        # (nb_samples, C, nb_bins, S, T) -> (S, T, nb_samples, nb_bins, C) -> frames x (samples * bins) x C
        m = mix.permute(3, 4, 0, 2, 1).reshape(nb_slices * t, nb_samples * nb_bins, nb_channels)
        # (nb_samples, J, Ct, nb_bins, S, T) -> (S, T, nb_samples, nb_bins, Ct, J) -> frames x (samples * bins) x Ct x J
        v = est.permute(4, 5, 0, 3, 2, 1).reshape(nb_slices * t, nb_samples * nb_bins, est_channels, nb_targets)
        y = wiener(v, m, **kwargs)
        nb_out = y.shape[-1]
        # (S*T, nb_samples*nb_bins, C, J') -> (S, T, nb_samples, nb_bins, C, J') -> (nb_samples, J', C, nb_bins, S, T)
        y = y.reshape(nb_slices, t, nb_samples, nb_bins, nb_channels, nb_out).permute(2, 5, 4, 3, 0, 1)
        out.append(y)
    return out
