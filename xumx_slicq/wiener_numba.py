"""Wiener-EM on the sliCQ blocks with numba kernels (CPU): the ``backend="numba"`` of
:func:`xumx_slicq.filtering.wiener_blocks`, same results as its torch backend within float error.

The block layout holds each bin's frames contiguously, the kernels' natural layout: the blocks are packed into flat
buffers (one copy, no permutes) and every (block, sample, bin) problem runs in one parallel call, largest first.
Stereo problems run :func:`_em_stereo` (closed-form 2x2 inverse), other channel counts :func:`_em_general` (one
channel: ``1 / (C_xx + eps)`` as norbert; more: a small pivoted solve).  All arithmetic is float64; the estimates
are stored between passes in the mixture's precision.
"""

from __future__ import annotations

import math
import os
from typing import List, Sequence

import numba
import numpy as np
import torch
from torch import Tensor


# numba's default parallel backend here is GNU OpenMP, whose idle worker threads keep spinning after a parallel
# region and starve PyTorch's own threads (docs/wiener.md). The "workqueue" layer parks its threads instead. A
# user's explicit choice (NUMBA_THREADING_LAYER) wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

__all__ = ["wiener_blocks_numba"]


@numba.njit(cache=True, nogil=True, fastmath={"contract", "arcp", "nsz"})
def _em_stereo(x, tgt, out, scale, iterations, softmask, residual, eps):
    """Wiener-EM of one stereo problem (one bin) whose frames are contiguous.

    One pass over the frames per iteration: the statistics of the next iteration are accumulated while the new
    estimates are written (the initial-estimate pass accumulates the first ones).  The initial estimate is written
    out here and in :func:`_em_general` on purpose: a shared inlined helper made this kernel slower (docs/wiener.md).

    Args:
        x: complex ``(2, nb_frames)`` mixture.
        tgt: real ``(nb_sources, 2, nb_frames)`` target magnitudes.
        out: complex ``(nb_sources[+1], 2, nb_frames)``, fully overwritten.
        scale: the normaliser ``max(1, max|mix| / scale_factor)``.
    """
    nf = x.shape[1]
    nj = tgt.shape[0]
    no = out.shape[0]
    em = iterations > 0
    first = 1.0 / scale if em else 1.0
    reg = math.sqrt(eps)
    # per source: sums of |y0|^2, |y1|^2, y0 conj(y1) and of the PSD mean_c |y_c|^2
    s00 = np.zeros(no)
    s11 = np.zeros(no)
    s01 = np.zeros(no, dtype=np.complex128)
    sw = np.zeros(no)
    y = np.empty((no, 2), dtype=np.complex128)
    for f in range(nf):
        for c in range(2):
            xv = complex(x[c, f]) * first
            acc = 0.0j
            if softmask:
                total = 0.0
                for j in range(nj):
                    total += float(tgt[j, c, f])
                for j in range(nj):
                    yj = (float(tgt[j, c, f]) / (eps + total)) * xv
                    acc += yj
                    y[j, c] = yj
            else:
                # unit phasor exp(i angle(x)), 1 where x == 0; hypot only outside the safe range
                sq = xv.real * xv.real + xv.imag * xv.imag
                if 1e-300 < sq < 1e300:
                    ph = xv * (1.0 / math.sqrt(sq))
                elif xv.real == 0.0 and xv.imag == 0.0:
                    ph = 1.0 + 0.0j
                else:
                    ph = xv * (1.0 / abs(xv))
                ph = ph * first
                for j in range(nj):
                    yj = float(tgt[j, c, f]) * ph
                    acc += yj
                    y[j, c] = yj
            if residual:
                y[nj, c] = xv - acc
        for j in range(no):
            y0 = y[j, 0]
            y1 = y[j, 1]
            out[j, 0, f] = y0
            out[j, 1, f] = y1
            if em:
                # |y_c|^2 written like Re(y_c conj(y_d)): identical channels keep a rank-one covariance
                p00 = y0.real * y0.real + y0.imag * y0.imag
                p11 = y1.real * y1.real + y1.imag * y1.imag
                s00[j] += p00
                s11[j] += p11
                s01[j] += complex(y0.real * y1.real + y0.imag * y1.imag, y0.imag * y1.real - y0.real * y1.imag)
                sw[j] += (p00 + p11) * 0.5
    r00 = np.empty(no)
    r11 = np.empty(no)
    r01 = np.empty(no, dtype=np.complex128)
    v = np.empty(no)
    inv_scale = 1.0 / scale
    for it in range(iterations):
        last = it == iterations - 1
        # spatial covariances R_j = sum y y^H / (eps + sum v_j), Hermitian with a real diagonal
        for j in range(no):
            wj = eps + sw[j]
            r00[j] = s00[j] / wj
            r11[j] = s11[j] / wj
            r01[j] = s01[j] / wj
            s00[j] = 0.0
            s11[j] = 0.0
            s01[j] = 0.0j
            sw[j] = 0.0
        for f in range(nf):
            # mixture covariance C_xx = sum_j v_j R_j + sqrt(eps) I
            c00 = reg
            c11 = reg
            c01 = 0.0j
            for j in range(no):
                y0 = complex(out[j, 0, f])
                y1 = complex(out[j, 1, f])
                vj = (y0.real * y0.real + y0.imag * y0.imag + y1.real * y1.real + y1.imag * y1.imag) * 0.5
                v[j] = vj
                c00 += vj * r00[j]
                c11 += vj * r11[j]
                c01 += vj * r01[j]
            x0 = complex(x[0, f]) * inv_scale
            x1 = complex(x[1, f]) * inv_scale
            # z = C_xx^{-1} x, closed-form Hermitian 2x2 inverse
            inv_det = 1.0 / (c00 * c11 - (c01.real * c01.real + c01.imag * c01.imag))
            z0 = (c11 * x0 - c01 * x1) * inv_det
            z1 = (c00 * x1 - c01.conjugate() * x0) * inv_det
            for j in range(no):
                # y_j = v_j R_j z
                y0 = v[j] * (r00[j] * z0 + r01[j] * z1)
                y1 = v[j] * (r01[j].conjugate() * z0 + r11[j] * z1)
                if last:
                    out[j, 0, f] = y0 * scale
                    out[j, 1, f] = y1 * scale
                else:
                    out[j, 0, f] = y0
                    out[j, 1, f] = y1
                    p00 = y0.real * y0.real + y0.imag * y0.imag
                    p11 = y1.real * y1.real + y1.imag * y1.imag
                    s00[j] += p00
                    s11[j] += p11
                    s01[j] += complex(y0.real * y1.real + y0.imag * y1.imag,
                                      y0.imag * y1.real - y0.real * y1.imag)
                    sw[j] += (p00 + p11) * 0.5


