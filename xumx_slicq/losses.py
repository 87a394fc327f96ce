"""Training losses of xumx-sliCQ: the combination loss on sliCQ magnitudes and the multi-domain loss.

Both work over the **target subsets** of X-UMX: every non-empty proper subset of the targets (4 singles,
6 pairs, 4 triples = 14 for 4 targets; ``2**K - 2`` for ``K`` targets; for a single target, the target itself).
For a subset the estimates and the references are summed over its targets, then compared.

* :func:`combination_loss` — for every block, the MSE between the summed estimated and the summed true
  magnitudes, averaged over the subsets; then averaged over blocks (every block counts the same, whatever its
  size). Written without materialising the 14 sums: with ``d_k = estimate_k - truth_k``,
  ``sum_s (sum_{k in s} d_k)^2 = (c1 - c2) sum_k d_k^2 + c2 (sum_k d_k)^2``, where ``c1 = 2**(K-1) - 1`` subsets
  hold a given target and ``c2 = 2**(K-2) - 1`` hold a given pair (7 and 3 for 4 targets).
* :class:`MultiDomainLoss` — ``total = mse + mcoef * sisdr`` (``mcoef`` 0.1): ``sisdr`` is auraloss's
  ``SISDRLoss`` (negative SI-SDR in dB, zero-mean, eps 1e-8, mean over samples, subsets and channels) between
  the mix-phase waveforms of the summed estimates and the summed true waveforms. **It carries gradient** (the
  original computed it under ``torch.no_grad()``, so it never trained on it). ``time_domain=False`` skips it.

  It is made cheap in three exact ways: (1) the inverse sliCQ is linear, so each target is inverted once (one
  batched ``inverse`` of ``(nb_samples, nb_targets, ...)`` blocks) instead of each of the 14 subsets; (2) the
  mixture phase enters as a precomputed unit phasor ``mix / |mix|`` (a constant: no gradient flows into the
  mixture) instead of ``polar(magnitude, angle)``; (3) with ``sisdr="gram"`` (default) the 14 subset SI-SDRs
  are computed from the ``2K x 2K`` Gram matrix of the zero-mean target estimates and references (float64), as
  every quantity SI-SDR needs — ``<e_s, r_s>``, ``|r_s|^2``, ``|e_s - a r_s|^2`` — is a quadratic form in the
  per-target inner products; the 14 subset waveforms are never formed. ``sisdr="auraloss"`` forms them and
  calls ``auraloss.time.SISDRLoss`` itself; the two agree to float precision (tests/test_losses.py).
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .transforms import SliCQT, mix_phase

__all__ = ["combination_subsets", "subset_matrix", "combination_loss", "gram_matrix", "combination_products",
           "subset_sisdr_loss", "MultiDomainLoss"]

SISDR_IMPLEMENTATIONS = ("gram", "auraloss")


def combination_subsets(nb_targets: int) -> List[Tuple[int, ...]]:
    """Non-empty proper subsets of ``range(nb_targets)`` by size, then lexicographic (14 for 4 targets).

    A single target has no proper subset; it is its own only "subset": ``[(0,)]``.
    """
    if nb_targets < 1:
        raise ValueError(f"losses.py: need at least one target, got {nb_targets}")
    if nb_targets == 1:
        return [(0,)]
    return [c for size in range(1, nb_targets) for c in itertools.combinations(range(nb_targets), size)]


def subset_matrix(nb_targets: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """0/1 matrix ``(nb_subsets, nb_targets)``; row ``s`` selects the targets of subset ``s``."""
    subsets = combination_subsets(nb_targets)
    m = torch.zeros(len(subsets), nb_targets, dtype=dtype, device=device)
    for s, subset in enumerate(subsets):
        m[s, list(subset)] = 1.0
    return m


def _subset_square_weights(nb_targets: int) -> Tuple[float, float, int]:
    """``(w_sq, w_sum, nb_subsets)`` with ``sum_s (sum_{k in s} d_k)^2 = w_sq * sum_k d_k^2 + w_sum * (sum_k
    d_k)^2``."""
    if nb_targets == 1:
        return 1.0, 0.0, 1
    c1 = 2 ** (nb_targets - 1) - 1  # subsets holding target k
    c2 = 2 ** (nb_targets - 2) - 1  # subsets holding targets j and k
    return float(c1 - c2), float(c2), 2**nb_targets - 2


def _check_pairs(estimates: Sequence[Tensor], targets: Sequence[Tensor]) -> None:
    if len(estimates) != len(targets) or not estimates:
        raise ValueError(f"losses.py: need the same non-zero number of estimate and target blocks, got "
                         f"{len(estimates)} and {len(targets)}")
    for b, (e, t) in enumerate(zip(estimates, targets)):
        if e.shape != t.shape or e.dim() < 2:
            raise ValueError(f"losses.py: block {b}: estimate {tuple(e.shape)} and target {tuple(t.shape)} must "
                             "have the same shape (nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)")
        if torch.is_complex(e) or torch.is_complex(t):
            raise TypeError(f"losses.py: block {b}: the combination loss compares magnitudes, got complex input")
        if e.shape[1] != estimates[0].shape[1]:
            raise ValueError("losses.py: every block must hold the same number of targets")


def combination_loss(estimates: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Combination MSE over the target subsets, averaged over blocks (see the module docstring).

    Args:
        estimates, targets: lists of real blocks ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices,
            T_b)`` (estimated and true magnitudes).
    Returns:
        scalar: ``mean_b [ sum_s MSE(sum_{k in s} est_b,k, sum_{k in s} true_b,k) / nb_subsets ]``.
    """
    _check_pairs(estimates, targets)
    w_sq, w_sum, nb_subsets = _subset_square_weights(estimates[0].shape[1])
    total = estimates[0].new_zeros(())
    for e, t in zip(estimates, targets):
        d = e - t  # (nb_samples, nb_targets, ...)
        per_element = w_sq * d.square().sum(1)
        if w_sum:
            per_element = per_element + w_sum * d.sum(1).square()  # sum over targets, then square
        total = total + per_element.mean() / nb_subsets
    return total / len(estimates)


