"""xumx-sliCQ v1: a per-block convolutional denoising autoencoder on sliCQ magnitudes, all targets in one module.

The sliCQ transform (:class:`xumx_slicq.transforms.SliCQT`) gives a list of blocks; block ``b`` holds
``nb_bins_b`` neighbouring frequency bins with ``T_b`` time coefficients per slice. For every block whose first
bin's centre frequency is below ``bandwidth`` (16 kHz: 51 of the 70 Bark-262 blocks), and for every target,
the network computes a mask in [0, 1]::

    mixture magnitude block                      (nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)
    -> overlap-add view (50 % overlap)           (nb_samples, nb_channels, nb_bins_b, L),  L = (S + 1) T_b / 2
    -> (x - input_mean) * input_scale            per bin, per target (trainable, see init_input_scaler)
    -> Conv2d(C -> 25)           -> BN -> ReLU   kernel (kf, kt), dilation (1, 2), no padding, no bias
    -> Conv2d(25 -> 55)          -> BN -> ReLU
    -> ConvTranspose2d(55 -> 25) -> BN -> ReLU   (restores exactly the size lost by the matching Conv2d)
    -> ConvTranspose2d(25 -> C)  -> BN -> ReLU
    -> ConvTranspose2d(C -> C, kernel (1, 3), stride (1, 2), bias) -> sigmoid
                                                 time axis 2 L + 1 = (S + 1) T_b + 1 frames: "de-overlaps"
    -> crop the time axis to S * T_b, split it into (S, T_b)
    -> mask                                      (nb_samples, nb_targets, nb_channels, nb_bins_b, S, T_b)

and the estimate is ``mask * mixture magnitude``. Kernel rules (the originals, all constructor arguments):
``kf = 1`` for blocks of < 10 bins, ``3`` for 10-19 bins, ``5`` for >= 20 bins; ``kt = 7`` if ``T_b <= 100``
else ``13``. The default model holds exactly 6,669,912 conv/BN parameters plus 1,944 input mean/scale values
(243 learned bins x 2 x 4 targets).

Design choices (documented, all checked by tests/test_model.py):

* **The targets' stacks are grouped convolutions.** The ``nb_targets`` stacks of a block are one stack of
  grouped convolutions (``groups=nb_targets``, group ``k`` = target ``k``) and BatchNorms over
  ``nb_targets * channels``: mathematically the same as independent per-target stacks (BatchNorm is per
  channel, grouped convolutions never mix groups; a test perturbs one target's weights and checks the others'
  masks do not move), with the same parameter count, but 51 instead of 204 layer stacks to launch (fewer kernel
  launches on a GPU; the same training cost on a CPU, see docs/export.md).
* **Input normalisation** is ``(x - input_mean) * input_scale`` (the project's baseline convention; the original
  wrote ``(x + mean) * scale`` with ``mean`` initialised to minus the data mean - the same model). The statistics
  come from the overlap-add view, the very tensor the first convolution sees (:func:`init_input_scaler`).
* **Passed-through blocks** (first bin at or above ``bandwidth``) get mask 1, i.e. every target's estimate is
  the mixture magnitude, as in the original (the Wiener step downstream shares that energy out).
* **Short inputs.** The encoder needs ``L >= 2 * dil_t * (kt - 1) + 1`` frames (49 for kt 13, 25 for kt 7). A
  block whose overlap-add view is shorter (only for inputs of <= 9030 samples, 2 slices, on the 16-coefficient
  block) is zero-padded on the right of the time axis *before* normalisation (zero magnitude = silence); the
  output is cropped back to ``S * T_b``. The final transposed convolution always returns ``(S + 1) T_b + 1 >=
  S T_b`` frames, so no padding is needed after it.
* **Few bins.** With ``kf`` bins lost twice by the encoder, a block needs ``nb_bins > 2 * dil_f * (kf - 1)``;
  the default thresholds guarantee it, custom ones may not: ``kf`` is then reduced to the largest kernel that
  fits (recorded in :attr:`XUMXSliCQ.kernels`).

``python -m benchmark model-summary --summary`` prints a torchinfo summary and the parameter counts.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transforms import Block, SliCQT, overlap_add

__all__ = [
    "DEFAULT_TARGETS",
    "BlockNet",
    "XUMXSliCQ",
    "kernel_for_block",
    "compute_block_stats",
    "init_input_scaler",
]

DEFAULT_TARGETS = ("vocals", "drums", "bass", "other")


def kernel_for_block(
    nb_bins: int,
    T: int,
    freq_kernel_thresholds: Sequence[int] = (10, 20),
    freq_kernels: Sequence[int] = (1, 3, 5),
    time_kernel_thresholds: Sequence[int] = (100,),
    time_kernels: Sequence[int] = (7, 13),
    dilation: Sequence[int] = (1, 2),
) -> Tuple[int, int]:
    """Kernel ``(kf, kt)`` of the four main convolutions of a block of ``nb_bins`` bins and ``T`` coefficients.

    ``kf = freq_kernels[i]`` with ``i`` the number of thresholds ``<= nb_bins`` (defaults: < 10 bins -> 1,
    10-19 -> 3, >= 20 -> 5); ``kt = time_kernels[j]`` with ``j`` the number of thresholds ``< T`` (defaults:
    ``T <= 100`` -> 7, else 13). ``kf`` is then reduced, if needed, so that two unpadded convolutions leave at
    least one bin: ``nb_bins - 2 * dilation[0] * (kf - 1) >= 1``.
    """
    if len(freq_kernels) != len(freq_kernel_thresholds) + 1:
        raise ValueError(
            f"model.py: need one more freq kernel than thresholds, got {list(freq_kernels)} and "
            f"{list(freq_kernel_thresholds)}"
        )
    if len(time_kernels) != len(time_kernel_thresholds) + 1:
        raise ValueError(
            f"model.py: need one more time kernel than thresholds, got {list(time_kernels)} and "
            f"{list(time_kernel_thresholds)}"
        )
    kf = int(freq_kernels[sum(1 for t in freq_kernel_thresholds if nb_bins >= t)])
    kt = int(time_kernels[sum(1 for t in time_kernel_thresholds if T > t)])
    if kf < 1 or kt < 1:
        raise ValueError(f"model.py: kernel sizes must be >= 1, got ({kf}, {kt})")
    kf = min(kf, (nb_bins - 1) // (2 * int(dilation[0])) + 1)
    return kf, kt


def transposed_conv_as_conv(x: Tensor, layer: nn.ConvTranspose2d) -> Tensor:
    """A stride-1, unpadded ``ConvTranspose2d`` computed as the equivalent fully padded ``Conv2d``.

    Same result and the same parameters, but it runs on the fast convolution kernels: on CPU PyTorch's dilated
    transposed convolution falls back to a slow im2col path that was ~2/3 of the model's time and most of its
    peak memory.

    Args:
        x: ``(nb_samples, in_channels, H, W)``.
        layer: the transposed convolution (stride 1, padding 0, output_padding 0; any dilation and groups).
    Returns:
        ``(nb_samples, out_channels, H + dh (kh - 1), W + dw (kw - 1))``, equal to ``layer(x)``.
    """
    if tuple(layer.stride) != (1, 1) or tuple(layer.padding) != (0, 0) or tuple(layer.output_padding) != (0, 0):
        return layer(x)
    return transposed_conv2d_as_conv(x, layer.weight, layer.bias, tuple(layer.dilation), layer.groups)


def transposed_conv2d_as_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], dilation: Tuple[int, int],
                              groups: int) -> Tensor:
    """``F.conv_transpose2d(x, weight, bias, dilation=dilation, groups=groups)`` (stride 1, no padding) computed
    as a ``conv2d`` of the zero-padded input with the flipped, in/out-swapped kernel.

    Args:
        x: ``(nb_samples, in_channels, H, W)``.
        weight: transposed-convolution weight ``(in_channels, out_channels / groups, kh, kw)``.
    Returns:
        ``(nb_samples, out_channels, H + dh (kh - 1), W + dw (kw - 1))``.
    """
    cin, cout_g, kh, kw = weight.shape
    dh, dw = dilation
    g = groups
    # (cin, cout/g, kh, kw) -> per group swap in/out -> (cout, cin/g, kh, kw), kernel flipped in both axes
    w = weight.reshape(g, cin // g, cout_g, kh, kw).transpose(1, 2).reshape(g * cout_g, cin // g, kh, kw)
    w = w.flip(-1, -2)
    # full padding, by the convolution itself (one Conv node with pads in an exported graph, no Pad node)
    return F.conv2d(x, w, bias, padding=(dh * (kh - 1), dw * (kw - 1)), dilation=dilation, groups=g)


class BlockNet(nn.Module):
    """The learned layers of one sliCQ block, for all targets at once (grouped convolutions).

    Args:
        nb_bins: bins of the block (``nb_bins_b``).
        nb_targets: targets (one group each).
        nb_channels: audio channels (2).
        hidden_channels: channels of the two hidden layers per target (25, 55).
        kernel: ``(kf, kt)`` of the four main (transposed) convolutions.
        dilation: ``(freq, time)`` dilation of the four main convolutions.

    Parameters: ``input_mean``, ``input_scale`` ``(nb_targets, nb_bins)``; the convolutions and BatchNorms.
    """

    def __init__(
        self,
        nb_bins: int,
        nb_targets: int,
        nb_channels: int = 2,
        hidden_channels: Sequence[int] = (25, 55),
        kernel: Tuple[int, int] = (1, 7),
        dilation: Tuple[int, int] = (1, 2),
    ):
        super().__init__()
        h1, h2 = (int(h) for h in hidden_channels)
        k, g, c = tuple(kernel), nb_targets, nb_channels
        self.nb_bins, self.nb_targets, self.nb_channels = nb_bins, nb_targets, nb_channels
        self.kernel, self.dilation = k, tuple(dilation)
        self.input_mean = nn.Parameter(torch.zeros(nb_targets, nb_bins))
        self.input_scale = nn.Parameter(torch.ones(nb_targets, nb_bins))

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(g * cin, g * cout, k, dilation=self.dilation, groups=g, bias=False)

        def deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
            return nn.ConvTranspose2d(g * cin, g * cout, k, dilation=self.dilation, groups=g, bias=False)

        self.layers = nn.Sequential(
            conv(c, h1), nn.BatchNorm2d(g * h1), nn.ReLU(inplace=True),
            conv(h1, h2), nn.BatchNorm2d(g * h2), nn.ReLU(inplace=True),
            deconv(h2, h1), nn.BatchNorm2d(g * h1), nn.ReLU(inplace=True),
            deconv(h1, c), nn.BatchNorm2d(g * c), nn.ReLU(inplace=True),
        )
        # de-overlap: doubles the time axis, 2 L + 1 frames
        self.final = nn.ConvTranspose2d(g * c, g * c, (1, 3), stride=(1, 2), groups=g, bias=True)
        # frames the encoder needs so that its output has at least one frame
        self.min_frames = 2 * self.dilation[1] * (k[1] - 1) + 1

    def forward(self, mag: Tensor) -> Tensor:
        """Masks of one block.

        Args:
            mag: mixture magnitude ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``.
        Returns:
            masks in [0, 1], ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)``.
        """
        nb_samples, nb_channels, nb_bins, nb_slices, t = mag.shape
        x = overlap_add(mag)  # (nb_samples, nb_channels, nb_bins_b, L)
        frames = x.shape[-1]
        if frames < self.min_frames:
            # zero magnitude (silence) right of short inputs; cropped away below
            x = F.pad(x, (0, self.min_frames - frames))
        # one copy per target, normalised per bin: (nb_samples, nb_targets, nb_channels, nb_bins_b, L)
        x = (x.unsqueeze(1) - self.input_mean[:, None, :, None]) * self.input_scale[:, None, :, None]
        # targets x channels as convolution channels, target-major (group k = target k)
        x = x.reshape(nb_samples, self.nb_targets * nb_channels, nb_bins, x.shape[-1])
        # Inference computes the transposed convolutions as padded convolutions (faster on long inputs, lower peak
        # memory); training keeps the native ones, whose backward pass is faster (docs/export.md), on a
        # channels-last input: same values and shape, NHWC memory, which oneDNN's convolution backward runs
        # 1.1-1.4x faster on CPU (docs/run2.md, "Why 16/32")
        as_conv = not torch.is_grad_enabled()
        if not as_conv:
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.layers:
            x = transposed_conv_as_conv(x, layer) if as_conv and isinstance(layer, nn.ConvTranspose2d) else layer(x)
        x = torch.sigmoid(self.final(x))  # (nb_samples, nb_targets * nb_channels, nb_bins_b, 2L'+1)
        x = x[..., : nb_slices * t]  # crop to whole slices
        # split targets from channels and the time axis into slices
        return x.reshape(nb_samples, self.nb_targets, nb_channels, nb_bins, nb_slices, t)


class XUMXSliCQ(nn.Module):
    """xumx-sliCQ v1: per-block convolutional mask estimators for all targets (see the module docstring).

    Args:
        slicq_config: constructor arguments of the :class:`SliCQT` whose blocks the model consumes
            (JSON-safe; ``SliCQT(...).config``). Default: Bark-262, 32.9-22050 Hz, 44.1 kHz.
        targets: target names, in output order.
        nb_channels: audio channels (2).
        bandwidth: blocks whose first bin's centre frequency is ``>= bandwidth`` Hz are passed through (mask 1).
        hidden_channels: per-target channels of the two hidden layers.
        freq_kernel_thresholds, freq_kernels, time_kernel_thresholds, time_kernels: kernel rules
            (:func:`kernel_for_block`).
        dilation: ``(freq, time)`` dilation of the four main convolutions.

    Attributes:
        targets: tuple of target names.
        blocks: the transform's :class:`Block` list; ``learned``: one bool per block; ``kernels``: ``(kf, kt)``
            per block (``None`` for passed-through blocks); ``nets``: one :class:`BlockNet` per learned block.

    ``forward(blocks)``: list of mixture magnitude blocks ``(nb_samples, nb_channels, nb_bins_b, nb_slices,
    T_b)`` -> list of estimates ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)``.
    Rebuild with ``XUMXSliCQ(**model.get_config())``.
    """

    arch = "xumx-slicq"

    def __init__(
        self,
        slicq_config: Optional[Dict[str, Any]] = None,
        targets: Sequence[str] = DEFAULT_TARGETS,
        nb_channels: int = 2,
        bandwidth: float = 16000.0,
        hidden_channels: Sequence[int] = (25, 55),
        freq_kernel_thresholds: Sequence[int] = (10, 20),
        freq_kernels: Sequence[int] = (1, 3, 5),
        time_kernel_thresholds: Sequence[int] = (100,),
        time_kernels: Sequence[int] = (7, 13),
        dilation: Sequence[int] = (1, 2),
    ):
        super().__init__()
        targets = tuple(str(t) for t in targets)
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"model.py: targets must be distinct and non-empty, got {list(targets)}")
        if len(hidden_channels) != 2:
            raise ValueError(f"model.py: hidden_channels needs two values, got {list(hidden_channels)}")
        if len(dilation) != 2 or min(dilation) < 1:
            raise ValueError(f"model.py: dilation must be (freq, time) >= 1, got {list(dilation)}")
        slicqt = SliCQT(**(slicq_config or {}))
        self.slicq_config = dict(slicqt.config)
        self.targets = targets
        self.nb_channels = int(nb_channels)
        self.bandwidth = float(bandwidth)
        self.hidden_channels = tuple(int(h) for h in hidden_channels)
        self.freq_kernel_thresholds = tuple(int(t) for t in freq_kernel_thresholds)
        self.freq_kernels = tuple(int(k) for k in freq_kernels)
        self.time_kernel_thresholds = tuple(int(t) for t in time_kernel_thresholds)
        self.time_kernels = tuple(int(k) for k in time_kernels)
        self.dilation = tuple(int(d) for d in dilation)

        self.blocks: List[Block] = list(slicqt.blocks)
        freqs = slicqt.frequencies.tolist()
        self.learned = [freqs[b.first_bin] < self.bandwidth for b in self.blocks]
        self.kernels: List[Optional[Tuple[int, int]]] = []
        nets = []
        for blk, learn in zip(self.blocks, self.learned):
            if not learn:
                self.kernels.append(None)
                continue
            kernel = kernel_for_block(
                blk.nb_bins, blk.T, self.freq_kernel_thresholds, self.freq_kernels, self.time_kernel_thresholds,
                self.time_kernels, self.dilation,
            )
            self.kernels.append(kernel)
            nets.append(BlockNet(blk.nb_bins, len(targets), self.nb_channels, self.hidden_channels, kernel,
                                 self.dilation))
        self.nets = nn.ModuleList(nets)
        self._fused = None  # xumx_slicq.fused.FusedBlocks when set_fused(True); never in the state_dict or config

    # ------------------------------------------------------------------------------------------ fused execution
    def set_fused(self, enabled: bool = True, max_padding: Optional[float] = None) -> "XUMXSliCQ":
        """Run the learned blocks as buckets of grouped convolutions (:mod:`xumx_slicq.fused`) instead of one
        network per block: the same parameters, state_dict and results (within float rounding), far fewer
        operators. Not part of :meth:`get_config` or the checkpoint; off by default.

        Args:
            enabled: fused (True) or per-block (False) execution.
            max_padding: bucket bound, padded over real work (default ``fused.DEFAULT_MAX_PADDING``).
        Returns:
            the model (for chaining).
        """
        if not enabled:
            self._fused = None
            return self
        from .fused import DEFAULT_MAX_PADDING, FusedBlocks

        learned_t = [b.T for b, learn in zip(self.blocks, self.learned) if learn]
        self._fused = FusedBlocks(self.nets, learned_t, DEFAULT_MAX_PADDING if max_padding is None else max_padding)
        return self

    @property
    def fused(self) -> Optional[Any]:
        """The :class:`xumx_slicq.fused.FusedBlocks` plan in use, or None (per-block execution)."""
        return self._fused

    def learned_masks(self, mags: Sequence[Tensor]) -> List[Tensor]:
        """Masks of the learned blocks only, ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)``
        each, from their magnitudes ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)`` (fused or per block)."""
        if self._fused is not None:
            return self._fused.masks(self.nets, mags)
        return [net(x) for net, x in zip(self.nets, mags)]

    # ------------------------------------------------------------------------------------------ description
    def get_config(self) -> Dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild this architecture: ``XUMXSliCQ(**cfg)``."""
        return {
            "slicq_config": dict(self.slicq_config),
            "targets": list(self.targets),
            "nb_channels": self.nb_channels,
            "bandwidth": self.bandwidth,
            "hidden_channels": list(self.hidden_channels),
            "freq_kernel_thresholds": list(self.freq_kernel_thresholds),
            "freq_kernels": list(self.freq_kernels),
            "time_kernel_thresholds": list(self.time_kernel_thresholds),
            "time_kernels": list(self.time_kernels),
            "dilation": list(self.dilation),
        }

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "XUMXSliCQ":
        """Build an untrained model from :meth:`get_config` output."""
        return cls(**config)

    @property
    def nb_targets(self) -> int:
        return len(self.targets)

    @property
    def nb_learned_blocks(self) -> int:
        return len(self.nets)

    def learned_bins(self) -> int:
        """Frequency bins covered by learned blocks (243 for the default)."""
        return sum(b.nb_bins for b, learn in zip(self.blocks, self.learned) if learn)

    def parameter_counts(self) -> Dict[str, int]:
        """Learnable parameters: ``conv_bn`` (convolutions, BatchNorms, final layer), ``input_scaler``
        (input mean and scale), ``total``; plus ``per_target`` (total / nb_targets; the grouped layers hold
        exactly one equal share per target)."""
        scaler = sum(n.input_mean.numel() + n.input_scale.numel() for n in self.nets)
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"conv_bn": total - scaler, "input_scaler": scaler, "total": total,
                "per_target": total // self.nb_targets}

    def extra_repr(self) -> str:
        return (f"targets={list(self.targets)}, blocks={len(self.blocks)}, learned={self.nb_learned_blocks}, "
                f"bandwidth={self.bandwidth:g}")

    # ------------------------------------------------------------------------------------------ forward
    def _check(self, blocks: Sequence[Tensor]) -> None:
        if len(blocks) != len(self.blocks):
            raise ValueError(f"model.py: expected {len(self.blocks)} sliCQ blocks, got {len(blocks)}")
        ref = blocks[0]
        for blk, x in zip(self.blocks, blocks):
            if torch.is_complex(x):
                raise TypeError("model.py: the model takes magnitudes (real blocks), got complex blocks; "
                                "use transforms.magnitude_phase() or .abs() first")
            if (x.dim() != 5 or x.shape[1] != self.nb_channels or x.shape[2] != blk.nb_bins or x.shape[4] != blk.T
                    or x.shape[0] != ref.shape[0] or x.shape[3] != ref.shape[3]):
                raise ValueError(
                    f"model.py: block with first bin {blk.first_bin} should be (nb_samples, {self.nb_channels}, "
                    f"{blk.nb_bins}, nb_slices, {blk.T}) like the others, got {tuple(x.shape)}"
                )

    def masks(self, blocks: Sequence[Tensor]) -> List[Tensor]:
        """Masks in [0, 1] for every block (1 for passed-through blocks).

        Args:
            blocks: mixture magnitudes, one ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)`` per block.
        Returns:
            one ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)`` per block.
        """
        self._check(blocks)
        out = []
        learned = iter(self.learned_masks([x for x, learn in zip(blocks, self.learned) if learn]))
        for x, learn in zip(blocks, self.learned):
            if learn:
                out.append(next(learned))
            else:
                # mask 1 for every target: (nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)
                out.append(x.new_ones((x.shape[0], self.nb_targets, *x.shape[1:])))
        return out

    def forward(
        self, blocks: Sequence[Tensor], return_masks: bool = False
    ) -> Union[List[Tensor], Tuple[List[Tensor], List[Tensor]]]:
        """Target magnitude estimates, ``mask * mixture magnitude``.

        Args:
            blocks: mixture magnitudes, one ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)`` per block.
            return_masks: also return the masks.
        Returns:
            one ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)`` estimate per block (the
            passed-through blocks: the mixture magnitude for every target); with ``return_masks``,
            ``(estimates, masks)``.
        """
        if self._fused is None:
            masks = self.masks(blocks)
            # unsqueeze(1): the mixture broadcasts over the target axis
            estimates = [m * x.unsqueeze(1) for m, x in zip(masks, blocks)]
            return (estimates, masks) if return_masks else estimates
        # fused: the learned blocks' estimates come out of their buckets
        self._check(blocks)
        learned_masks, learned_est = self._fused.run(self.nets, [x for x, learn in zip(blocks, self.learned) if learn])
        lm, le = iter(learned_masks), iter(learned_est)
        masks, estimates = [], []
        for x, learn in zip(blocks, self.learned):
            if learn:
                masks.append(next(lm))
                estimates.append(next(le))
            else:
                # mask 1: (nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b); the mixture broadcasts
                masks.append(x.new_ones((x.shape[0], self.nb_targets, *x.shape[1:])))
                estimates.append(masks[-1] * x.unsqueeze(1))
        return (estimates, masks) if return_masks else estimates

    # ------------------------------------------------------------------------------------------ input scaler
    @torch.no_grad()
    def set_input_scaler(self, means: Sequence[Tensor], stds: Sequence[Tensor], rel_floor: float = 1e-4) -> None:
        """Set every target's input mean and scale from per-bin statistics.

        Args:
            means, stds: one ``(nb_bins_b,)`` tensor per block (all 70, or only the learned ones).
            rel_floor: ``std`` is floored at ``rel_floor * max(std over all learned bins)`` (and 1e-8) before
                taking ``scale = 1 / std``.
        """
        if len(means) == len(self.blocks):
            means = [m for m, learn in zip(means, self.learned) if learn]
            stds = [s for s, learn in zip(stds, self.learned) if learn]
        if len(means) != len(self.nets) or len(stds) != len(self.nets):
            raise ValueError(f"model.py: need statistics for {len(self.nets)} learned blocks (or all "
                             f"{len(self.blocks)}), got {len(means)} means and {len(stds)} stds")
        stds = [torch.as_tensor(s, dtype=torch.float32).flatten() for s in stds]
        floor = max(1e-8, rel_floor * max(float(s.max()) for s in stds))
        for net, m, s in zip(self.nets, means, stds):
            m = torch.as_tensor(m, dtype=torch.float32).flatten()
            if m.numel() != net.nb_bins or s.numel() != net.nb_bins:
                raise ValueError(f"model.py: block of {net.nb_bins} bins got statistics of {m.numel()} / "
                                 f"{s.numel()} values")
            net.input_mean.copy_(m.to(net.input_mean.device).expand_as(net.input_mean))
            net.input_scale.copy_((1.0 / s.clamp_min(floor)).to(net.input_scale.device).expand_as(net.input_scale))