@numba.njit(cache=True, nogil=True, inline="always")
def _accumulate(y, racc, wacc):
    """Add one frame's estimates ``y`` ``(nb_sources, nb_channels)`` to the sums ``racc[j] += y_j y_j^H`` (upper
    triangle, ``(nb_sources, nb_channels, nb_channels)``) and ``wacc[j] += mean_c |y_jc|^2``; ``|y_c|^2`` is
    written like ``Re(y_c conj(y_d))``."""
    nb_out, nb_channels = y.shape
    for j in range(nb_out):
        pw = 0.0
        for c in range(nb_channels):
            yc = y[j, c]
            for d in range(c, nb_channels):
                yd = y[j, d]
                re = yc.real * yd.real + yc.imag * yd.imag
                racc[j, c, d] += complex(re, yc.imag * yd.real - yc.real * yd.imag)
                if d == c:
                    pw += re
        wacc[j] += pw / nb_channels


@numba.njit(cache=True, nogil=True)
def _solve(a, b, z):
    """Solve the small complex system ``a z = b`` (Gaussian elimination, partial pivoting); ``a``, ``b`` are
    clobbered."""
    n = a.shape[0]
    for k in range(n):
        piv = k
        for i in range(k + 1, n):
            if abs(a[i, k]) > abs(a[piv, k]):
                piv = i
        if piv != k:  # swap rows k and piv
            for m in range(n):
                a[k, m], a[piv, m] = a[piv, m], a[k, m]
            b[k], b[piv] = b[piv], b[k]
        for i in range(k + 1, n):
            f = a[i, k] / a[k, k]
            for m in range(k, n):
                a[i, m] -= f * a[k, m]
            b[i] -= f * b[k]
    for k in range(n - 1, -1, -1):  # back substitution
        acc = b[k]
        for m in range(k + 1, n):
            acc -= a[k, m] * z[m]
        z[k] = acc / a[k, k]


