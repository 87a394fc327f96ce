"""Multichannel Wiener filtering refined by expectation-maximisation (Wiener-EM).

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

Three entry points:

* :func:`wiener` -- torch, any device, complex64/complex128, vectorised over frames and bins.
* :func:`wiener_numba` -- numpy in/out, numba ``@njit(parallel=True)`` kernel, one bin per task.
* :func:`wiener_matrix` -- glue for the zero-padded sliCQ matrix ``(nb_samples, nb_channels, nb_bins,
  nb_slices, max_T)`` where bin ``f`` only holds ``bin_lengths[f]`` coefficients per slice.

Numerical note: the mixture covariance, its determinant/inverse and ``C_xx^{-1} x`` are always computed in
float64 (in numba everything is float64).  In float32 the 2x2 determinant ``c00 c11 - |c01|^2`` cancels
catastrophically when the channels are (nearly) identical, e.g. mono duplicated to stereo: with
``|x| ~ 10`` and the ``sqrt(1e-10)`` regulariser the true determinant is ~1e-7 of its terms, i.e. below
float32 resolution.  The estimates themselves keep the input precision.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numba
import numpy as np
import torch

__all__ = ["wiener", "wiener_numba", "wiener_matrix"]

_WHERE = "xumx_slicq/filtering.py"


# ---------------------------------------------------------------------------------------------------------
# argument checks shared by the entry points
# ---------------------------------------------------------------------------------------------------------


def _check_scalars(fn: str, iterations, scale_factor, eps) -> None:
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"{_WHERE}: {fn}: iterations must be an integer >= 0, got {iterations!r}")
    if not scale_factor > 0:
        raise ValueError(f"{_WHERE}: {fn}: scale_factor must be > 0, got {scale_factor!r}")
    if not eps >= 0:
        raise ValueError(f"{_WHERE}: {fn}: eps must be >= 0, got {eps!r}")


def _check_stft_shapes(fn: str, tshape: Sequence[int], xshape: Sequence[int]) -> None:
    """Validate `(nb_frames, nb_bins, {1, nb_channels}, nb_sources)` against `(nb_frames, nb_bins, nb_channels)`."""
    if len(xshape) != 3:
        raise ValueError(
            f"{_WHERE}: {fn}: mix_stft must be 3-D (nb_frames, nb_bins, nb_channels), got shape {tuple(xshape)}"
        )
    if len(tshape) != 4:
        raise ValueError(
            f"{_WHERE}: {fn}: targets_spectrograms must be 4-D (nb_frames, nb_bins, nb_channels, nb_sources), "
            f"got shape {tuple(tshape)}"
        )
    if tuple(tshape[:2]) != tuple(xshape[:2]) or tshape[2] not in (1, xshape[2]):
        raise ValueError(
            f"{_WHERE}: {fn}: targets_spectrograms shape {tuple(tshape)} does not match mix_stft shape "
            f"{tuple(xshape)} (need the same nb_frames, nb_bins and nb_channels or 1 channel)"
        )
    if tshape[3] < 1 or xshape[2] < 1:
        raise ValueError(f"{_WHERE}: {fn}: need at least one source and one channel, got {tuple(tshape)}")


# ---------------------------------------------------------------------------------------------------------
# torch implementation
# ---------------------------------------------------------------------------------------------------------


def _initial_planes(targets: torch.Tensor, xr: torch.Tensor, xi: torch.Tensor, mix: torch.Tensor,
                    softmask: bool, residual: bool, eps: float):
    """Initial estimates as real/imaginary planes.

    Args:
        targets: real `(nb_frames, nb_bins, {1, nb_channels}, nb_sources)`, already in the real dtype of mix.
        xr, xi: real and imaginary parts of the mixture `(nb_frames, nb_bins, nb_channels)`.
        mix: the complex mixture `(nb_frames, nb_bins, nb_channels)` (for its magnitude).

    Returns:
        yr, yi: `(nb_frames, nb_bins, nb_channels, nb_sources[+1])`.
    """
    if softmask:
        gain = targets / (eps + targets.sum(dim=-1, keepdim=True))
        yr = gain * xr.unsqueeze(-1)  # (F, B, C, 1) broadcast over sources
        yi = gain * xi.unsqueeze(-1)
    else:
        mag = mix.abs()  # hypot: no underflow for tiny coefficients
        nonzero = mag > 0
        safe = torch.where(nonzero, mag, torch.ones_like(mag))
        # unit phasor exp(i angle(x)); angle(0) = 0 as in numpy/torch -> phasor 1
        cos = torch.where(nonzero, xr / safe, torch.ones_like(mag))
        sin = torch.where(nonzero, xi / safe, torch.zeros_like(mag))
        yr = targets * cos.unsqueeze(-1)  # (F, B, C, 1) broadcast over sources
        yi = targets * sin.unsqueeze(-1)
    if yr.shape[2] != xr.shape[2]:  # mono target spectrograms with a multichannel mixture
        yr = yr.expand(-1, -1, xr.shape[2], -1)
        yi = yi.expand(-1, -1, xr.shape[2], -1)
    if residual:
        yr = torch.cat([yr, xr.unsqueeze(-1) - yr.sum(dim=-1, keepdim=True)], dim=-1)
        yi = torch.cat([yi, xi.unsqueeze(-1) - yi.sum(dim=-1, keepdim=True)], dim=-1)
    return yr, yi


def _em_stereo(yr, yi, xr, xi, iterations: int, eps: float):
    """EM for two channels on real/imaginary planes; closed-form Hermitian 2x2 inverse.

    Args:
        yr, yi: `(nb_frames, nb_bins, 2, nb_sources)` scaled initial estimates.
        xr, xi: `(nb_frames, nb_bins, 2)` scaled mixture.

    Returns:
        yr, yi of the same shape (new tensors).
    """
    reg = math.sqrt(eps)
    # mixture in float64 for the inverse; (F, B) planes per channel
    x0r, x0i, x1r, x1i = (p.double() for p in (xr[:, :, 0], xi[:, :, 0], xr[:, :, 1], xi[:, :, 1]))
    for _ in range(iterations):
        # channel planes, each (F, B, J)
        yr0, yr1, yi0, yi1 = yr[:, :, 0], yr[:, :, 1], yi[:, :, 0], yi[:, :, 1]
        # |y_c|^2 written exactly like the real part of y_c conj(y_d), so identical channels give a
        # bitwise-consistent (rank-one) covariance
        p0 = yr0 * yr0 + yi0 * yi0
        p1 = yr1 * yr1 + yi1 * yi1
        v = 0.5 * (p0 + p1)  # PSD (F, B, J)
        weight = v.sum(dim=0) + eps  # (B, J)
        r00 = p0.sum(dim=0) / weight
        r11 = p1.sum(dim=0) / weight
        # R_01 = sum_t y_0 conj(y_1) / weight
        r01r = (yr0 * yr1 + yi0 * yi1).sum(dim=0) / weight
        r01i = (yi0 * yr1 - yr0 * yi1).sum(dim=0) / weight
        # mixture covariance entries in float64: (F, B, J) x (B, J, 4) -> (F, B, 4)
        rstack = torch.stack([r00, r11, r01r, r01i], dim=-1).double()
        cxx = torch.einsum("fbj,bjk->fbk", v.double(), rstack)
        c00 = cxx[..., 0] + reg
        c11 = cxx[..., 1] + reg
        c01r = cxx[..., 2]
        c01i = cxx[..., 3]
        det = c00 * c11 - (c01r * c01r + c01i * c01i)  # real: C_xx is Hermitian
        inv_det = 1.0 / det
        # z = C_xx^{-1} x with C^{-1} = [[c11, -c01], [-conj(c01), c00]] / det, each (F, B)
        z0r = (c11 * x0r - (c01r * x1r - c01i * x1i)) * inv_det
        z0i = (c11 * x0i - (c01r * x1i + c01i * x1r)) * inv_det
        z1r = (c00 * x1r - (c01r * x0r + c01i * x0i)) * inv_det
        z1i = (c00 * x1i - (c01r * x0i - c01i * x0r)) * inv_det
        # back to the working precision, (F, B, 1) to broadcast over sources
        z0r, z0i, z1r, z1i = (z.to(yr.dtype).unsqueeze(-1) for z in (z0r, z0i, z1r, z1i))
        # y_j = v_j R_j z, R_j = [[r00, r01], [conj(r01), r11]]
        new_r = torch.empty_like(yr)
        new_i = torch.empty_like(yi)
        a = r00 * z0r
        a = torch.addcmul(a, r01r, z1r)
        a = torch.addcmul(a, r01i, z1i, value=-1.0)
        torch.mul(a, v, out=new_r[:, :, 0])
        a = r00 * z0i
        a = torch.addcmul(a, r01r, z1i)
        a = torch.addcmul(a, r01i, z1r)
        torch.mul(a, v, out=new_i[:, :, 0])
        a = r11 * z1r
        a = torch.addcmul(a, r01r, z0r)
        a = torch.addcmul(a, r01i, z0i)
        torch.mul(a, v, out=new_r[:, :, 1])
        a = r11 * z1i
        a = torch.addcmul(a, r01r, z0i)
        a = torch.addcmul(a, r01i, z0r, value=-1.0)
        torch.mul(a, v, out=new_i[:, :, 1])
        yr, yi = new_r, new_i
    return yr, yi


def _em_general(yr, yi, xr, xi, iterations: int, eps: float):
    """EM for one channel or more than two channels (complex tensors, torch.linalg for C > 2).

    Args:
        yr, yi: `(nb_frames, nb_bins, nb_channels, nb_sources)` scaled initial estimates.
        xr, xi: `(nb_frames, nb_bins, nb_channels)` scaled mixture.

    Returns:
        yr, yi of the same shape.
    """
    reg = math.sqrt(eps)
    nb_channels = xr.shape[2]
    y = torch.complex(yr, yi)
    x64 = torch.complex(xr.double(), xi.double())  # (F, B, C)
    eye = torch.eye(nb_channels, dtype=torch.complex128, device=xr.device)
    for _ in range(iterations):
        power = yr * yr + yi * yi  # (F, B, C, J)
        v = power.mean(dim=2)  # (F, B, J)
        weight = v.sum(dim=0) + eps  # (B, J)
        # R_j[b] = sum_t y y^H: (F, B, C, J) x (F, B, D, J) -> (B, J, C, D)
        r = torch.einsum("fbcj,fbdj->bjcd", y, y.conj()) / weight[..., None, None]
        # C_xx = sum_j v_j R_j: (F, B, J) x (B, J, C, D) -> (F, B, C, D), float64
        cxx = torch.einsum("fbj,bjcd->fbcd", v.double().to(torch.complex128), r.to(torch.complex128))
        cxx = cxx + reg * eye
        if nb_channels == 1:
            z = x64 / (cxx[..., 0] + eps)  # (F, B, 1), norbert's scalar inverse 1 / (M + eps)
        else:
            z = torch.linalg.solve(cxx, x64.unsqueeze(-1)).squeeze(-1)  # (F, B, C)
        # y_j = v_j R_j z: (B, J, C, D) x (F, B, D) -> (F, B, C, J)
        y = torch.einsum("bjcd,fbd->fbcj", r, z.to(y.dtype)) * v.unsqueeze(2)
        yr, yi = y.real, y.imag
    return yr.contiguous(), yi.contiguous()


def _wiener_torch(targets, mix, iterations, softmask, residual, scale_factor, eps, per_bin_scale):
    """Shared torch implementation; `per_bin_scale` normalises each bin by its own maximum."""
    real_dtype = mix.real.dtype
    targets = targets.to(dtype=real_dtype, device=mix.device)
    xr, xi = mix.real, mix.imag  # (F, B, C) views
    yr, yi = _initial_planes(targets, xr, xi, mix, softmask, residual, eps)
    if iterations == 0:
        return torch.complex(yr, yi)
    # scale: max(1, max|x| / scale_factor), globally or per bin, kept on the device (no sync)
    mag = mix.abs()
    peak = mag.amax(dim=(0, 2), keepdim=True) if per_bin_scale else mag.amax()
    max_abs = torch.clamp(peak / scale_factor, min=1.0)  # () or (1, B, 1)
    scale_y = max_abs.unsqueeze(-1) if per_bin_scale else max_abs  # (1, B, 1, 1) over sources
    yr, yi = yr / scale_y, yi / scale_y
    xr, xi = xr / max_abs, xi / max_abs
    if xr.shape[2] == 2:
        yr, yi = _em_stereo(yr, yi, xr, xi, int(iterations), eps)
    else:
        yr, yi = _em_general(yr, yi, xr, xi, int(iterations), eps)
    return torch.complex(yr * scale_y, yi * scale_y)


def wiener(
    targets_spectrograms: torch.Tensor,
    mix_stft: torch.Tensor,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float = 1e-10,
) -> torch.Tensor:
    """Wiener-EM separation of a multichannel mixture (torch; norbert 0.2.1 semantics).

    Args:
        targets_spectrograms: real `(nb_frames, nb_bins, {1, nb_channels}, nb_sources)` magnitude estimates
            (cast to the real dtype of `mix_stft`; one channel is broadcast).
        mix_stft: complex64/complex128 `(nb_frames, nb_bins, nb_channels)` mixture coefficients.
        iterations: EM iterations; 0 returns the initial estimate.
        softmask: initialise with ratio masks instead of target magnitude x mixture phase.
        residual: append a source `mix - sum(sources)` to the initial estimates.
        scale_factor: mixture and estimates are divided by `max(1, max|mix| / scale_factor)` during EM.
        eps: regulariser (weights, ratio mask, `sqrt(eps)` added to the mixture covariance diagonal).

    Returns:
        complex `(nb_frames, nb_bins, nb_channels, nb_sources[+1])` with the dtype and device of `mix_stft`.
        Inputs are never modified.  Computations are vectorised over frames and bins (no Python loop
        over frames); memory is a few times the size of the output.
    """
    if not torch.is_tensor(mix_stft) or not mix_stft.is_complex():
        raise TypeError(f"{_WHERE}: wiener: mix_stft must be a complex torch tensor, got {type(mix_stft)}"
                        f"{'' if not torch.is_tensor(mix_stft) else ' of dtype ' + str(mix_stft.dtype)}")
    if not torch.is_tensor(targets_spectrograms) or targets_spectrograms.is_complex():
        raise TypeError(f"{_WHERE}: wiener: targets_spectrograms must be a real torch tensor")
    _check_stft_shapes("wiener", targets_spectrograms.shape, mix_stft.shape)
    _check_scalars("wiener", iterations, scale_factor, eps)
    return _wiener_torch(targets_spectrograms, mix_stft, iterations, softmask, residual,
                         float(scale_factor), float(eps), per_bin_scale=False)


# ---------------------------------------------------------------------------------------------------------
# numba implementation: one independent EM problem per (bin[, window, sample]) task
# ---------------------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _nb_max_abs(x):
    """Largest |x| of a complex `(nb_channels, nb_slices, T)` view."""
    best = 0.0
    for c in range(x.shape[0]):
        for s in range(x.shape[1]):
            for t in range(x.shape[2]):
                a = abs(complex(x[c, s, t]))
                if a > best:
                    best = a
    return best


@numba.njit(cache=True, nogil=True)
def _nb_solve(a, b, z):
    """Solve the small complex system `a z = b` (Gaussian elimination, partial pivoting); `a`, `b` are clobbered."""
    n = a.shape[0]
    for k in range(n):
        piv = k
        for i in range(k + 1, n):
            if abs(a[i, k]) > abs(a[piv, k]):
                piv = i
        if piv != k:
            for m in range(n):
                tmp = a[k, m]
                a[k, m] = a[piv, m]
                a[piv, m] = tmp
            tmp = b[k]
            b[k] = b[piv]
            b[piv] = tmp
        for i in range(k + 1, n):
            f = a[i, k] / a[k, k]
            for m in range(k, n):
                a[i, m] -= f * a[k, m]
            b[i] -= f * b[k]
    for k in range(n - 1, -1, -1):
        acc = b[k]
        for m in range(k + 1, n):
            acc -= a[k, m] * z[m]
        z[k] = acc / a[k, k]


@numba.njit(cache=True, nogil=True)
def _nb_em_problem(x, tgt, out, scale, iterations, softmask, residual, eps):
    """Wiener-EM of one bin (all its frames); frames are the (slice, T) grid of the views.

    Args:
        x: complex `(nb_channels, nb_slices, T)` mixture view.
        tgt: real `(nb_sources, {1, nb_channels}, nb_slices, T)` target magnitudes view.
        out: complex `(nb_sources[+1], nb_channels, nb_slices, T)` output view, fully overwritten.
        scale: the `max_abs` normaliser (>= 1).
    All arithmetic is float64/complex128; `out` keeps its own dtype.
    """
    nb_channels = x.shape[0]
    nb_slices = x.shape[1]
    nb_t = x.shape[2]
    nb_src = tgt.shape[0]
    nb_tch = tgt.shape[1]
    nb_out = out.shape[0]
    reg = math.sqrt(eps)
    inv_scale = 1.0 / scale
    first = 1.0 if iterations == 0 else inv_scale

    # ---- initial estimate (scaled by 1/scale when EM follows)
    for s in range(nb_slices):
        for t in range(nb_t):
            for c in range(nb_channels):
                ct = c if nb_tch > 1 else 0
                xv = complex(x[c, s, t])
                acc = 0.0j
                if softmask:
                    total = 0.0
                    for j in range(nb_src):
                        total += float(tgt[j, ct, s, t])
                    for j in range(nb_src):
                        yj = (float(tgt[j, ct, s, t]) / (eps + total)) * xv
                        acc += yj
                        out[j, c, s, t] = yj * first
                else:
                    mag = abs(xv)
                    ph = xv / mag if mag > 0.0 else 1.0 + 0.0j
                    for j in range(nb_src):
                        yj = float(tgt[j, ct, s, t]) * ph
                        acc += yj
                        out[j, c, s, t] = yj * first
                if residual:
                    out[nb_src, c, s, t] = (xv - acc) * first

    if iterations == 0:
        return

    rmat = np.zeros((nb_out, nb_channels, nb_channels), dtype=np.complex128)
    weight = np.zeros(nb_out, dtype=np.float64)
    v = np.zeros(nb_out, dtype=np.float64)
    cxx = np.zeros((nb_channels, nb_channels), dtype=np.complex128)
    xs = np.zeros(nb_channels, dtype=np.complex128)
    z = np.zeros(nb_channels, dtype=np.complex128)
    inv_c = 1.0 / nb_channels
    for it in range(iterations):
        out_gain = scale if it == iterations - 1 else 1.0
        # ---- statistics: R_j = sum_t y y^H / (eps + sum_t v_j)   (upper triangle, mirrored)
        rmat[:] = 0.0
        weight[:] = 0.0
        for s in range(nb_slices):
            for t in range(nb_t):
                for j in range(nb_out):
                    pw = 0.0
                    for c in range(nb_channels):
                        yc = complex(out[j, c, s, t])
                        for d in range(c, nb_channels):
                            yd = complex(out[j, d, s, t])
                            # y_c conj(y_d), written out so the diagonal matches the off-diagonal formula
                            re = yc.real * yd.real + yc.imag * yd.imag
                            im = yc.imag * yd.real - yc.real * yd.imag
                            rmat[j, c, d] += complex(re, im)
                            if d == c:
                                pw += re
                    weight[j] += pw * inv_c
        for j in range(nb_out):
            w = eps + weight[j]
            for c in range(nb_channels):
                for d in range(c, nb_channels):
                    rmat[j, c, d] = rmat[j, c, d] / w
                    if d != c:
                        rmat[j, d, c] = rmat[j, c, d].conjugate()
                rmat[j, c, c] = complex(rmat[j, c, c].real, 0.0)
        # ---- Wiener gain per frame
        for s in range(nb_slices):
            for t in range(nb_t):
                for j in range(nb_out):
                    pw = 0.0
                    for c in range(nb_channels):
                        yc = complex(out[j, c, s, t])
                        pw += yc.real * yc.real + yc.imag * yc.imag
                    v[j] = pw * inv_c
                for c in range(nb_channels):
                    xs[c] = complex(x[c, s, t]) * inv_scale
                if nb_channels == 1:
                    acc = reg
                    for j in range(nb_out):
                        acc += v[j] * rmat[j, 0, 0].real
                    z[0] = xs[0] / (acc + eps)
                elif nb_channels == 2:
                    c00 = reg
                    c11 = reg
                    c01 = 0.0j
                    for j in range(nb_out):
                        c00 += v[j] * rmat[j, 0, 0].real
                        c11 += v[j] * rmat[j, 1, 1].real
                        c01 += v[j] * rmat[j, 0, 1]
                    det = c00 * c11 - (c01.real * c01.real + c01.imag * c01.imag)
                    inv_det = 1.0 / det
                    z[0] = (c11 * xs[0] - c01 * xs[1]) * inv_det
                    z[1] = (c00 * xs[1] - c01.conjugate() * xs[0]) * inv_det
                else:
                    for c in range(nb_channels):
                        for d in range(nb_channels):
                            acc = 0.0j
                            for j in range(nb_out):
                                acc += v[j] * rmat[j, c, d]
                            cxx[c, d] = acc
                        cxx[c, c] += reg
                    _nb_solve(cxx, xs, z)
                for j in range(nb_out):
                    g = v[j] * out_gain
                    for c in range(nb_channels):
                        acc = 0.0j
                        for d in range(nb_channels):
                            acc += rmat[j, c, d] * z[d]
                        out[j, c, s, t] = g * acc


@numba.njit(cache=True, parallel=True)
def _nb_wiener_bins(xv, tv, ov, iterations, softmask, residual, scale_factor, eps):
    """All bins of an STFT-layout problem in parallel.

    Args:
        xv: complex `(nb_bins, nb_channels, 1, nb_frames)` view of the mixture.
        tv: real `(nb_bins, nb_sources, {1, nb_channels}, 1, nb_frames)` view of the targets.
        ov: complex `(nb_bins, nb_sources[+1], nb_channels, 1, nb_frames)` view of the output.
    """
    nb_bins = xv.shape[0]
    peaks = np.zeros(nb_bins)
    for b in numba.prange(nb_bins):
        peaks[b] = _nb_max_abs(xv[b])
    scale = max(1.0, peaks.max() / scale_factor) if nb_bins > 0 else 1.0
    for b in numba.prange(nb_bins):
        _nb_em_problem(xv[b], tv[b], ov[b], scale, iterations, softmask, residual, eps)


@numba.njit(cache=True, parallel=True)
def _nb_wiener_matrix(mix, tgt, out, lengths, window, iterations, softmask, residual, scale_factor, eps):
    """All (sample, window, bin) problems of a zero-padded sliCQ matrix in parallel.

    Args:
        mix: complex `(nb_samples, nb_channels, nb_bins, nb_slices, max_T)`.
        tgt: real `(nb_samples, nb_targets, {1, nb_channels}, nb_bins, nb_slices, max_T)`.
        out: complex `(nb_samples, nb_targets[+1], nb_channels, nb_bins, nb_slices, max_T)`, zero-filled;
            only the valid region `[..., f, :, :lengths[f]]` is written.
        lengths: int64 `(nb_bins,)` valid coefficients per slice of each bin.
        window: slices per EM window.
    """
    nb_samples = mix.shape[0]
    nb_bins = mix.shape[2]
    nb_slices = mix.shape[3]
    nb_win = (nb_slices + window - 1) // window
    nb_tasks = nb_samples * nb_win * nb_bins
    for task in numba.prange(nb_tasks):
        # task -> (sample n, window w, bin b)
        n = task // (nb_win * nb_bins)
        rest = task - n * nb_win * nb_bins
        w = rest // nb_bins
        b = rest - w * nb_bins
        s0 = w * window
        s1 = min(nb_slices, s0 + window)
        nt = lengths[b]
        x = mix[n, :, b, s0:s1, :nt]  # (C, Sw, T_b)
        scale = max(1.0, _nb_max_abs(x) / scale_factor)  # per-bin, per-window normaliser
        _nb_em_problem(x, tgt[n, :, :, b, s0:s1, :nt], out[n, :, :, b, s0:s1, :nt], scale,
                       iterations, softmask, residual, eps)


def _as_numpy_pair(fn: str, targets, mix):
    """Validate numpy inputs; returns (targets cast to mix's real dtype, mix)."""
    if not isinstance(mix, np.ndarray) or mix.dtype not in (np.complex64, np.complex128):
        raise TypeError(f"{_WHERE}: {fn}: mix must be a complex64/complex128 numpy array, got "
                        f"{type(mix).__name__}{'' if not isinstance(mix, np.ndarray) else ' ' + str(mix.dtype)}")
    if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.floating):
        raise TypeError(f"{_WHERE}: {fn}: targets must be a real floating numpy array, got "
                        f"{type(targets).__name__}{'' if not isinstance(targets, np.ndarray) else ' ' + str(targets.dtype)}")
    real = np.float32 if mix.dtype == np.complex64 else np.float64
    return targets.astype(real, copy=False), mix


