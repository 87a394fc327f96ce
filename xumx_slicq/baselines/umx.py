"""Open-Unmix (umxhq architecture) re-implemented as a baseline: one module, four per-target stacks.

Per target, on the STFT magnitude (n_fft 4096, hop 1024) of a stereo mixture::

    crop to max_bin (16 kHz) -> (x - input_mean) * input_scale
    -> Linear(nb_channels*max_bin -> hidden, no bias) -> BatchNorm1d -> tanh                 "encode"
    -> 3-layer BiLSTM (hidden/2 per direction, dropout 0.4 between layers)                 "recur"
    -> concat [encoded, lstm] (2*hidden)
    -> Linear(2*hidden -> hidden, no bias) -> BN -> ReLU
    -> Linear(hidden -> nb_channels*nb_bins, no bias) -> BN
    -> * output_scale + output_mean -> ReLU                                                "decode"
    -> times the mixture magnitude

With hidden 512 and stereo each stack holds exactly 8,893,348 parameters (mean/scale included).
The X-UMX variant (``xumx.py``) reuses :class:`TargetStack` and only changes how the stacks are wired.

The end-to-end helper :meth:`UMX.separate` runs waveform -> STFT -> model -> Wiener-EM -> ISTFT.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms import mix_phase
from ..wiener import wiener
from .stft import ISTFT, STFT

__all__ = [
    "DEFAULT_TARGETS",
    "TargetStack",
    "UMX",
    "bandwidth_to_max_bin",
    "compute_input_stats",
    "wiener_postprocess",
]

DEFAULT_TARGETS = ("vocals", "drums", "bass", "other")


def bandwidth_to_max_bin(sample_rate: float, n_fft: int, bandwidth: float) -> int:
    """Number of STFT bins whose centre frequency is <= ``bandwidth`` Hz (1487 for 44.1 kHz, 4096, 16 kHz)."""
    nb_bins = n_fft // 2 + 1
    if bandwidth >= sample_rate / 2:
        return nb_bins
    # bin k has centre frequency k * sample_rate / n_fft; keep bins 0..floor(bandwidth * n_fft / sr)
    return min(nb_bins, int(math.floor(bandwidth * n_fft / sample_rate)) + 1)


class TargetStack(nn.Module):
    """The learnable layers of one target (see the module docstring for the layer list).

    The three stages are exposed separately so that UMX (independent stacks) and X-UMX (bridged
    stacks) can wire them differently. All tensors are sequence-first, as the LSTM wants them.

    Args:
        nb_channels: audio channels (2 for stereo).
        nb_bins: STFT bins of the output (n_fft // 2 + 1).
        max_bin: STFT bins fed to the network (bandwidth crop).
        hidden_size: width of the hidden layers and of the LSTM output.
        nb_layers: LSTM layers.
        lstm_dropout: dropout between LSTM layers (ignored with a single layer).
        unidirectional: use a causal, one-directional LSTM of ``hidden_size`` units.
    """

    def __init__(
        self,
        nb_channels: int = 2,
        nb_bins: int = 2049,
        max_bin: int = 1487,
        hidden_size: int = 512,
        nb_layers: int = 3,
        lstm_dropout: float = 0.4,
        unidirectional: bool = False,
    ):
        super().__init__()
        if hidden_size % 2 and not unidirectional:
            raise ValueError(f"baselines/umx.py: hidden_size must be even for a BiLSTM, got {hidden_size}")
        self.nb_channels = nb_channels
        self.nb_bins = nb_bins
        self.max_bin = max_bin
        self.hidden_size = hidden_size

        self.input_mean = nn.Parameter(torch.zeros(max_bin))
        self.input_scale = nn.Parameter(torch.ones(max_bin))

        self.fc1 = nn.Linear(nb_channels * max_bin, hidden_size, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden_size)

        lstm_units = hidden_size if unidirectional else hidden_size // 2
        self.lstm = nn.LSTM(
            input_size=hidden_size,
            hidden_size=lstm_units,
            num_layers=nb_layers,
            bidirectional=not unidirectional,
            batch_first=False,
            dropout=lstm_dropout if nb_layers > 1 else 0.0,
        )

        self.fc2 = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden_size)
        self.fc3 = nn.Linear(hidden_size, nb_channels * nb_bins, bias=False)
        self.bn3 = nn.BatchNorm1d(nb_channels * nb_bins)

        self.output_scale = nn.Parameter(torch.ones(nb_bins))
        self.output_mean = nn.Parameter(torch.ones(nb_bins))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and compress the cropped magnitude.

        Args:
            x: ``(nb_frames, nb_samples, nb_channels, max_bin)`` mixture magnitude, bandwidth-cropped.
        Returns:
            ``(nb_frames, nb_samples, hidden_size)`` in [-1, 1].
        """
        nb_frames, nb_samples = x.shape[0], x.shape[1]
        x = (x - self.input_mean) * self.input_scale
        # merge frames and samples, and channels with bins, for the dense layer: (T*B, C*max_bin)
        x = self.fc1(x.reshape(nb_frames * nb_samples, self.nb_channels * self.max_bin))
        x = torch.tanh(self.bn1(x))
        # split frames and samples again: (T, B, hidden)
        return x.reshape(nb_frames, nb_samples, self.hidden_size)

    def recur(self, h: torch.Tensor) -> torch.Tensor:
        """LSTM over time: ``(nb_frames, nb_samples, hidden_size)`` -> same shape."""
        out, _ = self.lstm(h)
        return out

    def decode(self, skip: torch.Tensor) -> torch.Tensor:
        """Map the skip-concatenated features to a non-negative mask.

        Args:
            skip: ``(nb_frames, nb_samples, 2 * hidden_size)``.
        Returns:
            ``(nb_frames, nb_samples, nb_channels, nb_bins)`` mask (ReLU output, unbounded above).
        """
        nb_frames, nb_samples = skip.shape[0], skip.shape[1]
        # merge frames and samples for the dense layers: (T*B, 2*hidden)
        y = skip.reshape(nb_frames * nb_samples, 2 * self.hidden_size)
        y = F.relu(self.bn2(self.fc2(y)))
        y = self.bn3(self.fc3(y))
        # split back into (T, B, C, nb_bins)
        y = y.reshape(nb_frames, nb_samples, self.nb_channels, self.nb_bins)
        return F.relu(y * self.output_scale + self.output_mean)


def compute_input_stats(
    magnitudes: Iterable[torch.Tensor], nb_bins: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and standard deviation of training magnitudes (float64 accumulation).

    Every value of every tensor counts once, pooled over samples, channels and frames.

    Args:
        magnitudes: iterable of real tensors ``(..., nb_bins, nb_frames)``, e.g. ``(nb_samples,
            nb_channels, nb_bins, nb_frames)`` STFT magnitudes of training mixtures.
        nb_bins: expected number of bins (checked when given).
    Returns:
        ``(mean, std)``, each ``(nb_bins,)`` float32.
    """
    total = sq = shift = None
    count = 0
    for mag in magnitudes:
        if mag.dim() < 2:
            raise ValueError("baselines/umx.py: compute_input_stats needs tensors (..., nb_bins, nb_frames)")
        if nb_bins is not None and mag.shape[-2] != nb_bins:
            raise ValueError(f"baselines/umx.py: expected {nb_bins} bins, got tensor of shape {tuple(mag.shape)}")
        # move bins last and flatten everything else: (N, nb_bins)
        flat = mag.detach().to(torch.float64).transpose(-1, -2).reshape(-1, mag.shape[-2])
        if flat.shape[0] == 0:
            continue
        if total is None:
            total = torch.zeros(flat.shape[1], dtype=torch.float64)
            sq = torch.zeros_like(total)
            # accumulate around a fixed shift (the first tensor's mean) to avoid cancellation in the variance
            shift = flat.mean(0)
        elif flat.shape[1] != total.shape[0]:
            raise ValueError("baselines/umx.py: compute_input_stats got tensors with different numbers of bins")
        d = flat - shift
        total += d.sum(0)
        sq += (d * d).sum(0)
        count += flat.shape[0]
    if count == 0:
        raise ValueError("baselines/umx.py: compute_input_stats got no data")
    mean_d = total / count
    var = (sq / count - mean_d * mean_d).clamp_min(0.0)
    return (mean_d + shift).float(), var.sqrt().float()


def wiener_postprocess(
    est_mag: torch.Tensor,
    mix_stft: torch.Tensor,
    niter: int = 1,
    wiener_win_len: int | None = 300,
    softmask: bool = False,
    residual: bool = False,
    eps: float = 1e-10,
) -> torch.Tensor:
    """Turn magnitude estimates into complex STFT estimates (Wiener-EM or mixture phase).

    ``niter == 0`` is handled here without the EM code: mixture phase on the estimates (or, with
    ``softmask``, ratio masks applied to the mixture). ``niter >= 1`` calls
    ``xumx_slicq.wiener.wiener`` (multichannel Wiener-EM) on windows of ``wiener_win_len`` frames.

    Args:
        est_mag: real ``(nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)``.
        mix_stft: complex ``(nb_samples, nb_channels, nb_bins, nb_frames)``.
        niter: EM iterations (0: no EM).
        wiener_win_len: frames per Wiener window; ``None`` processes each song in one go.
        softmask: start from ratio masks instead of magnitudes with mixture phase.
        residual: append one extra target, the mixture minus the sum of the others.
    Returns:
        complex ``(nb_samples, nb_targets (+1 with residual), nb_channels, nb_bins, nb_frames)``.
    """
    if est_mag.dim() != 5 or mix_stft.dim() != 4:
        raise ValueError(
            "baselines/umx.py: wiener_postprocess needs est_mag (B, S, C, F, T) and mix_stft (B, C, F, T), "
            f"got {tuple(est_mag.shape)} and {tuple(mix_stft.shape)}"
        )
    if niter < 0:
        raise ValueError(f"baselines/umx.py: niter must be >= 0, got {niter}")
    if niter == 0:
        if softmask:
            # ratio masks: unsqueeze(1) broadcasts the mixture / the source sum over the target axis
            ratio = est_mag / (eps + est_mag.sum(1, keepdim=True))
            y = ratio.to(mix_stft.dtype) * mix_stft.unsqueeze(1)
        else:
            y = mix_phase(est_mag, mix_stft)
        if residual:
            # mixture minus all targets, as one extra target on axis 1
            y = torch.cat([y, (mix_stft - y.sum(1)).unsqueeze(1)], dim=1)
        return y

    nb_samples, nb_targets, nb_channels, nb_bins, nb_frames = est_mag.shape
    out_targets = nb_targets + (1 if residual else 0)
    out = torch.zeros(
        (nb_samples, out_targets, nb_channels, nb_bins, nb_frames), dtype=mix_stft.dtype, device=mix_stft.device
    )
    win = nb_frames if not wiener_win_len else int(wiener_win_len)
    for b in range(nb_samples):
        for start in range(0, nb_frames, win):
            stop = min(nb_frames, start + win)
            # norbert layout: (nb_frames, nb_bins, nb_channels, nb_sources) from (S, C, F, T)
            spec = est_mag[b, ..., start:stop].permute(3, 2, 1, 0)
            # (nb_frames, nb_bins, nb_channels) from (C, F, T)
            mix = mix_stft[b, ..., start:stop].permute(2, 1, 0)
            y = wiener(spec, mix, iterations=niter, softmask=softmask, residual=residual, eps=eps)
            # back from (T, F, C, S) to (S, C, F, T)
            out[b, ..., start:stop] = y.permute(3, 2, 1, 0).to(out.dtype)
    return out


class UMX(nn.Module):
    """Open-Unmix umxhq baseline holding all targets, each as an independent :class:`TargetStack`.

    ``forward`` maps a mixture magnitude ``(nb_samples, nb_channels, nb_bins, nb_frames)`` to target
    magnitude estimates ``(nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)`` in the order of
    ``self.targets``. ``separate`` is the end-to-end waveform helper used at inference.

    Rebuild from a checkpoint with ``UMX(**cfg)`` where ``cfg = model.get_config()`` (JSON-safe).

    Args:
        nb_channels: audio channels (2).
        n_fft, n_hop: STFT parameters (4096, 1024); ``nb_bins = n_fft // 2 + 1``.
        sample_rate: audio sample rate (44100), used for the bandwidth crop.
        max_bin: bins fed to the network; when ``None`` derived from ``bandwidth``.
        bandwidth: input bandwidth in Hz (16000 -> 1487 bins at 44.1 kHz / 4096).
        hidden_size: hidden width (512).
        nb_layers: LSTM layers (3).
        lstm_dropout: dropout between LSTM layers (0.4).
        unidirectional: causal LSTM instead of a BiLSTM.
        targets: target names; the output's target axis follows this order.
    """

    arch = "umx"

    def __init__(
        self,
        nb_channels: int = 2,
        n_fft: int = 4096,
        n_hop: int = 1024,
        sample_rate: float = 44100.0,
        max_bin: int | None = None,
        bandwidth: float = 16000.0,
        hidden_size: int = 512,
        nb_layers: int = 3,
        lstm_dropout: float = 0.4,
        unidirectional: bool = False,
        targets: Sequence[str] = DEFAULT_TARGETS,
    ):
        super().__init__()
        targets = tuple(targets)
        if len(targets) < 1 or len(set(targets)) != len(targets):
            raise ValueError(f"baselines/umx.py: targets must be unique names, got {targets}")
        nb_bins = n_fft // 2 + 1
        if max_bin is None:
            max_bin = bandwidth_to_max_bin(sample_rate, n_fft, bandwidth)
        if not 1 <= max_bin <= nb_bins:
            raise ValueError(f"baselines/umx.py: max_bin must be in [1, {nb_bins}], got {max_bin}")
        self.targets = targets
        self.nb_channels = nb_channels
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.sample_rate = float(sample_rate)
        self.nb_bins = nb_bins
        self.max_bin = max_bin
        self.hidden_size = hidden_size
        self.nb_layers = nb_layers
        self.lstm_dropout = lstm_dropout
        self.unidirectional = unidirectional

        self.stacks = nn.ModuleDict(
            {
                name: TargetStack(
                    nb_channels=nb_channels,
                    nb_bins=nb_bins,
                    max_bin=max_bin,
                    hidden_size=hidden_size,
                    nb_layers=nb_layers,
                    lstm_dropout=lstm_dropout,
                    unidirectional=unidirectional,
                )
                for name in targets
            }
        )
        self.stft = STFT(n_fft=n_fft, n_hop=n_hop, center=True)
        self.istft = ISTFT(n_fft=n_fft, n_hop=n_hop, center=True)

    # ------------------------------------------------------------------ configuration
    def get_config(self) -> dict:
        """Constructor arguments (JSON-safe) that rebuild this architecture: ``type(model)(**cfg)``."""
        return {
            "nb_channels": self.nb_channels,
            "n_fft": self.n_fft,
            "n_hop": self.n_hop,
            "sample_rate": self.sample_rate,
            "max_bin": self.max_bin,
            "hidden_size": self.hidden_size,
            "nb_layers": self.nb_layers,
            "lstm_dropout": self.lstm_dropout,
            "unidirectional": self.unidirectional,
            "targets": list(self.targets),
        }

    @classmethod
    def from_config(cls, config: dict) -> "UMX":
        """Build an untrained model from :meth:`get_config` output."""
        return cls(**config)

    def parameters_per_target(self) -> dict[str, int]:
        """Learnable parameter count of each target's stack."""
        return {name: sum(p.numel() for p in stack.parameters()) for name, stack in self.stacks.items()}

    # ------------------------------------------------------------------ input statistics
    @torch.no_grad()
    def set_input_scaler(self, mean: torch.Tensor, std: torch.Tensor, rel_floor: float = 1e-4) -> None:
        """Set every target's input mean/scale from per-bin statistics.

        Args:
            mean, std: ``(nb_bins,)`` or ``(max_bin,)`` per-bin statistics; cropped to ``max_bin``.
            rel_floor: std is floored at ``rel_floor * max(std)`` (and 1e-8) before taking ``1/std``.
        """
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() < self.max_bin or std.numel() < self.max_bin:
            raise ValueError(
                f"baselines/umx.py: input statistics need >= {self.max_bin} bins, got {mean.numel()} / {std.numel()}"
            )
        mean, std = mean[: self.max_bin], std[: self.max_bin]
        floor = max(1e-8, rel_floor * float(std.max()))
        scale = 1.0 / std.clamp_min(floor)
        for stack in self.stacks.values():
            stack.input_mean.copy_(mean.to(stack.input_mean.device))
            stack.input_scale.copy_(scale.to(stack.input_scale.device))

    def init_input_scaler(self, magnitudes: Iterable[torch.Tensor], rel_floor: float = 1e-4) -> None:
        """Initialise input mean/scale from training magnitudes ``(..., nb_bins, nb_frames)`` (see
        :func:`compute_input_stats`)."""
        mean, std = compute_input_stats(magnitudes, nb_bins=self.nb_bins)
        self.set_input_scaler(mean, std, rel_floor=rel_floor)

    # ------------------------------------------------------------------ forward
    def _masks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Independent stacks. ``x``: ``(nb_frames, nb_samples, nb_channels, max_bin)`` ->
        one ``(nb_frames, nb_samples, nb_channels, nb_bins)`` mask per target."""
        masks = []
        for stack in self.stacks.values():
            h = stack.encode(x)
            # skip connection: (T, B, hidden) ++ (T, B, hidden) -> (T, B, 2*hidden)
            masks.append(stack.decode(torch.cat([h, stack.recur(h)], dim=-1)))
        return masks

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """Mixture magnitude ``(nb_samples, nb_channels, nb_bins, nb_frames)`` ->
        estimates ``(nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)``."""
        if mag.dim() != 4 or mag.shape[1] != self.nb_channels or mag.shape[2] != self.nb_bins:
            raise ValueError(
                f"baselines/umx.py: {type(self).__name__} expects magnitude (nb_samples, {self.nb_channels}, "
                f"{self.nb_bins}, nb_frames), got {tuple(mag.shape)}"
            )
        # crop the bandwidth and go sequence-first: (B, C, F, T) -> (T, B, C, max_bin)
        x = mag[:, :, : self.max_bin, :].permute(3, 0, 1, 2)
        masks = self._masks(x)
        # stack targets on axis 1 and return to frames-last: (T, B, C, F) x S -> (B, S, C, F, T)
        mask = torch.stack(masks, dim=0).permute(2, 0, 3, 4, 1)
        # unsqueeze(1): broadcast the mixture over the target axis
        return mask * mag.unsqueeze(1)

    # ------------------------------------------------------------------ inference
    def separate(
        self,
        waveform: torch.Tensor,
        niter: int = 1,
        wiener_win_len: int | None = 300,
        softmask: bool = False,
        residual: bool = False,
    ) -> torch.Tensor:
        """End-to-end separation (no gradient): waveform -> STFT -> model -> Wiener-EM -> ISTFT.

        Put the model in ``eval()`` mode first (BatchNorm running statistics, no dropout).

        Args:
            waveform: ``(nb_samples, nb_channels, nb_timesteps)`` mixture.
            niter: Wiener-EM iterations (1 as in open-unmix; 0 = mixture phase, no EM).
            wiener_win_len: frames per Wiener window (300), ``None`` for one window per song.
            softmask, residual: see :func:`wiener_postprocess`.
        Returns:
            ``(nb_samples, nb_targets (+1 with residual), nb_channels, nb_timesteps)``, exactly the input length.
        """
        if waveform.dim() != 3 or waveform.shape[1] != self.nb_channels:
            raise ValueError(
                f"baselines/umx.py: separate() expects (nb_samples, {self.nb_channels}, nb_timesteps), "
                f"got {tuple(waveform.shape)}"
            )
        with torch.no_grad():
            mix_stft = self.stft(waveform)
            est_mag = self(mix_stft.abs())
            est_stft = wiener_postprocess(
                est_mag, mix_stft, niter=niter, wiener_win_len=wiener_win_len, softmask=softmask, residual=residual
            )
            return self.istft(est_stft, length=waveform.shape[-1])