@numba.njit(cache=True, nogil=True, fastmath={"contract", "arcp", "nsz"})
def _em_general(x, tgt, out, scale, iterations, softmask, residual, eps):
    """Wiener-EM of one problem (one bin) with any channel count, frames contiguous; :func:`_em_stereo`'s passes
    with ``nb_channels x nb_channels`` covariances.

    Args:
        x: complex ``(nb_channels, nb_frames)`` mixture.
        tgt: real ``(nb_sources, nb_channels, nb_frames)`` target magnitudes.
        out: complex ``(nb_sources[+1], nb_channels, nb_frames)``, fully overwritten.
        scale: the normaliser ``max(1, max|mix| / scale_factor)``.
    """
    nc, nf = x.shape
    nj = tgt.shape[0]
    no = out.shape[0]
    em = iterations > 0
    first = 1.0 / scale if em else 1.0
    reg = math.sqrt(eps)
    y = np.zeros((no, nc), dtype=np.complex128)  # one frame's estimates
    racc = np.zeros((no, nc, nc), dtype=np.complex128)  # sum_t y y^H
    wacc = np.zeros(no)  # sum_t v
    rmat = np.zeros((no, nc, nc), dtype=np.complex128)  # R_j
    v = np.zeros(no)
    cxx = np.zeros((nc, nc), dtype=np.complex128)
    xs = np.zeros(nc, dtype=np.complex128)
    z = np.zeros(nc, dtype=np.complex128)
    for f in range(nf):
        for c in range(nc):
            xv = complex(x[c, f]) * first
            acc = 0.0j
            if softmask:
                total = 0.0
                for j in range(nj):
                    total += float(tgt[j, c, f])
                for j in range(nj):
                    yj = (float(tgt[j, c, f]) / (eps + total)) * xv
                    acc += yj
                    y[j, c] = yj
            else:
                # unit phasor exp(i angle(x)), 1 where x == 0; hypot only outside the safe range
                sq = xv.real * xv.real + xv.imag * xv.imag
                if 1e-300 < sq < 1e300:
                    ph = xv * (1.0 / math.sqrt(sq))
                elif xv.real == 0.0 and xv.imag == 0.0:
                    ph = 1.0 + 0.0j
                else:
                    ph = xv * (1.0 / abs(xv))
                ph = ph * first
                for j in range(nj):
                    yj = float(tgt[j, c, f]) * ph
                    acc += yj
                    y[j, c] = yj
            if residual:
                y[nj, c] = xv - acc
        for j in range(no):
            for c in range(nc):
                out[j, c, f] = y[j, c]
        if em:
            _accumulate(y, racc, wacc)
    inv_scale = 1.0 / scale
    for it in range(iterations):
        last = it == iterations - 1
        # R_j = sum_t y y^H / (eps + sum_t v_j), Hermitian with a real diagonal
        for j in range(no):
            w = eps + wacc[j]
            for c in range(nc):
                for d in range(c, nc):
                    rmat[j, c, d] = racc[j, c, d] / w
                    if d != c:
                        rmat[j, d, c] = rmat[j, c, d].conjugate()
                rmat[j, c, c] = complex(rmat[j, c, c].real, 0.0)
        racc[:] = 0.0
        wacc[:] = 0.0
        for f in range(nf):
            for j in range(no):
                pw = 0.0
                for c in range(nc):
                    yc = complex(out[j, c, f])
                    pw += yc.real * yc.real + yc.imag * yc.imag
                v[j] = pw / nc
            if nc == 1:
                acc = reg
                for j in range(no):
                    acc += v[j] * rmat[j, 0, 0].real
                z[0] = complex(x[0, f]) * inv_scale / (acc + eps)  # norbert: 1 / (C_xx + eps)
            else:
                # C_xx = sum_j v_j R_j + sqrt(eps) I, then z = C_xx^{-1} x
                for c in range(nc):
                    xs[c] = complex(x[c, f]) * inv_scale
                    for d in range(nc):
                        acc = 0.0j
                        for j in range(no):
                            acc += v[j] * rmat[j, c, d]
                        cxx[c, d] = acc
                    cxx[c, c] += reg
                _solve(cxx, xs, z)
            # y_j = v_j R_j z
            for j in range(no):
                for c in range(nc):
                    acc = 0.0j
                    for d in range(nc):
                        acc += rmat[j, c, d] * z[d]
                    y[j, c] = v[j] * acc
            gain = scale if last else 1.0
            for j in range(no):
                for c in range(nc):
                    out[j, c, f] = y[j, c] * gain
            if not last:
                _accumulate(y, racc, wacc)


