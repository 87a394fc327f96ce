"""The sliCQ transform: a sliced nonstationary Gabor transform (NSGT) in PyTorch.

The signal is cut into overlapping slices of ``sllen`` samples (hop ``sllen / 2``), each multiplied by a
slice window with Hann transitions of ``trlen`` samples; every slice is analysed by a painless NSGT whose
frequency windows follow any frequency scale (Bark, mel, constant-Q, variable-Q, linear). Frequency bin ``k``
yields ``T_k = M_k`` complex time coefficients per slice, where ``M_k`` is the bandwidth of its window in
slice-FFT bins. Neighbouring bins with the same ``T`` are grouped into **blocks**, so the ragged transform is a
short list of dense complex tensors ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``.

The implementation is vectorised: one FFT per slice, one gather of all window supports, one small inverse FFT
per block, and the mirror image for the inverse (one ``index_add`` and one inverse FFT per slice). There is no
Python loop over samples, channels or slices; the only loop is over the (few dozen) blocks. Everything is
differentiable and runs on any device.

Coefficients are identical (to float precision) to those of the reference implementation ``nsgt`` 0.19's
``NSGT_sliced(..., real=True, multichannel=True)``: the slice rotations and the coefficient re-ordering of the
reference collapse into a constant sign ``(-1) ** (centre_k / 2)`` per bin, which this module folds into its
windows (see :func:`design_windows`).

``python -m benchmark transform-demo --help``: a demo that plots a file's sliCQ next to its STFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Block",
    "SliCQT",
    "frequency_scale",
    "auto_slice_length",
    "design_windows",
    "slice_window",
    "nb_slices",
    "magnitude_phase",
    "polar",
    "unit_phasor",
    "mix_phase",
    "overlap_add",
    "overlap_add_length",
]

SCALES = ("bark", "mel", "cqlog", "vqlog", "lin")

# Blackman-Harris-type coefficients (the "modified" set used by the reference sliCQ implementation)
_BH = (0.35872, 0.48832, 0.14128, 0.01168)
# step of the numerical derivative used to compute Q on scales without a closed form
_DBND = 1e-8


# --------------------------------------------------------------------------------------------------------------
# Frequency scales
# --------------------------------------------------------------------------------------------------------------


def frequency_scale(
    scale: str, fbins: int, fmin: float, fmax: float, gamma: float = 25.0
) -> Tuple[np.ndarray, np.ndarray]:
    """Centre frequencies and Q factors of a frequency scale.

    Args:
        scale: one of ``"bark"``, ``"mel"``, ``"cqlog"`` (constant-Q, log-spaced), ``"vqlog"``
            (variable-Q: log-spaced centres, bandwidth ``f / q + gamma``), ``"lin"`` (linear).
        fbins: number of frequency bins of the scale (before bins at or above Nyquist are dropped).
        fmin, fmax: first and last centre frequency in Hz.
        gamma: the variable-Q offset in Hz (``vqlog`` only); ``gamma=0`` gives ``cqlog``.

    Returns:
        ``(f, q)``: float64 arrays of shape ``(fbins,)``. Q follows the reference's convention
        ``Q = f / (2 f'(k))``, i.e. the bandwidth ``f / Q`` is twice the bin spacing.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown frequency scale {scale!r}; choose one of {', '.join(SCALES)}")
    if fbins < 2:
        raise ValueError(f"fbins must be >= 2, got {fbins}")
    if not 0 < fmin < fmax:
        raise ValueError(f"need 0 < fmin < fmax, got fmin={fmin}, fmax={fmax}")
    k = np.arange(fbins, dtype=np.float64)

    if scale in ("cqlog", "vqlog"):
        lfmin, lfmax = math.log2(fmin), math.log2(fmax)
        ratio = 2.0 ** ((lfmax - lfmin) / (fbins - 1))
        f = fmin * ratio**k
        q_const = math.sqrt(ratio) / (ratio - 1.0) / 2.0
        if scale == "cqlog":
            q = np.full(fbins, q_const)
        else:
            if gamma < 0:
                raise ValueError(f"gamma must be >= 0, got {gamma}")
            q = q_const * f / (f + gamma * q_const)
        return f, q

    if scale == "lin":
        df = (fmax - fmin) / (fbins - 1)
        f = fmin + k * df
        return f, f / (2.0 * df)

    if scale == "bark":
        to_scale, from_scale = (lambda hz: 6.0 * np.arcsinh(hz / 600.0)), (lambda b: 600.0 * np.sinh(b / 6.0))
    else:  # mel
        to_scale = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
        from_scale = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    smin, smax = to_scale(fmin), to_scale(fmax)
    step = (smax - smin) / (fbins - 1)

    def centre(kk: np.ndarray) -> np.ndarray:
        return from_scale(smin + kk * step)

    f = centre(k)
    # Q = f / (2 f'(k)) by a central difference
    q = f * _DBND / (centre(k + _DBND) - centre(k - _DBND))
    return f, q


def auto_slice_length(f: np.ndarray, q: np.ndarray, sample_rate: float) -> Tuple[int, int]:
    """Smallest slice length that holds every window, and its transition length.

    ``sllen = ceil(max_k 8 * sr * Q_k / f_k)`` rounded up to a multiple of 4, ``trlen = sllen / 4`` rounded up
    to an even number. Bark-262 from 32.9 Hz at 44.1 kHz gives (18060, 4516).
    """
    sllen = int(math.ceil(float(np.max(8.0 * sample_rate * q / f))))
    sllen += -sllen % 4
    trlen = sllen // 4
    trlen += -trlen % 2
    return sllen, trlen


# --------------------------------------------------------------------------------------------------------------
# Window design (numpy, float64, done once)
# --------------------------------------------------------------------------------------------------------------


def _blackman_harris_fft_order(m: int) -> np.ndarray:
    """Blackman-Harris window of even length ``m`` with its peak at index 0 (FFT order)."""
    phase = 2.0 * np.pi * np.arange(m) / m
    a0, a1, a2, a3 = _BH
    return a0 + a1 * np.cos(phase) + a2 * np.cos(2 * phase) + a3 * np.cos(3 * phase)


def _hann_fft_order(m: int) -> np.ndarray:
    """Hann window of length ``m`` with its peak at index 0 (FFT order)."""
    return 0.5 + 0.5 * np.cos(2.0 * np.pi * np.arange(m) / m)


def _fft_offsets(m: int) -> np.ndarray:
    """Frequency offsets (relative to the window centre) of the ``m`` points of a window kept in FFT order."""
    i = np.arange(m)
    return np.where(i < (m + 1) // 2, i, i - m)


@dataclass(frozen=True)
class WindowDesign:
    """The frequency windows of one sliCQ configuration (positive frequencies only, DC and Nyquist included).

    Attributes:
        frequencies: ``(nb_bins,)`` centre frequencies in Hz, from 0 (DC) to Nyquist.
        lengths: ``(nb_bins,)`` window lengths ``M_k`` = time coefficients per slice ``T_k``.
        centres: ``(nb_bins,)`` window centres in slice-FFT bins (even integers).
        windows: analysis windows, FFT order, one ``(M_k,)`` array per bin.
        duals: canonical dual (synthesis) windows, FFT order, one ``(M_k,)`` array per bin.
    """

    frequencies: np.ndarray
    lengths: np.ndarray
    centres: np.ndarray
    windows: List[np.ndarray]
    duals: List[np.ndarray]


def design_windows(
    f: np.ndarray, q: np.ndarray, sample_rate: float, sllen: int, min_win: int = 16
) -> WindowDesign:
    """Design the analysis windows and their canonical duals for slices of ``sllen`` samples.

    Frequencies at or below 0 Hz and at or above Nyquist are dropped; DC and Nyquist bins are added. Window
    lengths follow the reference: ``M_0 = 2 fbas_1``, ``M_1 = fbas_1 / q_0``, ``M_k = fbas_{k+1} - fbas_{k-1}``,
    ``M_last = fbas_last / q_last``, rounded to a multiple of 4 and at least ``min_win``; the DC and Nyquist
    windows become flat tops with Hann flanks when wider than their neighbour. The duals are
    ``g_k / sum_j M_j |g_j|^2`` with the sum over the whole frequency circle (the mirrored negative-frequency
    windows included), which makes the transform a painless frame with exact reconstruction.
    """
    nyquist = sample_rate / 2.0
    keep = (f > 0) & (f < nyquist)
    f, q = np.asarray(f, dtype=np.float64)[keep], np.asarray(q, dtype=np.float64)[keep]
    if len(f) < 1:
        raise ValueError("no frequency bins between 0 Hz and Nyquist")
    if np.any(np.diff(f) <= 0):
        raise ValueError("centre frequencies must increase")
    nb = len(f)  # number of proper bins; DC is bin 0 and Nyquist bin nb + 1

    freqs = np.concatenate(([0.0], f, [nyquist]))
    fbas = freqs * (sllen / sample_rate)  # centres in slice-FFT bins (fractional)

    m = np.zeros(nb + 2)
    m[0] = 2 * fbas[1]
    m[1] = fbas[1] / q[0]
    m[2:nb] = fbas[3 : nb + 1] - fbas[1 : nb - 1]
    m[nb] = fbas[nb] / q[nb - 1]
    # the Nyquist window spans to the mirror of the last bin: sllen - fbas[nb]
    m[nb + 1] = (sllen - fbas[nb]) - fbas[nb]
    lengths = np.maximum(np.round(m / 4.0).astype(np.int64) * 4, min_win)

    windows = [_blackman_harris_fft_order(int(mk)) for mk in lengths]
    # DC and Nyquist: flat top with Hann flanks as wide as the neighbour's window, when wider than it
    neighbour_of_edge = {0: int(lengths[1]), nb + 1: int(lengths[nb])}
    for edge, m_next in neighbour_of_edge.items():
        m_edge = int(lengths[edge])
        if m_edge > m_next:
            w = np.ones(m_edge)
            start = m_edge // 2 - m_next // 2
            w[start : start + m_next] = _hann_fft_order(m_next)
            windows[edge] = w

    centres = (np.round(fbas / 2.0).astype(np.int64) * 2).astype(np.int64)

    # frame operator diagonal over the full circle: positive bins plus the mirrored proper bins
    diag = np.zeros(sllen)
    mirror = np.zeros(sllen)
    for k, (g, mk, c) in enumerate(zip(windows, lengths, centres)):
        idx = (c + _fft_offsets(int(mk))) % sllen
        np.add.at(diag, idx, mk * g**2)
        if 0 < k < nb + 1:
            np.add.at(mirror, idx, mk * g**2)
    # mirrored windows sit at -n: mirror[(-n) mod sllen]
    diag += mirror[(-np.arange(sllen)) % sllen]
    duals = [g / diag[(c + _fft_offsets(int(mk))) % sllen] for g, mk, c in zip(windows, lengths, centres)]
    return WindowDesign(freqs, lengths, centres, windows, duals)


def slice_window(sllen: int, trlen: int) -> np.ndarray:
    """Slice window ``(sllen,)``: zero in the outer quarters (less ``trlen / 2``), one in the middle, Hann
    transitions of ``trlen`` samples centred at ``sllen / 4`` and ``3 sllen / 4``. Shifted copies at hop
    ``sllen / 2`` sum to one."""
    quarter, half_tr = sllen // 4, trlen // 2
    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(trlen) / trlen)
    w = np.zeros(sllen)
    w[quarter - half_tr : quarter + half_tr] = rise
    w[quarter + half_tr : 3 * quarter - half_tr] = 1.0
    w[3 * quarter - half_tr : 3 * quarter + half_tr] = 1.0 - rise
    return w


def nb_slices(length: int, sllen: int) -> int:
    """Number of slices for a signal of ``length`` samples: ``(ceil(length / (sllen/4)) + 1) // 2 + 1``."""
    quarter = sllen // 4
    return (-(-length // quarter) + 1) // 2 + 1


# --------------------------------------------------------------------------------------------------------------
# Helpers on block lists
# --------------------------------------------------------------------------------------------------------------


def magnitude_phase(blocks: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
    """Split complex blocks into magnitudes and phases (radians), same shapes, real dtype."""
    return [b.abs() for b in blocks], [torch.angle(b) for b in blocks]


def polar(magnitudes: Sequence[Tensor], phases: Sequence[Tensor]) -> List[Tensor]:
    """Recombine magnitudes and phases into complex blocks (inverse of :func:`magnitude_phase`)."""
    return [torch.polar(m, p.to(m.dtype)) for m, p in zip(magnitudes, phases)]


def unit_phasor(spec: Tensor) -> Tensor:
    """``spec / |spec|``, detached (the phase as a constant), 1 where ``spec == 0`` (as ``angle(0) = 0``).

    Any shape; complex in, complex out.
    """
    spec = spec.detach()
    mag = spec.abs()
    return torch.where(mag > 0, spec / mag.clamp_min(torch.finfo(mag.dtype).tiny), torch.ones_like(spec))


def mix_phase(magnitude: Tensor, reference: Tensor) -> Tensor:
    """The mix-phase estimate: a real ``magnitude`` with the phase of a complex ``reference`` (the mixture).

    ``magnitude`` may carry extra dimensions after the sample axis (targets): e.g.
    ``(nb_samples, nb_targets, nb_channels, ...)`` with a ``(nb_samples, nb_channels, ...)`` reference, whose
    phase then broadcasts over the targets. Same-shape inputs are fine too.
    """
    phasor = unit_phasor(reference)
    while phasor.dim() < magnitude.dim():
        phasor = phasor.unsqueeze(1)  # (nb_samples, 1, ...): broadcast over the target axis
    return magnitude.to(phasor.dtype) * phasor


def overlap_add_length(nb_slices_: int, T: int) -> int:
    """Frames of the overlap-add view of a block with ``nb_slices_`` slices of ``T`` coefficients."""
    return (nb_slices_ + 1) * T // 2


def overlap_add(block: Tensor) -> Tensor:
    """The "spectrogram view" of one block: its slices overlap-added at 50 %.

    Args:
        block: ``(..., nb_bins_b, nb_slices, T_b)`` real or complex, ``T_b`` even.
    Returns:
        ``(..., nb_bins_b, (nb_slices + 1) * T_b / 2)``. Not invertible (the halves of neighbouring slices are
        summed); use it to look at or to feed a network, not to reconstruct.
    """
    *lead, s, t = block.shape
    if t % 2:
        raise ValueError(f"overlap_add needs an even number of coefficients per slice, got {t}")
    halves = block.reshape(*lead, s, 2, t // 2)  # split every slice into its first and second half
    first, second = halves[..., 0, :], halves[..., 1, :]  # (..., nb_slices, T/2) each
    # slice s contributes its first half to frame-group s and its second half to frame-group s + 1
    out = torch.nn.functional.pad(first, (0, 0, 0, 1)) + torch.nn.functional.pad(second, (0, 0, 1, 0))
    return out.reshape(*lead, (s + 1) * (t // 2))  # (..., nb_slices + 1, T/2) -> (..., frames)


# --------------------------------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------------------------------


class Block(NamedTuple):
    """A run of neighbouring frequency bins with the same time resolution."""

    first_bin: int
    nb_bins: int
    T: int


class SliCQT(nn.Module):
    """Sliced nonstationary Gabor transform with perfect reconstruction.

    Args:
        scale: frequency scale, one of ``bark``, ``mel``, ``cqlog``, ``vqlog``, ``lin``.
        fbins: bins of the scale between ``fmin`` and ``fmax`` (bins at or above Nyquist are dropped, then DC
            and Nyquist added: Bark-262 up to 22050 Hz has 263 bins).
        fmin, fmax: frequency range in Hz.
        sample_rate: sampling rate in Hz.
        sllen: slice length in samples (multiple of 4); chosen automatically when None.
        trlen: transition length in samples (even, at most ``sllen / 2``); ``sllen / 4`` (even) when None.
        gamma: variable-Q offset in Hz for ``vqlog``.
        min_win: smallest window (= coefficients per slice).

    Attributes:
        sllen, trlen: slice and transition lengths.
        frequencies: ``(nb_bins,)`` float64 tensor of centre frequencies (0 Hz ... Nyquist).
        bin_lengths: ``(nb_bins,)`` int64 tensor, coefficients per slice of each bin.
        blocks: list of :class:`Block` ``(first_bin, nb_bins, T)``.
        nb_bins, max_T: number of bins, largest ``T``.

    ``forward`` maps ``(nb_samples, nb_channels, nb_timesteps)`` real audio to a list with one complex tensor
    per block, ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``; ``inverse`` maps it back.
    """

    def __init__(
        self,
        scale: str = "bark",
        fbins: int = 262,
        fmin: float = 32.9,
        fmax: float = 22050.0,
        sample_rate: int = 44100,
        sllen: Optional[int] = None,
        trlen: Optional[int] = None,
        gamma: float = 25.0,
        min_win: int = 16,
    ):
        super().__init__()
        f, q = frequency_scale(scale, fbins, fmin, fmax, gamma)
        auto_sl, auto_tr = auto_slice_length(f[f < sample_rate / 2], q[f < sample_rate / 2], sample_rate)
        if sllen is None:
            sllen = auto_sl
        if sllen % 4:
            raise ValueError(f"sllen must be a multiple of 4, got {sllen}")
        if trlen is None:
            trlen = sllen // 4
            trlen += -trlen % 2
        if trlen % 2 or not 0 <= trlen <= sllen // 2:
            raise ValueError(f"trlen must be even and at most sllen/2={sllen // 2}, got {trlen}")
        self.config = dict(
            scale=scale, fbins=fbins, fmin=fmin, fmax=fmax, sample_rate=sample_rate,
            sllen=sllen, trlen=trlen, gamma=gamma, min_win=min_win,
        )
        self.scale, self.sample_rate = scale, sample_rate
        self.sllen, self.trlen = int(sllen), int(trlen)
        self.suggested_sllen = auto_sl

        design = design_windows(f, q, sample_rate, self.sllen, min_win)
        self.design = design
        lengths = design.lengths
        self.nb_bins = len(lengths)
        self.max_T = int(lengths.max())

        # group neighbouring bins of equal length into blocks
        blocks: List[Block] = []
        start = 0
        for k in range(1, self.nb_bins + 1):
            if k == self.nb_bins or lengths[k] != lengths[start]:
                blocks.append(Block(start, k - start, int(lengths[start])))
                start = k
        self.blocks = blocks

        # Concatenate all windows, bin after bin, into flat "support" vectors of sum_k M_k entries.
        # The reference rotates every slice by a quarter and re-orders its coefficients; both together amount
        # to the constant sign (-1)^(centre/2) per bin (see the module docstring), folded in here.
        sign = np.where((design.centres // 2) % 2 == 0, 1.0, -1.0)
        # the inverse reconstructs the negative frequencies as the conjugate mirror of the proper bins:
        # their contribution is counted twice in the real part of the inverse FFT (DC/Nyquist once)
        twice = np.full(self.nb_bins, 2.0)
        twice[0] = twice[-1] = 1.0
        support = np.concatenate(
            [(c + _fft_offsets(int(m))) % self.sllen for c, m in zip(design.centres, lengths)]
        )
        # Real signals: read the negative frequencies of a window's support from the half spectrum (rfft) as
        # conjugates, and fold the inverse back onto the half spectrum (irfft), halving both FFTs.
        half = self.sllen // 2
        half_index = np.where(support <= half, support, self.sllen - support)
        conj_sign = np.where(support > half, -1.0, 1.0)
        per_bin = lambda values: np.concatenate(  # noqa: E731 - expand one value per bin to the support
            [np.full(int(m), v) for v, m in zip(values, lengths)]
        )
        analysis = per_bin(sign) * np.concatenate(design.windows)
        # Inverse: Re(ifft(Q)) with Q the overlap-added dual-windowed spectra of DC, Nyquist and twice the proper
        # bins (their negative-frequency mirrors are conjugates). On the half spectrum that is (Q + conj flip
        # Q) / 2; support points at 0 and sllen/2 receive both halves.
        synthesis = per_bin(sign * twice * lengths / 2.0) * np.concatenate(design.duals)
        synthesis = synthesis * np.where((support == 0) | (support == half), 2.0, 1.0)
        self.register_buffer("support", torch.from_numpy(support), persistent=False)
        self.register_buffer("half_index", torch.from_numpy(half_index), persistent=False)
        # (sum_k M_k, 2) weights for (real, imaginary) parts: window, and window times the conjugation sign
        self.register_buffer(
            "analysis_window", torch.from_numpy(np.stack([analysis, analysis * conj_sign], -1)), persistent=False
        )
        self.register_buffer(
            "synthesis_window", torch.from_numpy(np.stack([synthesis, synthesis * conj_sign], -1)), persistent=False
        )
        self.register_buffer("slice_window", torch.from_numpy(slice_window(self.sllen, self.trlen)), persistent=False)
        self.register_buffer("frequencies", torch.from_numpy(design.frequencies), persistent=False)
        self.register_buffer("bin_lengths", torch.from_numpy(lengths.astype(np.int64)), persistent=False)
        # offsets of each block in the flat support vectors
        self._offsets = np.concatenate(([0], np.cumsum([b.nb_bins * b.T for b in blocks]))).tolist()

    # ----------------------------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, nb_bins={self.nb_bins}, blocks={len(self.blocks)}, sllen={self.sllen}, "
            f"trlen={self.trlen}, sample_rate={self.sample_rate}"
        )

    def nb_slices(self, length: int) -> int:
        """Number of slices the forward transform gives for ``length`` samples."""
        return nb_slices(length, self.sllen)

    def block_shapes(self, length: int, nb_samples: int = 1, nb_channels: int = 2) -> List[Tuple[int, ...]]:
        """Shapes of the forward output for a signal of ``length`` samples."""
        s = self.nb_slices(length)
        return [(nb_samples, nb_channels, b.nb_bins, s, b.T) for b in self.blocks]

    def overlap_add_shapes(self, length: int, nb_samples: int = 1, nb_channels: int = 2) -> List[Tuple[int, ...]]:
        """Shapes of the per-block overlap-add views (:func:`overlap_add`) for ``length`` samples."""
        s = self.nb_slices(length)
        return [(nb_samples, nb_channels, b.nb_bins, overlap_add_length(s, b.T)) for b in self.blocks]

    @staticmethod
    def _check_audio(x: Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() != 3:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"SliCQT expects audio of shape (nb_samples, nb_channels, nb_timesteps), got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"SliCQT expects float32 or float64 audio, got {x.dtype}")
        if x.shape[-1] < 1:
            raise ValueError("SliCQT needs at least one sample")

    # ----------------------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> List[Tensor]:
        """Forward sliCQ.

        Args:
            x: real audio ``(nb_samples, nb_channels, nb_timesteps)``, float32 or float64.
        Returns:
            list of complex tensors, one per block, ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``.
        """
        self._check_audio(x)
        nb_samples, nb_channels, length = x.shape
        quarter, half = self.sllen // 4, self.sllen // 2
        nq = -(-length // quarter)  # quarters of signal, the last one zero-padded
        # two quarters of zeros in front, the signal padded to whole quarters, three quarters behind
        padded = torch.nn.functional.pad(x, (2 * quarter, (nq + 3) * quarter - length))
        # overlapping slices, hop sllen/2: (nb_samples, nb_channels, nb_slices, sllen) (a view)
        slices = padded.unfold(-1, self.sllen, half) * self.slice_window.to(x.dtype)
        spectrum = torch.fft.rfft(slices, dim=-1)  # (nb_samples, nb_channels, nb_slices, sllen/2 + 1)
        # every bin's window support, all bins side by side: (nb_samples, nb_channels, nb_slices, sum_k M_k);
        # as (real, imaginary) pairs (..., sum_k M_k, 2) to conjugate the negative frequencies while windowing
        coefs = torch.view_as_real(spectrum[..., self.half_index]) * self.analysis_window.to(x.dtype)
        coefs = torch.view_as_complex(coefs)
        s = slices.shape[2]
        out = []
        for b, blk in enumerate(self.blocks):
            c = coefs[..., self._offsets[b] : self._offsets[b + 1]]
            c = c.reshape(nb_samples, nb_channels, s, blk.nb_bins, blk.T)  # split the support per bin
            c = torch.fft.ifft(c, dim=-1)  # M-point inverse FFT -> T time coefficients
            out.append(c.transpose(2, 3))  # (nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)
        return out

    def inverse(self, blocks: Sequence[Tensor], length: int) -> Tensor:
        """Inverse sliCQ.

        Args:
            blocks: list of complex tensors ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)`` (extra
                leading dimensions, e.g. targets, are allowed as long as every block has the same ones).
            length: number of samples to return.
        Returns:
            real audio ``(..., nb_samples, nb_channels, length)`` in the real dtype matching the blocks.
        """
        if len(blocks) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} blocks, got {len(blocks)}")
        lead = blocks[0].shape[:-3]  # (..., nb_samples, nb_channels)
        s = blocks[0].shape[-2]
        real_dtype = blocks[0].real.dtype
        window = self.synthesis_window.to(real_dtype)  # (sum_k M_k, 2)
        spectrum = blocks[0].new_zeros((*lead, s, self.sllen // 2 + 1))  # (..., nb_slices, sllen/2 + 1)
        for b, (blk, c) in enumerate(zip(self.blocks, blocks)):
            if tuple(c.shape[-3:]) != (blk.nb_bins, s, blk.T) or c.shape[:-3] != lead:
                raise ValueError(
                    f"block with first bin {blk.first_bin} should have shape {(*lead, blk.nb_bins, s, blk.T)}, "
                    f"got {tuple(c.shape)}"
                )
            # back to each window's frequency support, slices first: (..., nb_slices, nb_bins_b, T_b)
            c = torch.fft.fft(c.transpose(-3, -2), dim=-1)
            c = c.reshape(*lead, s, blk.nb_bins * blk.T)  # bins side by side: (..., nb_slices, nb_bins_b * T_b)
            lo, hi = self._offsets[b], self._offsets[b + 1]
            # dual windows, and conjugation of the points that fold from negative onto positive frequencies
            c = torch.view_as_complex(torch.view_as_real(c) * window[lo:hi])
            # overlap-add the windows into the slices' half spectra
            spectrum.index_add_(-1, self.half_index[lo:hi], c)
        slices = torch.fft.irfft(spectrum, n=self.sllen, dim=-1)  # (..., nb_slices, sllen)
        # overlap-add the slices (hop sllen/2, no synthesis window), then drop the two quarters of front padding
        signal = overlap_add(slices)[..., self.sllen // 2 :]
        if signal.shape[-1] < length:
            signal = torch.nn.functional.pad(signal, (0, length - signal.shape[-1]))
        return signal[..., :length]

    # ----------------------------------------------------------------------------------------------------------
    def to_matrix(self, blocks: Sequence[Tensor]) -> Tensor:
        """Pack blocks into the zero-padded matrix ``(..., nb_bins, nb_slices, max_T)`` (zeros right of each
        bin's ``T``)."""
        lead = blocks[0].shape[:-3]
        s = blocks[0].shape[-2]
        out = blocks[0].new_zeros((*lead, self.nb_bins, s, self.max_T))
        for blk, c in zip(self.blocks, blocks):
            out[..., blk.first_bin : blk.first_bin + blk.nb_bins, :, : blk.T] = c
        return out

    def from_matrix(self, matrix: Tensor) -> List[Tensor]:
        """Unpack the zero-padded matrix ``(..., nb_bins, nb_slices, max_T)`` into blocks (views)."""
        if matrix.shape[-3] != self.nb_bins or matrix.shape[-1] != self.max_T:
            raise ValueError(
                f"matrix should be (..., {self.nb_bins}, nb_slices, {self.max_T}), got {tuple(matrix.shape)}"
            )
        return [matrix[..., b.first_bin : b.first_bin + b.nb_bins, :, : b.T] for b in self.blocks]