# ------------------------------------------------------------------------------------------------------------
# Input statistics
# ------------------------------------------------------------------------------------------------------------


def _as_magnitude_blocks(item: Any, slicqt: Optional[SliCQT], nb_blocks: int) -> List[Tensor]:
    """One data item -> list of real magnitude blocks ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``.

    Accepted: a list/tuple of ``nb_blocks`` block tensors (magnitudes, or complex coefficients whose modulus is
    taken); audio ``(nb_channels, nb_timesteps)`` or ``(nb_samples, nb_channels, nb_timesteps)`` (needs
    ``slicqt``); a ``(mixture_audio, targets...)`` tuple as training datasets yield (its first element is used).
    """
    if isinstance(item, (list, tuple)) and len(item) == nb_blocks and all(
        torch.is_tensor(b) and b.dim() in (4, 5) for b in item
    ):
        blocks = [b.abs() if torch.is_complex(b) else b for b in item]
        # a single item without the sample axis: add it
        return [b if b.dim() == 5 else b.unsqueeze(0) for b in blocks]
    if isinstance(item, (list, tuple)) and item and torch.is_tensor(item[0]) and item[0].dim() in (2, 3):
        item = item[0]  # (mixture, targets) from a dataset
    if torch.is_tensor(item) and item.dim() in (2, 3):
        if slicqt is None:
            raise ValueError("model.py: init_input_scaler got audio items; pass slicqt= to transform them")
        audio = item if item.dim() == 3 else item.unsqueeze(0)  # (nb_samples, nb_channels, nb_timesteps)
        return [b.abs() for b in slicqt(audio.float())]
    raise TypeError(
        "model.py: init_input_scaler items must be lists of magnitude blocks, audio tensors "
        f"(nb_channels, nb_timesteps) / (nb_samples, nb_channels, nb_timesteps), or (audio, ...) tuples; got "
        f"{type(item).__name__}"
    )


