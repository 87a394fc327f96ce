"""Fused execution of :class:`xumx_slicq.model.XUMXSliCQ`: many learned blocks as one stack of grouped convolutions.

The per-block network runs one small layer stack per learned sliCQ block (51 for Bark-262), so a training step
launches thousands of tiny operators. :class:`FusedBlocks` computes the **same parameters** bucket by bucket:
blocks with the same kernel ``(kf, kt)`` and similar time resolution ``T_b`` become one stack of grouped
convolutions, every layer once per bucket instead of once per block.

Layouts. A bucket's activations are ``(nb_samples, units * nb_targets * channels, H, L)``, one group per
``(unit, target)``:

* ``kf == 1`` (**rows**): a frequency kernel of 1 never mixes bins, so every bin of every block is its own unit
  (``H = 1``) and its block's weights are repeated for it (``index_select`` of the stacked weights): no bin
  padding at all.
* ``kf > 1`` (**blocks**): a unit is a block, its bins on the ``H`` axis, zero-padded to the bucket's largest.

Every unit's time axis is zero-padded to the bucket's longest overlap-add view, ``L = (S + 1) T_b / 2`` (or the
encoder's ``min_frames`` for short inputs, where the per-block network pads with silence too).

Validity. The convolutions are unpadded ("valid"): output ``(h, l)`` reads inputs ``h .. h + df (kf - 1)`` and
``l .. l + dt (kt - 1)``, so a unit's first ``rows - df (kf - 1)`` rows and ``len - dt (kt - 1)`` frames depend on
its valid input only, whatever the padding holds. The transposed convolutions are "full": they are exact on the
first ``rows + df (kf - 1)`` x ``len + dt (kt - 1)`` outputs provided that the input is zero outside the valid
region. So after each BatchNorm + ReLU whose output feeds a transposed convolution the invalid region is zeroed
(the masks); the final stride-2 layer then gives, on the first ``2 len + 1`` frames, exactly the per-block output,
and each block is cropped to its ``S * T_b`` frames.

BatchNorm. Training mode normalises with batch statistics per block and channel over the **valid** positions
only (biased variance), and updates each block's ``running_mean`` / ``running_var`` (unbiased variance) and
``num_batches_tracked`` with the module's momentum, as ``nn.BatchNorm2d`` does; eval mode uses the running
statistics. The weights are gathered at call time (``torch.stack`` of the per-block parameters), so gradients flow
back to the per-block parameters and the checkpoint format does not change.

Bucketing (:func:`plan_buckets`): the blocks of one kernel are sorted by ``T_b`` (largest first) and cut greedily
so that each bucket's padded work stays within ``max_padding`` times its real work (work ~ bins x ``T_b``, which
is proportional to the multiply-accumulates for any input length). :meth:`FusedBlocks.macs` counts the exact
multiply-accumulates of both executions for a given number of slices.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transforms import overlap_add

__all__ = ["DEFAULT_MAX_PADDING", "plan_buckets", "FusedBlocks"]

DEFAULT_MAX_PADDING = 1.25
# encoder shrink per layer output (conv, conv, transposed conv, transposed conv), in kernel reaches
_SHRINK = (1, 2, 1, 0)


def _padded_work(members: Sequence[Tuple[int, int]], rows_layout: bool) -> int:
    """Padded work (bins x T) of a bucket of ``(nb_bins, T)`` blocks."""
    t_max = max(t for _, t in members)
    if rows_layout:
        return sum(n for n, _ in members) * t_max
    return len(members) * max(n for n, _ in members) * t_max


def plan_buckets(specs: Sequence[Tuple[int, int, Tuple[int, int]]], max_padding: float = DEFAULT_MAX_PADDING
                 ) -> List[List[int]]:
    """Group blocks into buckets that run as one stack of grouped convolutions.

    Args:
        specs: ``(nb_bins, T, (kf, kt))`` per learned block.
        max_padding: bound on a bucket's padded work over its real work (bins x T; ``>= 1``); ``1`` fuses only
            blocks of the same size, ``inf`` one bucket per kernel.
    Returns:
        buckets as lists of indices into ``specs``, each sorted by ``T`` (largest first); every index once.
    """
    if not max_padding >= 1.0:
        raise ValueError(f"fused.py: max_padding must be >= 1, got {max_padding}")
    by_kernel: Dict[Tuple[int, int], List[int]] = {}
    for i, (_, _, k) in enumerate(specs):
        by_kernel.setdefault(tuple(k), []).append(i)
    buckets: List[List[int]] = []
    for kernel in sorted(by_kernel):
        rows_layout = kernel[0] == 1
        order = sorted(by_kernel[kernel], key=lambda i: (-specs[i][1], -specs[i][0], i))
        current: List[int] = []
        for i in order:
            trial = current + [i]
            members = [(specs[j][0], specs[j][1]) for j in trial]
            real = sum(n * t for n, t in members)
            if current and _padded_work(members, rows_layout) > max_padding * real:
                buckets.append(current)
                trial = [i]
            current = trial
        if current:
            buckets.append(current)
    return buckets


class _Bucket:
    """Static layout of one bucket (Python numbers only; tensors are made per device by :class:`FusedBlocks`)."""

    def __init__(self, members: List[int], nets: Sequence[nn.Module]):
        self.members = members  # indices into the learned blocks / model.nets
        first = nets[members[0]]
        self.kernel = tuple(first.kernel)
        self.dilation = tuple(first.dilation)
        self.min_frames = int(first.min_frames)
        self.nb_bins = [int(nets[j].nb_bins) for j in members]
        self.T = [None] * len(members)  # set by FusedBlocks from the block table
        self.rows = self.kernel[0] == 1
        self.H = 1 if self.rows else max(self.nb_bins)
        # unit -> position of its block in the bucket; for "rows" one unit per bin
        self.unit_block = ([b for b, n in enumerate(self.nb_bins) for _ in range(n)] if self.rows
                           else list(range(len(members))))
        self.U = len(self.unit_block)
        self.identity = self.U == len(members)  # unit == block: no weight repetition, no per-block reduction
        # bins -> concatenated input_mean columns; "blocks": H slots per block, padding slots read column 0
        starts = [sum(self.nb_bins[:b]) for b in range(len(members))]
        self.bin_gather = (None if self.rows else
                           [starts[b] + (h if h < n else 0) for b, n in enumerate(self.nb_bins) for h in range(self.H)])
        self.unit_start = [self.unit_block.index(b) for b in range(len(members))]


class FusedBlocks:
    """Runs the learned :class:`xumx_slicq.model.BlockNet` s of a model bucket by bucket (module docstring).

    Holds no parameters (not an ``nn.Module``): :meth:`masks` takes the model's ``nets`` at every call, so the
    model's ``state_dict`` stays exactly the per-block one.

    Args:
        nets: the learned blocks' networks (``model.nets``).
        T: ``T_b`` of each learned block, in the same order.
        max_padding: bucket bound of :func:`plan_buckets`.
    """

    def __init__(self, nets: Sequence[nn.Module], T: Sequence[int], max_padding: float = DEFAULT_MAX_PADDING):
        specs = [(int(n.nb_bins), int(t), tuple(n.kernel)) for n, t in zip(nets, T)]
        for n in nets:
            for layer in n.layers:
                if isinstance(layer, nn.BatchNorm2d) and not (layer.affine and layer.track_running_stats):
                    raise ValueError("fused.py: fused blocks need affine BatchNorms with running statistics")
        self.max_padding = float(max_padding)
        self.nb_blocks = len(specs)
        self.buckets = [_Bucket(m, nets) for m in plan_buckets(specs, max_padding)]
        for bk in self.buckets:
            bk.T = [specs[j][1] for j in bk.members]
            if any(t % 2 for t in bk.T):
                raise ValueError(f"fused.py: blocks need an even T, got {bk.T}")
        self._static: Dict[Tuple[str, int], Dict[str, Optional[Tensor]]] = {}
        self._geometry: Dict[tuple, dict] = {}
        # test hooks: value of the input padding, and whether the validity masks are applied
        self._pad_value = 0.0
        self._use_masks = True
        self._gather = True  # False: the per-block slicing that torch.export traces

    # -------------------------------------------------------------------------------------- description
    def describe(self) -> List[Dict[str, object]]:
        """One dict per bucket: kernel, layout, members (learned-block indices), bins, T, units, work factor."""
        out = []
        for bk in self.buckets:
            members = list(zip(bk.nb_bins, bk.T))
            real = sum(n * t for n, t in members)
            out.append({"kernel": list(bk.kernel), "layout": "rows" if bk.rows else "blocks",
                        "members": list(bk.members), "nb_bins": list(bk.nb_bins), "T": list(bk.T), "units": bk.U,
                        "work_factor": _padded_work(members, bk.rows) / real})
        return out

    def macs(self, nets: Sequence[nn.Module], nb_slices: int) -> Dict[str, int]:
        """Multiply-accumulates per sample of the four main and the final (transposed) convolutions, per-block
        (``real``) and fused with padding (``padded``), for ``nb_slices`` slices."""
        real = padded = 0
        for bk in self.buckets:
            net = nets[bk.members[0]]
            g, c = net.nb_targets, net.nb_channels
            h1, h2 = net.layers[0].out_channels // g, net.layers[3].out_channels // g
            kf, kt = bk.kernel
            df, dt = bk.dilation
            chans = [(c, h1), (h1, h2), (h2, h1), (h1, c)]

            def block_macs(rows: int, length: int) -> int:
                total = 0
                for i, (ci, co) in enumerate(chans):
                    k = _SHRINK[i]
                    total += g * ci * co * kf * kt * (rows - k * df * (kf - 1)) * (length - k * dt * (kt - 1))
                return total + g * c * c * 3 * rows * length  # final (1, 3) stride-2 layer: 3 taps per input

            lens = [max((nb_slices + 1) * t // 2, bk.min_frames) for t in bk.T]
            real += sum(block_macs(n, ln) for n, ln in zip(bk.nb_bins, lens))
            if bk.rows:
                padded += sum(block_macs(1, max(lens)) * n for n in bk.nb_bins)
            else:
                padded += len(bk.T) * block_macs(bk.H, max(lens))
        return {"real": real, "padded": padded}

    # -------------------------------------------------------------------------------------- tensors
    def _static_tensors(self, bk: _Bucket, device: torch.device) -> Dict[str, Optional[Tensor]]:
        key = (str(device), id(bk))
        if key not in self._static:
            def idx(values):
                return None if values is None else torch.tensor(values, dtype=torch.long, device=device)
            self._static[key] = {"unit_block": None if bk.identity else idx(bk.unit_block),
                                 "bin_gather": idx(bk.bin_gather)}
        return self._static[key]

    def _masks_and_counts(self, bk: _Bucket, nb_samples, nb_slices, device: torch.device, dtype: torch.dtype,
                          training: bool) -> dict:
        """Validity masks ``(U, 1, H_i, L_i)`` of the four layer outputs, and in training the valid-position count
        of each block ``(B, 1)`` per layer. Cached for concrete sizes; traced as tensor ops under export."""
        concrete = isinstance(nb_slices, int) and isinstance(nb_samples, int)
        key = (id(bk), nb_samples, nb_slices, str(device), dtype, training)
        if concrete and key in self._geometry:
            return self._geometry[key]
        kf, kt = bk.kernel
        df, dt = bk.dilation
        half = [t // 2 for t in bk.T]
        l_max = (nb_slices + 1) * max(half)
        if l_max < bk.min_frames:  # (short inputs only)
            l_max = bk.min_frames
        # valid frames and rows of each unit's input: (U,)
        unit_half = torch.tensor([half[b] for b in bk.unit_block], device=device)
        length0 = ((nb_slices + 1) * unit_half).clamp_min(bk.min_frames)
        rows0 = torch.tensor([1 if bk.rows else bk.nb_bins[b] for b in bk.unit_block], device=device)
        out: dict = {"l_max": l_max, "masks": [], "counts": []}
        for i, k in enumerate(_SHRINK):
            if i == 0 and not training:
                out["masks"].append(None)  # only BatchNorm statistics need the first layer's mask
                continue
            h_i, l_i = bk.H - k * df * (kf - 1), l_max - k * dt * (kt - 1)
            valid_t = torch.arange(l_i, device=device)[None, :] < (length0 - k * dt * (kt - 1))[:, None]
            valid_h = torch.arange(h_i, device=device)[None, :] < (rows0 - k * df * (kf - 1))[:, None]
            # (U, H_i) x (U, L_i) -> (U, 1, H_i, L_i)
            out["masks"].append((valid_h[:, :, None] & valid_t[:, None, :]).unsqueeze(1).to(dtype))
            if training:
                counts = []
                for b, (n, h) in enumerate(zip(bk.nb_bins, half)):
                    length = max((nb_slices + 1) * h, bk.min_frames) - k * dt * (kt - 1)
                    counts.append(nb_samples * (n - k * df * (kf - 1)) * length)
                out["counts"].append(torch.tensor(counts, dtype=dtype, device=device)[:, None])
        if concrete:
            self._geometry[key] = out
        return out

    # -------------------------------------------------------------------------------------- forward
    def masks(self, nets: Sequence[nn.Module], mags: Sequence[Tensor]) -> List[Tensor]:
        """Masks of every learned block, equal to ``[net(x) for net, x in zip(nets, mags)]``.

        Args:
            nets: ``model.nets`` (the networks this plan was made for).
            mags: mixture magnitudes of the learned blocks, ``(nb_samples, nb_channels, nb_bins_b, nb_slices,
                T_b)`` each.
        Returns:
            one ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)`` mask per learned block.
        """
        return self.run(nets, mags, estimates=False)[0]

    def run(self, nets: Sequence[nn.Module], mags: Sequence[Tensor], estimates: bool = True
            ) -> Tuple[List[Tensor], Optional[List[Tensor]]]:
        """Masks and (optionally) estimates ``mask * magnitude`` of every learned block.

        Args:
            nets, mags: as :meth:`masks`.
            estimates: also return the estimates (computed per bucket, not per block).
        Returns:
            ``(masks, estimates or None)``, one ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)``
            tensor per learned block in each list.
        """
        if len(nets) != self.nb_blocks or len(mags) != self.nb_blocks:
            raise ValueError(f"fused.py: planned for {self.nb_blocks} learned blocks, got {len(nets)} networks "
                             f"and {len(mags)} inputs")
        masks: List[Optional[Tensor]] = [None] * self.nb_blocks
        ests: List[Optional[Tensor]] = [None] * self.nb_blocks
        for bk in self.buckets:
            m, e = self._bucket(bk, [nets[j] for j in bk.members], [mags[j] for j in bk.members], estimates)
            for k, j in enumerate(bk.members):
                masks[j] = m[k]
                ests[j] = e[k] if e is not None else None
        return masks, (ests if estimates else None)  # type: ignore[return-value]

    def _gather_index(self, bk: _Bucket, nb_slices: int, device: torch.device) -> Dict[str, Tensor]:
        """Index tensors of the gather path for ``nb_slices`` (cached): ``first``/``second`` pick, for every
        ``(unit, row, frame)`` of the padded input, the two slice halves that overlap-add there from the
        concatenated flattened blocks (column ``F`` holds 0, column ``F + 1`` the padding value); ``out`` picks
        every block's ``(bin, slice, coefficient)`` from the flattened ``(unit, row, frame)`` output."""
        key = ("gather", id(bk), nb_slices, str(device))
        if key in self._geometry:
            return self._geometry[key]
        S, H = nb_slices, bk.H
        half = [t // 2 for t in bk.T]
        l_max = max(max((S + 1) * h for h in half), bk.min_frames)
        w_out = 2 * l_max + 1
        sizes = [n * S * t for n, t in zip(bk.nb_bins, bk.T)]
        offsets = [sum(sizes[:b]) for b in range(len(sizes))]
        zero, pad = sum(sizes), sum(sizes) + 1
        f = torch.arange(l_max)
        first, second, out = [], [], []
        for u, b in enumerate(bk.unit_block):
            n, t, h = bk.nb_bins[b], bk.T[b], half[b]
            length, eff = (S + 1) * h, max((S + 1) * h, bk.min_frames)
            for row in range(H):
                i = u - bk.unit_start[b] if bk.rows else row  # bin of the block
                if not bk.rows and row >= n:
                    first.append(torch.full((l_max,), pad))
                    second.append(torch.full((l_max,), zero))
                    continue
                base = offsets[b] + i * S * t
                k, r = f // h, f % h
                fi = torch.where((f < length) & (k < S), base + k * t + r, zero)
                se = torch.where((f < length) & (k >= 1), base + (k - 1) * t + h + r, zero)
                fi = torch.where(f < eff, fi, pad)  # beyond the valid region: the padding value
                first.append(fi)
                second.append(se)
                if bk.rows or row < n:
                    out.append((u * H + row) * w_out + torch.arange(S * t))
        idx = {"first": torch.cat(first).to(device), "second": torch.cat(second).to(device),
               "out": torch.cat(out).to(device), "sizes": sizes}
        self._geometry[key] = idx
        return idx

    def _bucket(self, bk: _Bucket, nets: List[nn.Module], mags: List[Tensor], estimates: bool
                ) -> Tuple[List[Tensor], Optional[List[Tensor]]]:
        nb_samples, nb_channels, _, nb_slices, _ = mags[0].shape
        g = nets[0].nb_targets
        device, dtype = mags[0].device, mags[0].dtype
        static = self._static_tensors(bk, device)
        unit_block = static["unit_block"]
        training = nets[0].layers[1].training
        geo = self._masks_and_counts(bk, nb_samples, nb_slices, device, dtype, training)
        l_max = geo["l_max"]
        # the gather path needs concrete sizes; under torch.export (symbolic nb_slices) blocks are sliced one by one
        gather = self._gather and isinstance(nb_slices, int)

        # 1) overlap-add views, zero-padded to (H, l_max): (nb_samples, nb_channels, U, H, l_max)
        if gather:
            idx = self._gather_index(bk, nb_slices, device)
            # every block flattened, (nb_samples, nb_channels, sum of n S T), then a 0 and a padding column
            flat = torch.cat([x.reshape(nb_samples, nb_channels, -1) for x in mags]
                             + [mags[0].new_tensor([0.0, self._pad_value]).expand(nb_samples, nb_channels, 2)], 2)
            x = flat.index_select(2, idx["first"]) + flat.index_select(2, idx["second"])
            x = x.reshape(nb_samples, nb_channels, bk.U, bk.H, l_max)
        else:
            parts = []
            for x, n in zip(mags, bk.nb_bins):
                v = overlap_add(x)  # (nb_samples, nb_channels, n, L)
                # rows: bins become units, (nb_samples, nb_channels, n, 1, L); blocks: (nb_samples, nb_channels, 1, n, L)
                v = v.unsqueeze(3) if bk.rows else v.unsqueeze(2)
                pad_t, pad_h = l_max - v.shape[-1], bk.H - v.shape[-2]
                if pad_t or pad_h:
                    if self._pad_value != 0.0 or pad_h:
                        v = F.pad(v, (0, 0, 0, pad_h), value=self._pad_value)
                    # up to min_frames: silence (as the per-block network pads), beyond: the padding value
                    eff = max(v.shape[-1], bk.min_frames)
                    v = F.pad(v, (0, eff - v.shape[-1]))
                    if l_max > eff:
                        v = F.pad(v, (0, l_max - eff), value=self._pad_value)
                parts.append(v)
            x = torch.cat(parts, 2)

        # 2) per-bin input normalisation, one copy per target
        mean = torch.cat([net.input_mean for net in nets], 1)  # (nb_targets, sum of bins)
        scale = torch.cat([net.input_scale for net in nets], 1)
        if static["bin_gather"] is not None:  # blocks: H slots per unit, (nb_targets, U * H)
            mean = mean.index_select(1, static["bin_gather"])
            scale = scale.index_select(1, static["bin_gather"])
        # (nb_targets, U * H) -> (U, nb_targets, 1, H, 1), broadcast over samples, channels and frames
        mean = mean.reshape(g, bk.U, 1, bk.H, 1).transpose(0, 1)
        scale = scale.reshape(g, bk.U, 1, bk.H, 1).transpose(0, 1)
        # (nb_samples, nb_channels, U, H, L) -> (nb_samples, U, 1, nb_channels, H, L)
        x = x.transpose(1, 2).unsqueeze(2)
        x = (x - mean) * scale  # (nb_samples, U, nb_targets, nb_channels, H, L)
        groups = bk.U * g
        x = x.reshape(nb_samples, groups * nb_channels, bk.H, l_max)  # group (unit, target)

        # 3) the four main layers, each followed by BatchNorm + ReLU
        for i in range(4):
            conv = [net.layers[3 * i] for net in nets]
            w = self._units(torch.stack([c.weight for c in conv]), unit_block)  # (U, out or in, ..., kf, kt)
            w = w.reshape(-1, *w.shape[2:])  # units into the channel axis
            if isinstance(conv[0], nn.ConvTranspose2d):
                if torch.is_grad_enabled():
                    x = F.conv_transpose2d(x, w, None, 1, 0, 0, groups, bk.dilation)
                else:
                    from .model import transposed_conv2d_as_conv

                    x = transposed_conv2d_as_conv(x, w, None, bk.dilation, groups)
            else:
                x = F.conv2d(x, w, None, 1, 0, bk.dilation, groups)
            # the next layer is a transposed conv (i >= 1): zero outside the valid region after BN + ReLU
            x = self._batch_norm_relu(x, [net.layers[3 * i + 1] for net in nets], bk, unit_block, geo, i,
                                      zero_invalid=i >= 1 and self._use_masks)

        # 4) de-overlap layer (stride 2 in time, bias), sigmoid
        finals = [net.final for net in nets]
        w = self._units(torch.stack([f.weight for f in finals]), unit_block)
        bias = self._units(torch.stack([f.bias for f in finals]), unit_block)
        x = F.conv_transpose2d(x, w.reshape(-1, *w.shape[2:]), bias.reshape(-1), (1, 2), 0, 0, groups)
        x = torch.sigmoid(x)
        # (nb_samples, U * nb_targets * nb_channels, H, W) -> (nb_samples, U, nb_targets, nb_channels, H, W)
        x = x.reshape(nb_samples, bk.U, g, nb_channels, bk.H, x.shape[-1])

        # 5) crop every block back to (nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)
        shapes = [(nb_samples, g, nb_channels, n, nb_slices, t) for n, t in zip(bk.nb_bins, bk.T)]
        if gather:
            # (nb_samples, nb_targets, nb_channels, U * H * W), then every block's bins, slices and coefficients
            flat_mask = x.permute(0, 2, 3, 1, 4, 5).reshape(nb_samples, g, nb_channels, -1)
            flat_mask = flat_mask.index_select(3, idx["out"])  # (nb_samples, nb_targets, nb_channels, sum n S T)
            masks = [m.view(shape) for m, shape in zip(flat_mask.split(idx["sizes"], 3), shapes)]
            if not estimates:
                return masks, None
            # the mixture in the same order (the concatenation above without its two extra columns)
            mix = flat[:, :, :-2].unsqueeze(1)  # (nb_samples, 1, nb_channels, sum n S T)
            ests = [e.view(shape) for e, shape in zip((flat_mask * mix).split(idx["sizes"], 3), shapes)]
            return masks, ests
        masks = []
        for b, (n, t) in enumerate(zip(bk.nb_bins, bk.T)):
            if bk.rows:
                u0 = bk.unit_start[b]
                # (nb_samples, n, nb_targets, nb_channels, S*T) -> (nb_samples, nb_targets, nb_channels, n, S*T)
                m = x[:, u0:u0 + n, :, :, 0, : nb_slices * t].permute(0, 2, 3, 1, 4)
            else:
                m = x[:, b, :, :, :n, : nb_slices * t]  # (nb_samples, nb_targets, nb_channels, n, S*T)
            masks.append(m.reshape(shapes[b]))  # frames into slices
        # the mixture broadcasts over the target axis
        return masks, ([m * x.unsqueeze(1) for m, x in zip(masks, mags)] if estimates else None)

    @staticmethod
    def _units(per_block: Tensor, unit_block: Optional[Tensor]) -> Tensor:
        """``(B, ...)`` per-block values -> ``(U, ...)`` per unit (repeated for every bin of a "rows" block)."""
        return per_block if unit_block is None else per_block.index_select(0, unit_block)

    def _batch_norm_relu(self, x: Tensor, bns: List[nn.BatchNorm2d], bk: _Bucket, unit_block: Optional[Tensor],
                         geo: dict, layer: int, zero_invalid: bool) -> Tensor:
        """BatchNorm of every block at once (masked statistics in training, running statistics in eval), ReLU,
        and with ``zero_invalid`` zeros outside the valid region.

        Args:
            x: ``(nb_samples, U * C', H, L)`` with ``C' = nb_targets * hidden`` channels per unit.
        Returns:
            ``relu(batch_norm(x))``, same shape.
        """
        nb_samples, channels, h, length = x.shape
        per_unit = (1, bk.U, channels // bk.U, 1, 1)  # (U, C') values against (nb_samples, U, C', H, L)
        x = x.reshape(nb_samples, bk.U, -1, h, length)
        weight = torch.stack([bn.weight for bn in bns])  # (B, C')
        bias = torch.stack([bn.bias for bn in bns])
        eps = bns[0].eps
        mask = geo["masks"][layer]  # (U, 1, H, L) or None
        if bns[0].training:
            count = geo["counts"][layer]  # (B, 1)
            s1 = self._blocks((x * mask).sum((0, 3, 4)), unit_block, len(bns))  # (B, C')
            mean = s1 / count
            d = (x - self._units(mean, unit_block).reshape(per_unit)) * mask
            var = self._blocks((d * d).sum((0, 3, 4)), unit_block, len(bns)) / count  # biased, (B, C')
            a = weight * torch.rsqrt(var + eps)
            # a and bias to units in one gather: (B, 2, C') -> (U, 2, C')
            ab = self._units(torch.stack([a, bias], 1), unit_block)
            y = torch.addcmul(ab[:, 1].reshape(per_unit), d, ab[:, 0].reshape(per_unit))
            self._update_running_stats(bns, mean.detach(), var.detach(), count)
        else:
            a = weight * torch.rsqrt(torch.stack([bn.running_var for bn in bns]) + eps)
            c = bias - torch.stack([bn.running_mean for bn in bns]) * a
            ac = self._units(torch.stack([a, c], 1), unit_block)  # (U, 2, C')
            y = torch.addcmul(ac[:, 1].reshape(per_unit), x, ac[:, 0].reshape(per_unit))
        y = torch.relu(y)
        if zero_invalid:
            y = y * mask
        return y.reshape(nb_samples, -1, h, length)

    @staticmethod
    def _blocks(per_unit: Tensor, unit_block: Optional[Tensor], nb_blocks: int) -> Tensor:
        """``(U, C')`` sums per unit -> ``(B, C')`` sums per block."""
        if unit_block is None:
            return per_unit
        return per_unit.new_zeros(nb_blocks, per_unit.shape[1]).index_add(0, unit_block, per_unit)

    @staticmethod
    @torch.no_grad()
    def _update_running_stats(bns: List[nn.BatchNorm2d], mean: Tensor, var: Tensor, count: Tensor) -> None:
        """What ``nn.BatchNorm2d`` does in training: count the batch, then ``running = (1 - m) running + m batch``
        with the unbiased variance (``m = 1 / num_batches_tracked`` when the momentum is None)."""
        unbiased = var * (count / (count - 1))
        torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
        momenta = [bn.momentum for bn in bns]
        means, variances = list(mean.unbind(0)), list(unbiased.unbind(0))
        running_means = [bn.running_mean for bn in bns]
        running_vars = [bn.running_var for bn in bns]
        if all(m is not None for m in momenta) and len(set(momenta)) == 1:
            m = float(momenta[0])
            torch._foreach_mul_(running_means, 1.0 - m)
            torch._foreach_add_(running_means, means, alpha=m)
            torch._foreach_mul_(running_vars, 1.0 - m)
            torch._foreach_add_(running_vars, variances, alpha=m)
            return
        for bn, rm, rv, bm, bv in zip(bns, running_means, running_vars, means, variances):
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            rm.mul_(1.0 - m).add_(bm, alpha=m)
            rv.mul_(1.0 - m).add_(bv, alpha=m)