def wiener_numba(
    targets_spectrograms: np.ndarray,
    mix_stft: np.ndarray,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float = 1e-10,
) -> np.ndarray:
    """Numba Wiener-EM, same arguments and results as :func:`wiener` (numpy in, numpy out).

    Args:
        targets_spectrograms: real float32/float64 `(nb_frames, nb_bins, {1, nb_channels}, nb_sources)`.
        mix_stft: complex64/complex128 `(nb_frames, nb_bins, nb_channels)`.
        iterations, softmask, residual, scale_factor, eps: as in :func:`wiener`.

    Returns:
        C-contiguous complex `(nb_frames, nb_bins, nb_channels, nb_sources[+1])`, dtype of `mix_stft`.
        Bins run in parallel (`numba.prange`, `numba.set_num_threads` controls the threads); each bin's
        EM is fused into two passes over its frames per iteration, all arithmetic in float64.  The first
        call per dtype compiles (cached on disk, `cache=True`).
    """
    targets, mix = _as_numpy_pair("wiener_numba", targets_spectrograms, mix_stft)
    _check_stft_shapes("wiener_numba", targets.shape, mix.shape)
    _check_scalars("wiener_numba", iterations, scale_factor, eps)
    nb_frames, nb_bins, nb_channels = mix.shape
    nb_out = targets.shape[3] + (1 if residual else 0)
    out = np.empty((nb_frames, nb_bins, nb_channels, nb_out), dtype=mix.dtype)
    # views with one bin per leading index and frames as the (1, nb_frames) slice grid:
    xv = mix.transpose(1, 2, 0)[:, :, None, :]  # (F, B, C) -> (B, C, 1, F)
    tv = targets.transpose(1, 3, 2, 0)[:, :, :, None, :]  # (F, B, Ct, J) -> (B, J, Ct, 1, F)
    ov = out.transpose(1, 3, 2, 0)[:, :, :, None, :]  # (F, B, C, J') -> (B, J', C, 1, F)
    _nb_wiener_bins(xv, tv, ov, int(iterations), bool(softmask), bool(residual), float(scale_factor),
                    float(eps))
    return out