def gram_matrix(signals: Tensor) -> Tensor:
    """Inner products of every pair of signals along time, in float64.

    Args:
        signals: ``(nb_samples, nb_signals, nb_channels, nb_timesteps)``.
    Returns:
        ``(nb_samples, nb_channels, nb_signals, nb_signals)``.
    """
    # channels before signals: (nb_samples, nb_channels, nb_signals, nb_timesteps)
    x = signals.to(torch.float64).transpose(1, 2)
    return x @ x.transpose(-1, -2)


def combination_products(a: Tensor, gram: Tensor, b: Tensor) -> Tensor:
    """``<sum_n a[k, n] x_n, sum_n b[k, n] x_n>`` for every row ``k``, from the Gram matrix of the ``x_n``.

    Args:
        a, b: coefficients ``(nb_combinations, nb_signals)``.
        gram: ``(..., nb_signals, nb_signals)`` (see :func:`gram_matrix`).
    Returns:
        ``(..., nb_combinations)``.
    """
    a, b = a.to(dtype=gram.dtype, device=gram.device), b.to(dtype=gram.dtype, device=gram.device)
    return torch.einsum("kn,...nm,km->...k", a, gram, b)


def subset_sisdr_loss(est_wave: Tensor, ref_wave: Tensor, eps: float = 1e-8, zero_mean: bool = True) -> Tensor:
    """Mean negative SI-SDR (dB) of the target subsets' summed waveforms, from Gram matrices.

    Equals ``auraloss.time.SISDRLoss(zero_mean, eps)(est_sub, ref_sub)`` on the subset sums ``est_sub``,
    ``ref_sub`` ``(nb_samples, nb_subsets, nb_channels, nb_timesteps)``, without forming them: with zero-mean
    per-target signals (removing the mean commutes with summing), ``e_s = sum_k m_sk e_k`` and so on, every
    inner product of subset signals is ``m_s^T G m_s`` for the per-target Gram blocks ``G``. Accumulated in
    float64, which keeps the residual energy ``|e|^2 - 2 a <e, r> + a^2 |r|^2`` free of cancellation (float32
    waveforms reach ~1e-12 relative residuals).

    Args:
        est_wave, ref_wave: ``(nb_samples, nb_targets, nb_channels, nb_timesteps)``.
        eps, zero_mean: as in ``auraloss.time.SISDRLoss``.
    Returns:
        scalar, mean over samples, subsets and channels, in ``est_wave``'s dtype.
    """
    nb_targets = est_wave.shape[1]
    e, r = est_wave.to(torch.float64), ref_wave.to(torch.float64)
    if zero_mean:
        e = e - e.mean(-1, keepdim=True)
        r = r - r.mean(-1, keepdim=True)
    # estimates and references side by side: (nb_samples, nb_channels, 2K, 2K)
    gram = gram_matrix(torch.cat([e, r], dim=1))
    m = subset_matrix(nb_targets, dtype=torch.float64, device=gram.device)  # (nb_subsets, K)

    k = nb_targets
    # (nb_samples, nb_channels, nb_subsets) each
    ee = combination_products(m, gram[..., :k, :k], m)
    er = combination_products(m, gram[..., :k, k:], m)
    rr = combination_products(m, gram[..., k:, k:], m)
    alpha = er / (rr + eps)
    scaled = alpha.square() * rr  # |a r|^2
    residual = (ee - 2 * alpha * er + scaled).clamp_min(0.0)  # |e - a r|^2
    sisdr = 10 * torch.log10(scaled / (residual + eps) + eps)
    return (-sisdr.mean()).to(est_wave.dtype)


