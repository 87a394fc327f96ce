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

import torch
from torch import nn

from ..losses import combination_loss, combination_products, gram_matrix, subset_matrix
from ..losses import combination_subsets as _subsets
from ..transforms import mix_phase
from .stft import ISTFT, STFT

__all__ = [
    "combination_subsets",
    "subset_matrix",
    "mse_loss",
    "freq_combination_loss",
    "weighted_sdr",
    "time_combination_loss",
    "MultiDomainLoss",
]


def _require_combinations(nb_targets: int) -> None:
    """X-UMX's combination losses need proper subsets, hence >= 2 targets (the sliCQ losses accept one)."""
    if nb_targets < 2:
        raise ValueError(f"baselines/losses.py: a combination loss needs >= 2 targets, got {nb_targets}")


def combination_subsets(nb_targets: int) -> list[tuple[int, ...]]:
    """All non-empty proper subsets of ``range(nb_targets)``, by size then lexicographically (14 for 4)."""
    _require_combinations(nb_targets)
    return _subsets(nb_targets)


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
    _require_combinations(est_mag.shape[1])
    # the sliCQ model's combination MSE on one "block": the same definition, computed without the 14 sums
    return combination_loss([est_mag], [ref_mag])


def _wsdr_from_products(
    ref_e: torch.Tensor, est_e: torch.Tensor, ref_est: torch.Tensor,
    noise_e: torch.Tensor, noise_est_e: torch.Tensor, noise_noise_est: torch.Tensor, eps: float,
) -> torch.Tensor:
    """Weighted SDR from inner products (all broadcastable): ``|y|², |ŷ|², <y, ŷ>, |z|², |ẑ|², <z, ẑ>``."""

    def cosine(aa, bb, ab):
        return ab / (torch.sqrt(aa + eps) * torch.sqrt(bb + eps) + eps)

    alpha = ref_e / (ref_e + noise_e + eps)
    return -alpha * cosine(ref_e, est_e, ref_est) - (1.0 - alpha) * cosine(noise_e, noise_est_e, noise_noise_est)


def weighted_sdr(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Weighted SDR loss per signal (see the module docstring), in [-1, 1].

    Args:
        est, ref, mix: real ``(..., nb_timesteps)``, broadcastable to one shape.
    Returns:
        ``(...)``: one loss per signal (e.g. per sample and channel).
    """
    noise = mix - ref
    noise_est = mix - est
    return _wsdr_from_products(
        (ref * ref).sum(-1), (est * est).sum(-1), (ref * est).sum(-1),
        (noise * noise).sum(-1), (noise_est * noise_est).sum(-1), (noise * noise_est).sum(-1), eps,
    )


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
    _require_combinations(est_wave.shape[1])
    matrix = subset_matrix(est_wave.shape[1])  # (K, S)
    zeros = torch.zeros_like(matrix)
    none, one = torch.zeros(len(matrix), 1), torch.ones(len(matrix), 1)  # the mixture's coefficient
    # every subset signal as a combination of the 2S + 1 signals [estimates, references, mixture]:
    # ŷ = s·est, y = s·ref, z = mix - y, ẑ = mix - ŷ; each (K, 2S + 1)
    est_c = torch.cat([matrix, zeros, none], dim=1)
    ref_c = torch.cat([zeros, matrix, none], dim=1)
    noise = torch.cat([zeros, -matrix, one], dim=1)
    noise_est = torch.cat([-matrix, zeros, one], dim=1)
    # (B, S, C, L) x2 + (B, 1, C, L) -> (B, 2S + 1, C, L): the Gram matrix holds every inner product needed,
    # so the (B, K, C, L) subset waveforms are never built (K = 14 for 4 targets)
    gram = gram_matrix(torch.cat([est_wave, ref_wave, mix_wave.unsqueeze(1)], dim=1))  # (B, C, 2S + 1, 2S + 1)

    def dot(a, b):  # (B, C, K); energies are clamped against rounding below 0
        return combination_products(a, gram, b)

    wsdr = _wsdr_from_products(
        dot(ref_c, ref_c).clamp_min(0), dot(est_c, est_c).clamp_min(0), dot(ref_c, est_c),
        dot(noise, noise).clamp_min(0), dot(noise_est, noise_est).clamp_min(0), dot(noise, noise_est), eps,
    )
    return wsdr.mean().to(est_wave.dtype)


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