# ---------------------------------------------------------------------------------------------------------
# zero-padded sliCQ matrix glue
# ---------------------------------------------------------------------------------------------------------


def _runs(lengths: np.ndarray):
    """Maximal runs of consecutive bins with the same length: list of (first_bin, end_bin, T)."""
    runs = []
    start = 0
    for b in range(1, len(lengths) + 1):
        if b == len(lengths) or lengths[b] != lengths[start]:
            runs.append((start, b, int(lengths[start])))
            start = b
    return runs


def _wiener_matrix_torch(targets, mix, lengths, iterations, softmask, residual, scale_factor, eps, window):
    nb_samples, nb_channels, nb_bins, nb_slices, max_t = mix.shape
    nb_src, nb_tch = targets.shape[1], targets.shape[2]
    nb_out = nb_src + (1 if residual else 0)
    out = torch.zeros((nb_samples, nb_out, nb_channels, nb_bins, nb_slices, max_t), dtype=mix.dtype,
                      device=mix.device)
    for s0 in range(0, nb_slices, window):
        s1 = min(nb_slices, s0 + window)
        nb_sl = s1 - s0
        for b0, b1, nt in _runs(lengths):
            nb = b1 - b0
            # (N, C, nb, Sw, T) -> (Sw, T, N, nb, C): frames first, samples folded into the bin axis
            x = mix[:, :, b0:b1, s0:s1, :nt].permute(3, 4, 0, 2, 1)
            x = x.reshape(nb_sl * nt, nb_samples * nb, nb_channels)  # (frames, N*nb, C)
            # (N, J, Ct, nb, Sw, T) -> (Sw, T, N, nb, Ct, J)
            tg = targets[:, :, :, b0:b1, s0:s1, :nt].permute(4, 5, 0, 3, 2, 1)
            tg = tg.reshape(nb_sl * nt, nb_samples * nb, nb_tch, nb_src)  # (frames, N*nb, Ct, J)
            y = _wiener_torch(tg, x, iterations, softmask, residual, scale_factor, eps, per_bin_scale=True)
            # (frames, N*nb, C, J') -> (Sw, T, N, nb, C, J') -> (N, J', C, nb, Sw, T)
            y = y.reshape(nb_sl, nt, nb_samples, nb, nb_channels, nb_out).permute(2, 5, 4, 3, 0, 1)
            out[:, :, :, b0:b1, s0:s1, :nt] = y
    return out


