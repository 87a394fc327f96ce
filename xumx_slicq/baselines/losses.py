"""Training losses of the baselines.

- UMX: mean squared error between estimated and true target magnitudes (:func:`mse_loss`).
- X-UMX: multi-domain combination loss (Sawata et al., 2021), :class:`MultiDomainLoss`::

      L = L_freq + mcoef * L_time,  mcoef = 10

  over the 14 non-trivial subsets of the 4 targets (4 singles, 6 pairs, 4 triples; ``2**S - 2`` in
  general). For each subset the estimates and references are summed over its targets; then

  * ``L_freq``: MSE between summed estimated and summed true magnitudes, averaged over subsets;
  * ``L_time``: weighted SDR loss (Choi et al., 2019) between the summed time-domain estimates (ISTFT
    of mixture-phase estimates) and the summed true waveforms, with the mixture as the third signal,
    averaged over subsets, samples and channels.

Weighted SDR for reference ``y``, estimate ``ŷ`` and mixture ``x`` (all along time)::

    z = x - y,  ẑ = x - ŷ,  α = |y|² / (|y|² + |z|²)
    wSDR = -α cos(y, ŷ) - (1 - α) cos(z, ẑ)          in [-1, 1], lower is better
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .stft import ISTFT, STFT, mix_phase

__all__ = [
    "combination_subsets",
    "subset_matrix",
    "mse_loss",
    "freq_combination_loss",
    "weighted_sdr",
    "time_combination_loss",
    "MultiDomainLoss",
]


def combination_subsets(nb_targets: int) -> list[tuple[int, ...]]:
    """All non-empty proper subsets of ``range(nb_targets)``, by size then lexicographically (14 for 4)."""
    if nb_targets < 2:
        raise ValueError(f"baselines/losses.py: a combination loss needs >= 2 targets, got {nb_targets}")
    return [c for k in range(1, nb_targets) for c in itertools.combinations(range(nb_targets), k)]


def subset_matrix(nb_targets: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """0/1 matrix ``(nb_subsets, nb_targets)``; row ``k`` selects the targets of subset ``k``."""
    subsets = combination_subsets(nb_targets)
    m = torch.zeros(len(subsets), nb_targets, dtype=dtype, device=device)
    for k, subset in enumerate(subsets):
        m[k, list(subset)] = 1.0
    return m


def _combine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Sum targets per subset: ``(nb_samples, nb_targets, ...)`` -> ``(nb_samples, nb_subsets, ...)``."""
    # flatten trailing axes so one matmul does every subset: (B, S, N) -> (B, K, N)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    out = torch.matmul(matrix.to(dtype=x.dtype, device=x.device), flat)
    return out.reshape(x.shape[0], matrix.shape[0], *x.shape[2:])


def mse_loss(est_mag: torch.Tensor, ref_mag: torch.Tensor) -> torch.Tensor:
    """UMX loss: MSE over ``(nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)`` (mean over targets)."""
    if est_mag.shape != ref_mag.shape:
        raise ValueError(f"baselines/losses.py: shape mismatch {tuple(est_mag.shape)} vs {tuple(ref_mag.shape)}")
    return torch.mean((est_mag - ref_mag) ** 2)


def freq_combination_loss(est_mag: torch.Tensor, ref_mag: torch.Tensor) -> torch.Tensor:
    """Frequency-domain combination loss: mean over subsets of the MSE of summed magnitudes.

    Args:
        est_mag, ref_mag: real ``(nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)``.
    Returns:
        scalar.
    """
    if est_mag.shape != ref_mag.shape:
        raise ValueError(f"baselines/losses.py: shape mismatch {tuple(est_mag.shape)} vs {tuple(ref_mag.shape)}")
    matrix = subset_matrix(est_mag.shape[1])
    # summing is linear: combine the difference once instead of both sides
    diff = _combine(est_mag - ref_mag, matrix)
    # every subset term averages the same number of elements, so one global mean = mean of subset MSEs
    return torch.mean(diff**2)