@torch.no_grad()
def compute_block_stats(
    data: Iterable[Any],
    blocks: Sequence[Block],
    slicqt: Optional[SliCQT] = None,
    max_items: Optional[int] = None,
    progress: bool = True,
    which: Optional[Sequence[bool]] = None,
) -> Tuple[List[Optional[Tensor]], List[Optional[Tensor]], int]:
    """Per-bin mean and standard deviation of the overlap-add views of training magnitudes.

    Like a StandardScaler fitted on the overlap-add view (the tensor the network's first layer sees): every
    value of every item counts once, pooled over samples, channels and frames; float64 accumulation around a
    shift (the first item's mean) to avoid cancellation.

    Args:
        data: iterable of items (see :func:`_as_magnitude_blocks`): magnitude block lists, audio, or
            ``(audio, ...)`` tuples.
        blocks: the transform's block layout (checks shapes).
        slicqt: transform for audio items.
        max_items: stop after this many items (None: all).
        progress: tqdm bar.
        which: one bool per block, statistics only where True (default all).
    Returns:
        ``(means, stds, nb_items)``: one float32 ``(nb_bins_b,)`` tensor per block (None where not computed).
    """
    from tqdm import tqdm

    which = list(which) if which is not None else [True] * len(blocks)
    nb = len(blocks)
    sums: List[Optional[Tensor]] = [None] * nb
    sqs: List[Optional[Tensor]] = [None] * nb
    shifts: List[Optional[Tensor]] = [None] * nb
    counts = [0] * nb
    nb_items = 0
    total = max_items
    if total is None:
        try:
            total = len(data)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = tqdm(total=total, desc="input statistics", unit="item", disable=not progress)
    try:
        for item in data:
            if max_items is not None and nb_items >= max_items:
                break
            mags = _as_magnitude_blocks(item, slicqt, nb)
            for b, (blk, mag) in enumerate(zip(blocks, mags)):
                if not which[b]:
                    continue
                if mag.shape[-3] != blk.nb_bins or mag.shape[-1] != blk.T:
                    raise ValueError(f"model.py: block with first bin {blk.first_bin} should have {blk.nb_bins} "
                                     f"bins x {blk.T} coefficients, got {tuple(mag.shape)}")
                view = overlap_add(mag.to(torch.float64))  # (nb_samples, nb_channels, nb_bins_b, L)
                # bins first, everything else flattened: (nb_bins_b, N)
                flat = view.transpose(0, 2).reshape(blk.nb_bins, -1)
                if shifts[b] is None:
                    shifts[b] = flat.mean(1)
                    sums[b] = torch.zeros(blk.nb_bins, dtype=torch.float64)
                    sqs[b] = torch.zeros(blk.nb_bins, dtype=torch.float64)
                d = flat - shifts[b][:, None]
                sums[b] += d.sum(1)
                sqs[b] += (d * d).sum(1)
                counts[b] += flat.shape[1]
            nb_items += 1
            bar.update(1)
    finally:
        bar.close()
    if nb_items == 0:
        raise ValueError("model.py: compute_block_stats got no data")
    means: List[Optional[Tensor]] = []
    stds: List[Optional[Tensor]] = []
    for b in range(nb):
        if sums[b] is None:
            means.append(None)
            stds.append(None)
            continue
        mean_d = sums[b] / counts[b]
        var = (sqs[b] / counts[b] - mean_d * mean_d).clamp_min(0.0)
        means.append((mean_d + shifts[b]).float())
        stds.append(var.sqrt().float())
    return means, stds, nb_items


def init_input_scaler(
    model: XUMXSliCQ,
    data: Iterable[Any],
    slicqt: Optional[SliCQT] = None,
    max_items: Optional[int] = None,
    rel_floor: float = 1e-4,
    progress: bool = True,
) -> int:
    """Initialise the model's per-bin input mean/scale from training data (StandardScaler on the overlap-add
    view, std floored at ``rel_floor * max std``), for the learned blocks only.

    Args:
        model: the model to initialise (in place).
        data: items as accepted by :func:`compute_block_stats`: lists of magnitude blocks ``(nb_samples,
            nb_channels, nb_bins_b, nb_slices, T_b)``, audio ``(nb_channels, nb_timesteps)``, or a training
            dataset yielding ``(mixture, targets)``.
        slicqt: transform for audio items (default: one built from ``model.slicq_config``).
        max_items: cap on the number of items read.
        rel_floor: relative std floor.
        progress: tqdm bar.
    Returns:
        number of items used.
    """
    if slicqt is None:
        slicqt = SliCQT(**model.slicq_config)
    means, stds, n = compute_block_stats(data, model.blocks, slicqt, max_items, progress, which=model.learned)
    model.set_input_scaler([m for m in means if m is not None], [s for s in stds if s is not None], rel_floor)
    return n