def wiener_matrix(
    targets_magnitude: Union[torch.Tensor, np.ndarray],
    mix_matrix: Union[torch.Tensor, np.ndarray],
    bin_lengths: Union[torch.Tensor, np.ndarray, Sequence[int]],
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float = 1e-10,
    window_frames: Optional[int] = 300,
    backend: str = "torch",
) -> Union[torch.Tensor, np.ndarray]:
    """Wiener-EM on the zero-padded sliCQ matrix form.

    Bin `f` holds valid coefficients only in `[..., f, :, :bin_lengths[f]]`; the rest is padding.  For
    every sample, bin and window the valid `(slice, t)` grid is flattened into frames (slice-major) and
    filtered as one independent problem: padding never enters the statistics, padded outputs stay exactly
    zero, and target values in the padding are ignored.

    Normalisation: `max(1, max|mix| / scale_factor)` is taken per (sample, bin, window), so each bin is
    filtered exactly like :func:`wiener` on that bin's valid frames alone and the result does not depend
    on the other bins.  (The original xumx-sliCQ took one maximum over the whole padded window; the two
    only differ through the `sqrt(eps)` regulariser's relative size.)

    Args:
        targets_magnitude: real `(nb_samples, nb_targets, {1, nb_channels}, nb_bins, nb_slices, max_T)`.
        mix_matrix: complex `(nb_samples, nb_channels, nb_bins, nb_slices, max_T)`.
        bin_lengths: ints `(nb_bins,)`, each in `[1, max_T]`.
        iterations, softmask, residual, scale_factor, eps: as in :func:`wiener`.
        window_frames: EM window length counted in **slices** (each slice gives bin `f` `bin_lengths[f]`
            frames), like open-unmix's `wiener_win_len`: statistics are local to a window and the torch
            backend's working memory is bounded by one window of one run of equal-length bins.
            None means one window over all slices.
        backend: "torch" (vectorised, any device) or "numba" (CPU, one parallel task per
            (sample, window, bin)).  Torch or numpy inputs are accepted by both; the result has the type,
            dtype and (torch) device of `mix_matrix`.

    Returns:
        complex `(nb_samples, nb_targets[+1], nb_channels, nb_bins, nb_slices, max_T)`.
    """
    fn = "wiener_matrix"
    _check_scalars(fn, iterations, scale_factor, eps)
    if backend not in ("torch", "numba"):
        raise ValueError(f"{_WHERE}: {fn}: backend must be 'torch' or 'numba', got {backend!r}")
    is_torch = torch.is_tensor(mix_matrix)
    if is_torch:
        if not mix_matrix.is_complex():
            raise TypeError(f"{_WHERE}: {fn}: mix_matrix must be complex, got {mix_matrix.dtype}")
    elif not isinstance(mix_matrix, np.ndarray) or mix_matrix.dtype not in (np.complex64, np.complex128):
        raise TypeError(f"{_WHERE}: {fn}: mix_matrix must be a complex torch tensor or numpy array")
    if torch.is_tensor(targets_magnitude) and targets_magnitude.is_complex() or (
            isinstance(targets_magnitude, np.ndarray) and np.iscomplexobj(targets_magnitude)):
        raise TypeError(f"{_WHERE}: {fn}: targets_magnitude must be real")
    mshape, tshape = tuple(mix_matrix.shape), tuple(targets_magnitude.shape)
    if len(mshape) != 5:
        raise ValueError(f"{_WHERE}: {fn}: mix_matrix must be (nb_samples, nb_channels, nb_bins, nb_slices, "
                         f"max_T), got shape {mshape}")
    if len(tshape) != 6 or tshape[0] != mshape[0] or tshape[2] not in (1, mshape[1]) or tshape[3:] != mshape[2:]:
        raise ValueError(f"{_WHERE}: {fn}: targets_magnitude shape {tshape} does not match mix_matrix {mshape}; "
                         "expected (nb_samples, nb_targets, {1, nb_channels}, nb_bins, nb_slices, max_T)")
    if tshape[1] < 1:
        raise ValueError(f"{_WHERE}: {fn}: need at least one target, got shape {tshape}")
    if torch.is_tensor(bin_lengths):
        lengths = bin_lengths.detach().cpu().numpy()
    else:
        lengths = np.asarray(bin_lengths)
    if lengths.shape != (mshape[2],) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"{_WHERE}: {fn}: bin_lengths must be {mshape[2]} integers (one per bin), got "
                         f"shape {lengths.shape} dtype {lengths.dtype}")
    lengths = lengths.astype(np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > mshape[4]):
        raise ValueError(f"{_WHERE}: {fn}: bin_lengths must lie in [1, max_T={mshape[4]}], got "
                         f"[{lengths.min()}, {lengths.max()}]")
    nb_slices = mshape[3]
    window = nb_slices if window_frames is None else int(window_frames)
    if window < 1:
        raise ValueError(f"{_WHERE}: {fn}: window_frames must be >= 1 slice or None, got {window_frames!r}")
    window = max(1, min(window, nb_slices))

    if backend == "torch":
        mix_t = mix_matrix if is_torch else torch.from_numpy(mix_matrix)
        tgt_t = (targets_magnitude if torch.is_tensor(targets_magnitude) else torch.from_numpy(
            np.asarray(targets_magnitude))).to(device=mix_t.device, dtype=mix_t.real.dtype)
        out = _wiener_matrix_torch(tgt_t, mix_t, lengths, int(iterations), bool(softmask), bool(residual),
                                   float(scale_factor), float(eps), window)
        return out if is_torch else out.numpy()

    # numba backend
    mix_np = mix_matrix.detach().cpu().resolve_conj().numpy() if is_torch else mix_matrix
    tgt_np = (targets_magnitude.detach().cpu().numpy() if torch.is_tensor(targets_magnitude)
              else np.asarray(targets_magnitude))
    tgt_np, mix_np = _as_numpy_pair(fn, tgt_np, mix_np)
    nb_out = tshape[1] + (1 if residual else 0)
    out = np.zeros((mshape[0], nb_out) + mshape[1:], dtype=mix_np.dtype)
    with numba.parallel_chunksize(1):  # tasks differ in size (T from 16 to 292): hand them out one by one
        _nb_wiener_matrix(mix_np, tgt_np, out, lengths, window, int(iterations), bool(softmask),
                          bool(residual), float(scale_factor), float(eps))
    if is_torch:
        return torch.from_numpy(out).to(mix_matrix.device)
    return out