@numba.njit(cache=True, parallel=True)
def _block_peaks(mix, layout):
    """``max |mix|`` of every block of a flat buffer (see :func:`_blocks_em` for ``layout``), float64
    ``(nb_blocks,)``."""
    out = np.zeros(layout.shape[0])
    for i in numba.prange(layout.shape[0]):
        start = layout[i, 0]
        stop = start + layout[i, 3] * layout[i, 6] * layout[i, 7] * layout[i, 8]
        best = 0.0  # largest squared magnitude (no hypot in the loop)
        for k in range(start, stop):
            v = mix[k]
            sq = float(v.real) * float(v.real) + float(v.imag) * float(v.imag)
            if sq > best:
                best = sq
        out[i] = math.sqrt(best)
    return out


@numba.njit(cache=True, parallel=True)
def _blocks_em(mix, tgt, out, layout, tasks, scales, iterations, softmask, residual, eps):
    """Every (block, sample, bin) EM problem of a block list, in parallel.

    The blocks travel packed in flat buffers: a numba typed list of arrays would compile anew at its first use in
    every process (docs/wiener.md).

    Args:
        mix: complex ``(sum of block sizes,)``: every block ``(nb_samples, nb_channels, nb_bins_b, nb_slices,
            T_b)``, C order, one after the other.
        tgt: real, the blocks ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)`` likewise.
        out: complex, room for the blocks ``(nb_samples, nb_targets[+1], nb_channels, nb_bins_b, nb_slices, T_b)``.
        layout: int64 ``(nb_blocks, 9)`` rows ``(mix offset, tgt offset, out offset, nb_samples, nb_targets,
            nb_out, nb_channels, nb_bins_b, nb_slices * T_b)``.
        tasks: int64 ``(nb_tasks, 3)`` rows ``(block, sample, bin)``, largest problems first.
        scales: float64 ``(nb_blocks,)`` normalisers ``max(1, max|mix_b| / scale_factor)``.
    """
    for k in numba.prange(tasks.shape[0]):
        i = tasks[k, 0]
        n = tasks[k, 1]
        b = tasks[k, 2]
        mo, to, oo, ns, nt, no, nc, nb, nf = layout[i]
        # views of block i with (slice, t) flattened into frames: one bin's frames are contiguous
        m4 = mix[mo:mo + ns * nc * nb * nf].reshape((ns, nc, nb, nf))
        t5 = tgt[to:to + ns * nt * nc * nb * nf].reshape((ns, nt, nc, nb, nf))
        o5 = out[oo:oo + ns * no * nc * nb * nf].reshape((ns, no, nc, nb, nf))
        if nc == 2:
            _em_stereo(m4[n, :, b], t5[n, :, :, b], o5[n, :, :, b], scales[i], iterations, softmask, residual, eps)
        else:
            _em_general(m4[n, :, b], t5[n, :, :, b], o5[n, :, :, b], scales[i], iterations, softmask, residual,
                        eps)