def _cosine(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """Cosine similarity along the last axis: ``(..., nb_timesteps)`` x2 -> ``(...)``."""
    num = (a * b).sum(-1)
    den = torch.sqrt((a * a).sum(-1) + eps) * torch.sqrt((b * b).sum(-1) + eps)
    return num / (den + eps)


def weighted_sdr(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Weighted SDR loss per signal (see the module docstring), in [-1, 1].

    Args:
        est, ref, mix: real ``(..., nb_timesteps)``, broadcastable to one shape.
    Returns:
        ``(...)``: one loss per signal (e.g. per sample and channel).
    """
    noise = mix - ref
    noise_est = mix - est
    ref_energy = (ref * ref).sum(-1)
    noise_energy = (noise * noise).sum(-1)
    alpha = ref_energy / (ref_energy + noise_energy + eps)
    return -alpha * _cosine(ref, est, eps) - (1.0 - alpha) * _cosine(noise, noise_est, eps)


def time_combination_loss(
    est_wave: torch.Tensor, ref_wave: torch.Tensor, mix_wave: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Time-domain combination loss: weighted SDR of summed waveforms, mean over subsets, samples, channels.

    Args:
        est_wave, ref_wave: real ``(nb_samples, nb_targets, nb_channels, nb_timesteps)``.
        mix_wave: real ``(nb_samples, nb_channels, nb_timesteps)``.
    Returns:
        scalar.
    """
    if est_wave.shape != ref_wave.shape:
        raise ValueError(f"baselines/losses.py: shape mismatch {tuple(est_wave.shape)} vs {tuple(ref_wave.shape)}")
    if mix_wave.shape != est_wave.shape[:1] + est_wave.shape[2:]:
        raise ValueError(
            f"baselines/losses.py: mixture {tuple(mix_wave.shape)} does not match estimates {tuple(est_wave.shape)}"
        )
    matrix = subset_matrix(est_wave.shape[1])
    est_c = _combine(est_wave, matrix)
    ref_c = _combine(ref_wave, matrix)
    # unsqueeze(1): the same mixture for every subset, (B, 1, C, L)
    return weighted_sdr(est_c, ref_c, mix_wave.unsqueeze(1), eps=eps).mean()


class MultiDomainLoss(nn.Module):
    """X-UMX loss ``L_freq + mcoef * L_time`` over all target subsets.

    Args:
        mcoef: weight of the time-domain term (10).
        n_fft, n_hop: STFT used for the references' magnitudes and the estimates' inverse (4096, 1024).
        eps: numerical floor of the weighted SDR.
    """

    def __init__(self, mcoef: float = 10.0, n_fft: int = 4096, n_hop: int = 1024, eps: float = 1e-8):
        super().__init__()
        self.mcoef = float(mcoef)
        self.eps = eps
        self.stft = STFT(n_fft=n_fft, n_hop=n_hop, center=True)
        self.istft = ISTFT(n_fft=n_fft, n_hop=n_hop, center=True)

    def terms(
        self,
        est_mag: torch.Tensor,
        mix_stft: torch.Tensor,
        ref_wave: torch.Tensor,
        mix_wave: torch.Tensor | None = None,
        ref_mag: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """All loss terms.

        Args:
            est_mag: ``(nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)`` model estimates.
            mix_stft: complex ``(nb_samples, nb_channels, nb_bins, nb_frames)`` mixture STFT (phase source).
            ref_wave: ``(nb_samples, nb_targets, nb_channels, nb_timesteps)`` true target waveforms.
            mix_wave: ``(nb_samples, nb_channels, nb_timesteps)`` mixture; default the sum of ``ref_wave``.
            ref_mag: true magnitudes (same shape as ``est_mag``); default ``|STFT(ref_wave)|``.
        Returns:
            ``{"total", "freq", "time"}`` scalars; ``total = freq + mcoef * time``.
        """
        if mix_wave is None:
            mix_wave = ref_wave.sum(1)
        if ref_mag is None:
            ref_mag = self.stft(ref_wave).abs()
        freq = freq_combination_loss(est_mag, ref_mag)
        # mixture-phase estimates back to waveforms of the references' exact length: (B, S, C, L)
        est_wave = self.istft(mix_phase(est_mag, mix_stft), length=ref_wave.shape[-1])
        time = time_combination_loss(est_wave, ref_wave, mix_wave, eps=self.eps)
        return {"total": freq + self.mcoef * time, "freq": freq, "time": time}

    def forward(
        self,
        est_mag: torch.Tensor,
        mix_stft: torch.Tensor,
        ref_wave: torch.Tensor,
        mix_wave: torch.Tensor | None = None,
        ref_mag: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar ``L_freq + mcoef * L_time`` (arguments as in :meth:`terms`)."""
        return self.terms(est_mag, mix_stft, ref_wave, mix_wave=mix_wave, ref_mag=ref_mag)["total"]