class MultiDomainLoss(nn.Module):
    """``total = combination MSE (magnitudes) + mcoef * SI-SDR loss (mix-phase waveforms)`` over target subsets.

    Args:
        slicqt: the transform whose ``inverse`` turns mix-phase estimates into waveforms.
        mcoef: weight of the time-domain term (0.1).
        time_domain: compute the SI-SDR term (False: ``total = mse``, no inverse transform at all).
        eps, zero_mean: as in ``auraloss.time.SISDRLoss``.
        sisdr: ``"gram"`` (default, subset SI-SDRs from Gram matrices, :func:`subset_sisdr_loss`) or
            ``"auraloss"`` (subset waveforms formed and passed to ``auraloss.time.SISDRLoss``); same values.
    """

    def __init__(self, slicqt: SliCQT, mcoef: float = 0.1, time_domain: bool = True, eps: float = 1e-8,
                 zero_mean: bool = True, sisdr: str = "gram"):
        super().__init__()
        if sisdr not in SISDR_IMPLEMENTATIONS:
            raise ValueError(f"losses.py: sisdr must be one of {SISDR_IMPLEMENTATIONS}, got {sisdr!r}")
        self.slicqt = slicqt
        self.mcoef = float(mcoef)
        self.time_domain = bool(time_domain)
        self.eps, self.zero_mean, self.sisdr_impl = float(eps), bool(zero_mean), sisdr
        self.sisdr = None
        if sisdr == "auraloss":  # imported only when used: the default needs no auraloss
            import auraloss

            self.sisdr = auraloss.time.SISDRLoss(zero_mean=zero_mean, eps=eps, reduction="mean")

    def time_loss(self, estimates: Sequence[Tensor], mixture: Sequence[Tensor], target_waveforms: Tensor) -> Tensor:
        """The SI-SDR term alone (with gradient).

        Args:
            estimates: real blocks ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)``.
            mixture: complex mixture blocks ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)`` (the phase).
            target_waveforms: true ``(nb_samples, nb_targets, nb_channels, nb_timesteps)``.
        Returns:
            scalar: mean negative SI-SDR (dB) over samples, subsets and channels.
        """
        if target_waveforms.dim() != 4 or target_waveforms.shape[:3] != estimates[0].shape[:3]:
            raise ValueError(
                f"losses.py: target waveforms should be (nb_samples, nb_targets, nb_channels, nb_timesteps) = "
                f"{tuple(estimates[0].shape[:3])} + (length,), got {tuple(target_waveforms.shape)}"
            )
        if len(mixture) != len(estimates) or not all(torch.is_complex(m) for m in mixture):
            raise ValueError("losses.py: the time-domain term needs the complex mixture blocks, one per estimate "
                             "block (their phase is given to the estimates)")
        # mix-phase estimates, every target inverted once: (nb_samples, nb_targets, nb_channels, nb_timesteps)
        complex_est = [mix_phase(e, m) for e, m in zip(estimates, mixture)]
        est_wave = self.slicqt.inverse(complex_est, target_waveforms.shape[-1])
        if self.sisdr_impl == "gram":
            return subset_sisdr_loss(est_wave, target_waveforms, eps=self.eps, zero_mean=self.zero_mean)
        matrix = subset_matrix(target_waveforms.shape[1], dtype=est_wave.dtype, device=est_wave.device)
        # subset sums on waveforms (the inverse is linear): (nb_samples, nb_subsets, nb_channels, nb_timesteps)
        est_sub = torch.einsum("sk,bkcl->bscl", matrix, est_wave)
        ref_sub = torch.einsum("sk,bkcl->bscl", matrix, target_waveforms.to(est_wave.dtype))
        return self.sisdr(est_sub, ref_sub)

    def terms(
        self,
        estimates: Sequence[Tensor],
        targets: Sequence[Tensor],
        mixture: Optional[Sequence[Tensor]] = None,
        target_waveforms: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Every term, for the optimiser and for logging.

        Args:
            estimates: real blocks ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)``.
            targets: true magnitudes, same shapes.
            mixture: complex mixture blocks ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``
                (needed when ``time_domain``).
            target_waveforms: ``(nb_samples, nb_targets, nb_channels, nb_timesteps)`` (needed when
                ``time_domain``).
        Returns:
            ``{"total", "mse"}`` plus ``"sisdr"`` (the negative SI-SDR in dB) when ``time_domain``;
            ``total = mse + mcoef * sisdr``.
        """
        mse = combination_loss(estimates, targets)
        out = {"mse": mse}
        if self.time_domain:
            if mixture is None or target_waveforms is None:
                raise ValueError("losses.py: MultiDomainLoss(time_domain=True) needs mixture= (complex blocks) and "
                                 "target_waveforms=; pass time_domain=False for the magnitude loss alone")
            out["sisdr"] = self.time_loss(estimates, mixture, target_waveforms)
            out["total"] = mse + self.mcoef * out["sisdr"]
        else:
            out["total"] = mse
        return out

    def forward(
        self,
        estimates: Sequence[Tensor],
        targets: Sequence[Tensor],
        mixture: Optional[Sequence[Tensor]] = None,
        target_waveforms: Optional[Tensor] = None,
    ) -> Tensor:
        """Scalar total loss (arguments as in :meth:`terms`)."""
        return self.terms(estimates, targets, mixture, target_waveforms)["total"]
