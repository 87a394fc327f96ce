"""STFT / ISTFT front-end of the UMX and X-UMX baselines.

Short-time Fourier transform with a periodic Hann window, ``n_fft`` 4096, hop 1024 and centred frames
(``center=True``), as used by open-unmix's umxhq. The inverse is exact: ``ISTFT(STFT(x), length=L)``
returns ``x`` up to float round-off, for any length ``L`` (the Hann window at hop n_fft/4 meets the
NOLA condition).

Shapes used throughout::

    waveform  (nb_samples, nb_channels, nb_timesteps)                 real
    stft      (nb_samples, nb_channels, nb_bins, nb_frames)           complex, nb_bins = n_fft // 2 + 1
    frames    nb_frames = 1 + nb_timesteps // n_hop                   (centred frames)

Any number of leading dimensions is accepted by both transforms (e.g. a target axis).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["STFT", "ISTFT", "magnitude", "nb_frames_for"]


def _hann(n_fft: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Periodic Hann window ``(n_fft,)`` built directly in ``dtype`` (a float32 window cast to float64
    would limit float64 transforms to float32 accuracy). Not stored, so checkpoints never carry it."""
    return torch.hann_window(n_fft, periodic=True, dtype=dtype, device=device)


def nb_frames_for(nb_timesteps: int, n_hop: int = 1024) -> int:
    """Number of centred STFT frames of a signal of ``nb_timesteps`` samples."""
    return 1 + nb_timesteps // n_hop


class STFT(nn.Module):
    """Forward STFT, waveform ``(..., nb_timesteps)`` -> complex ``(..., nb_bins, nb_frames)``.

    With the usual 3-d input ``(nb_samples, nb_channels, nb_timesteps)`` the output is
    ``(nb_samples, nb_channels, nb_bins, nb_frames)``.

    Centring pads ``n_fft // 2`` samples on both sides by reflection, as open-unmix does. Reflection
    needs more than ``n_fft // 2`` samples; shorter signals are zero-padded instead (only their edge
    frames differ, and the inverse stays exact either way).

    Args:
        n_fft: FFT size (also the window length).
        n_hop: hop between frames in samples.
        center: pad so that frame ``t`` is centred on sample ``t * n_hop``.
    """

    def __init__(self, n_fft: int = 4096, n_hop: int = 1024, center: bool = True):
        super().__init__()
        if n_fft <= 0 or n_hop <= 0 or n_hop > n_fft:
            raise ValueError(f"baselines/stft.py: need 0 < n_hop <= n_fft, got n_fft={n_fft}, n_hop={n_hop}")
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.center = center

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform ``(..., nb_timesteps)`` real -> ``(..., nb_bins, nb_frames)`` complex."""
        if x.dim() < 1:
            raise ValueError("baselines/stft.py: STFT input must have a time axis (..., nb_timesteps)")
        if x.is_complex():
            raise ValueError("baselines/stft.py: STFT input must be a real waveform, got a complex tensor")
        lead = x.shape[:-1]
        nb_timesteps = x.shape[-1]
        # flatten all leading axes into one batch axis: (prod(lead), nb_timesteps)
        flat = x.reshape(-1, nb_timesteps)
        pad_mode = "reflect" if nb_timesteps > self.n_fft // 2 else "constant"
        spec = torch.stft(
            flat,
            n_fft=self.n_fft,
            hop_length=self.n_hop,
            window=_hann(self.n_fft, flat.dtype, flat.device),
            center=self.center,
            pad_mode=pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        # restore the leading axes: (..., nb_bins, nb_frames)
        return spec.reshape(*lead, spec.shape[-2], spec.shape[-1])


class ISTFT(nn.Module):
    """Inverse STFT, complex ``(..., nb_bins, nb_frames)`` -> waveform ``(..., length)``.

    ``length`` trims or zero-extends the output to exactly that many samples (pass the length of the
    analysed signal for an exact inverse). Without it, ``(nb_frames - 1) * n_hop`` samples come back.

    Args:
        n_fft: FFT size; must match the forward transform.
        n_hop: hop between frames in samples.
        center: must match the forward transform.
    """

    def __init__(self, n_fft: int = 4096, n_hop: int = 1024, center: bool = True):
        super().__init__()
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.center = center

    def forward(self, X: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Complex ``(..., nb_bins, nb_frames)`` -> real ``(..., length)``."""
        if not X.is_complex():
            raise ValueError("baselines/stft.py: ISTFT input must be complex (..., nb_bins, nb_frames)")
        if X.dim() < 2 or X.shape[-2] != self.n_fft // 2 + 1:
            raise ValueError(
                f"baselines/stft.py: ISTFT expects (..., {self.n_fft // 2 + 1}, nb_frames), got {tuple(X.shape)}"
            )
        lead = X.shape[:-2]
        # flatten leading axes into one batch axis: (prod(lead), nb_bins, nb_frames)
        flat = X.reshape(-1, X.shape[-2], X.shape[-1])
        real_dtype = flat.real.dtype
        wav = torch.istft(
            flat,
            n_fft=self.n_fft,
            hop_length=self.n_hop,
            window=_hann(self.n_fft, real_dtype, flat.device),
            center=self.center,
            normalized=False,
            onesided=True,
            length=length,
        )
        # restore the leading axes: (..., nb_timesteps)
        return wav.reshape(*lead, wav.shape[-1])


def magnitude(X: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Magnitude (``power`` 1) or power (``power`` 2) spectrogram of a complex STFT.

    Args:
        X: complex ``(nb_samples, nb_channels, nb_bins, nb_frames)`` (any shape).
    Returns:
        real tensor of the same shape, ``|X| ** power``.
    """
    if not X.is_complex():
        raise ValueError("baselines/stft.py: magnitude() needs a complex STFT tensor")
    mag = X.abs()
    return mag if power == 1.0 else mag.pow(power)