def wiener_blocks_numba(estimates: Sequence[Tensor], mixture: Sequence[Tensor], *, iterations: int, softmask: bool,
                        residual: bool, scale_factor: float, eps: float) -> List[Tensor]:
    """The ``backend="numba"`` of :func:`xumx_slicq.filtering.wiener_blocks`: the same arguments and shapes, which
    ``wiener_blocks`` has checked (call it, not this, from outside).

    Returns complex128 blocks if any mixture block is complex128, else complex64, on the mixture's device (views
    of one buffer). ``numba.set_num_threads`` sets the threads; the first call per process compiles or loads
    numba's on-disk cache.
    """
    cdtype = torch.complex128 if any(m.dtype == torch.complex128 for m in mixture) else torch.complex64
    rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
    layout, tasks, shapes = [], [], []
    offs = [0, 0, 0]
    for i, mix in enumerate(mixture):
        nb_samples, nb_channels, nb_bins, nb_slices, t = mix.shape
        nb_targets = estimates[i].shape[1]
        nb_out = nb_targets + (1 if residual else 0)
        frames = nb_slices * t
        layout.append((offs[0], offs[1], offs[2], nb_samples, nb_targets, nb_out, nb_channels, nb_bins, frames))
        shapes.append((nb_samples, nb_out, nb_channels, nb_bins, nb_slices, t))
        offs[0] += mix.numel()
        offs[1] += nb_samples * nb_targets * nb_channels * nb_bins * frames
        offs[2] += nb_samples * nb_out * nb_channels * nb_bins * frames
        tasks += [(frames, i, n, b) for n in range(nb_samples) for b in range(nb_bins)]
    # pack the blocks (C order) into flat buffers: one copy of each block, straight from its (strided) view;
    # one-channel targets are broadcast over the mixture's channels while copying
    mix_buf = torch.empty(offs[0], dtype=cdtype)
    tgt_buf = torch.empty(offs[1], dtype=rdtype)
    for row, m, e in zip(layout, mixture, estimates):
        full = (m.shape[0], e.shape[1]) + tuple(m.shape[1:])  # (nb_samples, nb_targets, nb_channels, ...)
        mix_buf[row[0]:row[0] + m.numel()].view(m.shape).copy_(m.detach())
        tgt_buf[row[1]:row[1] + math.prod(full)].view(full).copy_(e.detach().expand(full))
    mix_flat, tgt_flat = mix_buf.numpy(), tgt_buf.numpy()
    out_flat = np.empty(offs[2], dtype=mix_flat.dtype)
    table_layout = np.array(layout, dtype=np.int64)
    scales = np.ones(len(mixture))
    if iterations > 0:
        scales = np.maximum(1.0, _block_peaks(mix_flat, table_layout) / float(scale_factor))
    tasks.sort(reverse=True)
    table = np.array([row[1:] for row in tasks], dtype=np.int64).reshape(-1, 3)  # (block, sample, bin) rows
    with numba.parallel_chunksize(1):  # problems differ in size (T from 16 to 292): hand them out one by one
        _blocks_em(mix_flat, tgt_flat, out_flat, table_layout, table, scales, int(iterations), bool(softmask),
                   bool(residual), float(eps))
    out = torch.from_numpy(out_flat).to(mixture[0].device)
    result, pos = [], 0
    for shape in shapes:
        size = math.prod(shape)
        result.append(out[pos:pos + size].view(shape))  # a view of the shared buffer
        pos += size
    return result
