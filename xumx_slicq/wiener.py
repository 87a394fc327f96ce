"""Multichannel Wiener filtering refined by expectation-maximisation (Wiener-EM), in PyTorch.

Semantics follow norbert 0.2.1 (``norbert.wiener`` / ``norbert.expectation_maximization``) with the
open-unmix argument set (``softmask``, ``residual``, ``scale_factor``):

1. Initial estimate of every source, complex ``(nb_frames, nb_bins, nb_channels, nb_sources)``:
   ``softmask=False``: target magnitude x mixture phase; ``softmask=True``: ratio mask
   ``v_j / (eps + sum_k v_k)`` applied to the complex mixture.  ``residual=True`` appends one more source,
   ``mix - sum_j y_j``.  ``iterations=0`` returns this estimate.
2. Mixture and estimates are divided by ``max(1, max|mix| / scale_factor)`` for numerical stability.
3. ``iterations`` times: per source ``j``, power spectral density ``v_j = mean_channels |y_j|^2`` and
   spatial covariance ``R_j[f] = sum_t y_j y_j^H / (eps + sum_t v_j)``; mixture covariance
   ``C_xx = sum_j v_j R_j + sqrt(eps) I``; new estimate ``y_j = v_j R_j C_xx^{-1} x`` (multichannel Wiener
   gain).  One channel: ``C_xx^{-1} = 1 / (C_xx + eps)``; two channels: closed-form 2x2 inverse; more: a solve.
4. The estimates are scaled back.

Bins are independent problems: statistics are sums over frames, never across bins.

Numerical note: the mixture covariance ``sum_j v_j R_j``, its determinant/inverse and ``C_xx^{-1} x`` are
computed in float64, and ``|y_c|^2`` with the same formula as ``Re(y_c conj(y_d))``.  In float32 the 2x2
determinant ``c00 c11 - |c01|^2`` cancels catastrophically when the channels are identical (mono duplicated to
stereo): with ``|x| ~ 10`` and the ``sqrt(1e-10)`` regulariser the true determinant is ~2e-7 of its terms, below
float32 resolution (norbert in complex64 is off by several percent there).  The estimates keep the input
precision.

:func:`check_wiener_args` is the one argument check of every Wiener-EM entry point (this module,
:mod:`xumx_slicq.wiener_numba`, :mod:`xumx_slicq.filtering`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["BACKENDS", "check_wiener_args", "wiener"]

# implementations of xumx_slicq.filtering.wiener_blocks
BACKENDS = ("torch", "numba")

_NO_BACKEND = object()  # check_wiener_args' default: the entry point takes no backend argument

# layout name -> (targets, mixture, sources axis of the targets, channels axis of the mixture)
_LAYOUTS = {
    "stft": ("(nb_frames, nb_bins, nb_channels, nb_sources)", "(nb_frames, nb_bins, nb_channels)", 3, 2),
    "blocks": ("(nb_samples, nb_sources, nb_channels, nb_bins_b, nb_slices, T_b)",
               "(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)", 1, 1),
}


def check_wiener_args(entry: str, targets: Sequence[Tensor], mixture: Sequence[Tensor], layout: str,
                      iterations, scale_factor, eps, backend: object = _NO_BACKEND) -> None:
    """Validate the arguments of a Wiener-EM entry point; raise ``TypeError``/``ValueError`` naming ``entry``.

    Args:
        entry: the public function being called (for the messages).
        targets: real tensors, one per piece (the blocks; ``wiener`` passes one), each the mixture's shape with a
            sources axis and 1 or ``nb_channels`` channels: ``(nb_frames, nb_bins, {1, nb_channels}, nb_sources)``
            (layout ``"stft"``) or ``(nb_samples, nb_sources, {1, nb_channels}, nb_bins_b, nb_slices, T_b)``
            (layout ``"blocks"``).
        mixture: complex tensors, ``(nb_frames, nb_bins, nb_channels)`` or
            ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``.
        layout: ``"stft"`` or ``"blocks"``.
        iterations: integer >= 0; scale_factor: > 0; eps: >= 0.
        backend: for the entry points that take one: must be one of :data:`BACKENDS`.
    """
    where = f"xumx_slicq Wiener-EM: {entry}"
    if backend is not _NO_BACKEND and backend not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"{where}: iterations must be an integer >= 0, got {iterations!r}")
    if not scale_factor > 0:
        raise ValueError(f"{where}: scale_factor must be > 0, got {scale_factor!r}")
    if not eps >= 0:
        raise ValueError(f"{where}: eps must be >= 0, got {eps!r}")
    t_desc, m_desc, src_axis, ch_axis = _LAYOUTS[layout]
    if len(targets) != len(mixture) or not len(mixture):
        raise ValueError(f"{where}: {len(targets)} target pieces for {len(mixture)} mixture pieces (need the same "
                         "number, at least one)")
    for i, (t, m) in enumerate(zip(targets, mixture)):
        piece = f"block {i}: " if layout == "blocks" else ""
        if not torch.is_tensor(m) or not m.is_complex():
            got = f"{type(m).__name__}" + (f" of dtype {m.dtype}" if torch.is_tensor(m) else "")
            raise TypeError(f"{where}: {piece}the mixture must be a complex torch tensor {m_desc}, got {got}")
        if not torch.is_tensor(t) or t.is_complex() or not t.is_floating_point():
            got = f"{type(t).__name__}" + (f" of dtype {t.dtype}" if torch.is_tensor(t) else "")
            raise TypeError(f"{where}: {piece}the targets must be a real floating torch tensor {t_desc}, got {got}")
        expected = list(m.shape)
        expected.insert(src_axis, t.shape[src_axis] if t.dim() > src_axis else -1)  # any number of sources
        t_ch = ch_axis + (1 if src_axis <= ch_axis else 0)  # the channels axis in the targets
        if t.dim() == len(expected) and t.shape[t_ch] == 1:
            expected[t_ch] = 1  # one target channel is broadcast over the mixture's
        if m.dim() != m_desc.count(",") + 1 or list(t.shape) != expected:
            raise ValueError(f"{where}: {piece}targets {tuple(t.shape)} do not match the mixture {tuple(m.shape)}; "
                             f"expected targets {t_desc} (1 or nb_channels channels) for a mixture {m_desc}")
        if t.numel() == 0:
            raise ValueError(f"{where}: {piece}empty input: targets {tuple(t.shape)}, mixture {tuple(m.shape)}")


def _initial_planes(targets: Tensor, mix: Tensor, softmask: bool, residual: bool, eps: float):
    """Initial estimates as contiguous real/imaginary planes in the working layout.

    The working layout is source-major, ``(nb_channels, nb_sources, nb_frames, nb_bins)``: every elementwise
    operation then runs over long contiguous ``(nb_frames, nb_bins)`` rows and per-bin parameters
    ``(..., nb_bins)`` broadcast along the innermost axis (the public layout has 1-4 sources innermost, too short
    to vectorise).

    Args:
        targets: real ``(nb_frames, nb_bins, {1, nb_channels}, nb_sources)`` in the real dtype of ``mix``.
        mix: complex ``(nb_frames, nb_bins, nb_channels)``.

    Returns:
        yr, yi: ``(nb_channels, nb_sources[+1], nb_frames, nb_bins)``;
        xr, xi: ``(nb_channels, nb_frames, nb_bins)`` mixture planes.
    """
    nb_channels = mix.shape[2]
    tgt = targets.permute(2, 3, 0, 1).contiguous()  # (F, B, Ct, J) -> (Ct, J, F, B)
    xr = mix.real.permute(2, 0, 1).contiguous()  # (F, B, C) -> (C, F, B)
    xi = mix.imag.permute(2, 0, 1).contiguous()
    if softmask:
        gain = tgt / (eps + tgt.sum(dim=1, keepdim=True))  # ratio mask, (Ct, J, F, B)
        yr = gain * xr.unsqueeze(1)  # (C, 1, F, B) broadcast over sources
        yi = gain * xi.unsqueeze(1)
    else:
        mag = mix.abs().permute(2, 0, 1)  # hypot (no underflow); (F, B, C) -> (C, F, B)
        nonzero = mag > 0
        safe = torch.where(nonzero, mag, torch.ones_like(mag))
        # unit phasor exp(i angle(x)); angle(0) = 0 as in numpy/torch -> phasor 1
        cos = torch.where(nonzero, xr / safe, torch.ones_like(mag))
        sin = torch.where(nonzero, xi / safe, torch.zeros_like(mag))
        yr = tgt * cos.unsqueeze(1)  # (C, 1, F, B) broadcast over sources
        yi = tgt * sin.unsqueeze(1)
    if yr.shape[0] != nb_channels:  # mono target spectrograms with a multichannel mixture
        yr = yr.expand(nb_channels, -1, -1, -1).contiguous()
        yi = yi.expand(nb_channels, -1, -1, -1).contiguous()
    if residual:
        # mixture minus the sources, one more source on axis 1
        yr = torch.cat([yr, (xr - yr.sum(dim=1)).unsqueeze(1)], dim=1)
        yi = torch.cat([yi, (xi - yi.sum(dim=1)).unsqueeze(1)], dim=1)
    return yr, yi, xr, xi


def _em_stereo(yr, yi, xr, xi, iterations: int, eps: float, differentiable: bool = False):
    """EM for two channels on real/imaginary planes; closed-form Hermitian 2x2 inverse.

    Args:
        yr, yi: ``(2, nb_sources, nb_frames, nb_bins)`` scaled initial estimates.
        xr, xi: ``(2, nb_frames, nb_bins)`` scaled mixture.
        differentiable: avoid ``out=`` writes so autograd can track the result.

    Returns:
        yr, yi of the same shape (new tensors).
    """
    reg = math.sqrt(eps)
    nb_src = yr.shape[1]
    # mixture in float64 for the inverse; (F, B) planes per channel
    x0r, x0i, x1r, x1i = (p.double() for p in (xr[0], xi[0], xr[1], xi[1]))
    for _ in range(iterations):
        yr0, yr1, yi0, yi1 = yr[0], yr[1], yi[0], yi[1]  # each (J, F, B), contiguous
        # |y_c|^2 is written exactly like the real part of y_c conj(y_d), so identical channels give a
        # bitwise-consistent (rank-one) covariance
        p0 = torch.addcmul(yr0 * yr0, yi0, yi0)
        p1 = torch.addcmul(yr1 * yr1, yi1, yi1)
        v = torch.add(p0, p1).mul_(0.5)  # PSD (J, F, B)
        weight = v.sum(dim=1) + eps  # (J, B)
        r00 = p0.sum(dim=1) / weight
        r11 = p1.sum(dim=1) / weight
        del p0, p1
        # R_01 = sum_t y_0 conj(y_1) / weight, (J, B)
        r01r = torch.addcmul(yr0 * yr1, yi0, yi1).sum(dim=1) / weight
        r01i = torch.addcmul(yi0 * yr1, yr0, yi1, value=-1.0).sum(dim=1) / weight
        # mixture covariance entries in float64, (F, B): sum_j v_j R_j
        r64 = torch.stack([r00, r11, r01r, r01i]).double()  # (4, J, B)
        c00 = torch.full_like(x0r, reg)
        c11 = torch.full_like(x0r, reg)
        c01r = torch.zeros_like(x0r)
        c01i = torch.zeros_like(x0r)
        for j in range(nb_src):
            c00.addcmul_(v[j], r64[0, j])
            c11.addcmul_(v[j], r64[1, j])
            c01r.addcmul_(v[j], r64[2, j])
            c01i.addcmul_(v[j], r64[3, j])
        det = c00 * c11 - (c01r * c01r + c01i * c01i)  # real: C_xx is Hermitian
        inv_det = det.reciprocal_()
        # z = C_xx^{-1} x with C^{-1} = [[c11, -c01], [-conj(c01), c00]] / det, each (F, B)
        z0r = (c11 * x0r - (c01r * x1r - c01i * x1i)) * inv_det
        z0i = (c11 * x0i - (c01r * x1i + c01i * x1r)) * inv_det
        z1r = (c00 * x1r - (c01r * x0r + c01i * x0i)) * inv_det
        z1i = (c00 * x1i - (c01r * x0i - c01i * x0r)) * inv_det
        # back to the working precision, (1, F, B) to broadcast over sources
        z0r, z0i, z1r, z1i = (z.to(yr.dtype).unsqueeze(0) for z in (z0r, z0i, z1r, z1i))
        # per-bin parameters (J, 1, B) to broadcast over frames
        r00, r11, r01r, r01i = (r.unsqueeze(1) for r in (r00, r11, r01r, r01i))
        # y_j = v_j R_j z with R_j = [[r00, r01], [conj(r01), r11]]
        planes = (
            (r00 * z0r).addcmul_(r01r, z1r).addcmul_(r01i, z1i, value=-1.0),  # Re y_0
            (r11 * z1r).addcmul_(r01r, z0r).addcmul_(r01i, z0i),  # Re y_1
            (r00 * z0i).addcmul_(r01r, z1i).addcmul_(r01i, z1r),  # Im y_0
            (r11 * z1i).addcmul_(r01r, z0i).addcmul_(r01i, z0r, value=-1.0),  # Im y_1
        )
        if differentiable:  # out= writes are not tracked by autograd
            yr = torch.stack([planes[0] * v, planes[1] * v])
            yi = torch.stack([planes[2] * v, planes[3] * v])
        else:  # write straight into the new (2, J, F, B) planes
            yr, yi = torch.empty_like(yr), torch.empty_like(yi)
            for dst, a in zip((yr[0], yr[1], yi[0], yi[1]), planes):
                torch.mul(a, v, out=dst)
        del planes
    return yr, yi


def _em_general(yr, yi, xr, xi, iterations: int, eps: float):
    """EM for one channel or more than two channels (complex tensors, ``torch.linalg.solve`` for C > 2).

    Args:
        yr, yi: ``(nb_channels, nb_sources, nb_frames, nb_bins)`` scaled initial estimates.
        xr, xi: ``(nb_channels, nb_frames, nb_bins)`` scaled mixture.

    Returns:
        yr, yi of the same shape.
    """
    reg = math.sqrt(eps)
    nb_channels = xr.shape[0]
    y = torch.complex(yr, yi)
    x64 = torch.complex(xr.double(), xi.double()).permute(1, 2, 0)  # (C, F, B) -> (F, B, C)
    eye = torch.eye(nb_channels, dtype=torch.complex128, device=xr.device)
    for _ in range(iterations):
        v = (yr * yr + yi * yi).mean(dim=0)  # (J, F, B)
        weight = v.sum(dim=1) + eps  # (J, B)
        # R_j[b] = sum_t y y^H: (C, J, F, B) x (D, J, F, B) -> (B, J, C, D)
        r = torch.einsum("cjfb,djfb->bjcd", y, y.conj()) / weight.t()[..., None, None]
        # C_xx = sum_j v_j R_j in float64: (J, F, B) x (B, J, C, D) -> (F, B, C, D)
        cxx = torch.einsum("jfb,bjcd->fbcd", v.to(torch.complex128), r.to(torch.complex128))
        cxx = cxx + reg * eye
        if nb_channels == 1:
            z = x64 / (cxx[..., 0] + eps)  # (F, B, 1), norbert's scalar inverse 1 / (M + eps)
        else:
            z = torch.linalg.solve(cxx, x64.unsqueeze(-1)).squeeze(-1)  # (F, B, C)
        # y_j = v_j R_j z: (B, J, C, D) x (F, B, D) -> (C, J, F, B)
        y = torch.einsum("bjcd,fbd->cjfb", r, z.to(y.dtype)) * v.unsqueeze(0)
        yr, yi = y.real, y.imag
    return yr, yi


def wiener(
    targets_spectrograms: Tensor,
    mix_stft: Tensor,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float = 1e-10,
) -> Tensor:
    """Wiener-EM separation of a multichannel mixture (norbert 0.2.1 semantics; any device).

    Args:
        targets_spectrograms: real ``(nb_frames, nb_bins, {1, nb_channels}, nb_sources)`` magnitude estimates
            (cast to the real dtype of ``mix_stft``; one channel is broadcast).
        mix_stft: complex64/complex128 ``(nb_frames, nb_bins, nb_channels)`` mixture coefficients.
        iterations: EM iterations; 0 returns the initial estimate.
        softmask: initialise with ratio masks instead of target magnitude x mixture phase.
        residual: append a source ``mix - sum(sources)`` to the initial estimates.
        scale_factor: mixture and estimates are divided by ``max(1, max|mix| / scale_factor)`` during EM.
        eps: regulariser (weights, ratio mask, ``sqrt(eps)`` added to the mixture covariance diagonal).

    Returns:
        complex ``(nb_frames, nb_bins, nb_channels, nb_sources[+1])`` with the dtype and device of ``mix_stft``.
        Inputs are never modified.  Vectorised over frames and bins (no Python loop over frames); memory is a
        few times the size of the output.  Differentiable: when an input requires grad (and grad mode is on)
        a slightly slower autograd-friendly path is taken.
    """
    check_wiener_args("wiener", [targets_spectrograms], [mix_stft], "stft", iterations, scale_factor, eps)
    eps = float(eps)
    mix = mix_stft
    differentiable = torch.is_grad_enabled() and (targets_spectrograms.requires_grad or mix.requires_grad)
    targets = targets_spectrograms.to(dtype=mix.real.dtype, device=mix.device)
    yr, yi, xr, xi = _initial_planes(targets, mix, softmask, residual, eps)
    scale = None
    if iterations > 0:
        # max(1, max|x| / scale_factor), kept on the device (no host sync)
        scale = torch.clamp(mix.abs().amax() / float(scale_factor), min=1.0)
        yr, yi = yr / scale, yi / scale
        xr, xi = xr / scale, xi / scale
        if mix.shape[2] == 2:
            yr, yi = _em_stereo(yr, yi, xr, xi, int(iterations), eps, differentiable)
        else:
            yr, yi = _em_general(yr, yi, xr, xi, int(iterations), eps)
    if differentiable:
        if scale is not None:
            yr, yi = yr * scale, yi * scale
        # (C, J', F, B) -> (F, B, C, J')
        return torch.complex(yr, yi).permute(2, 3, 0, 1).contiguous()
    nb_frames, nb_bins, nb_channels = mix.shape
    out = torch.empty((nb_frames, nb_bins, nb_channels, yr.shape[1]), dtype=mix.dtype, device=mix.device)
    parts = torch.view_as_real(out).permute(4, 2, 3, 0, 1)  # (F, B, C, J', 2) -> (2, C, J', F, B)
    if scale is None:
        parts[0].copy_(yr)
        parts[1].copy_(yi)
    else:
        torch.mul(yr, scale, out=parts[0])  # undo the normalisation while interleaving
        torch.mul(yi, scale, out=parts[1])
    return out
