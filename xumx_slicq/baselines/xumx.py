"""CrossNet-Open-Unmix (X-UMX) baseline: the UMX target stacks joined by two parameter-free bridges.

For targets ``i = 1..S``::

    h_i   = encode_i(x)                         (after the first Linear + BN + tanh)
    h     = mean_i h_i                          bridge 1: every LSTM reads the average
    c_i   = concat[h_i, recur_i(h)]             skip connection with the target's own h_i
    c     = mean_i c_i                          bridge 2: every decoder reads the average
    m_i   = decode_i(c)

The bridges add no parameters: each stack still holds 8,893,348 (hidden 512, stereo). The combination
loss over the 14 target subsets in both domains lives in ``losses.py``.
"""

from __future__ import annotations

import torch

from .umx import UMX

__all__ = ["XUMX"]


class XUMX(UMX):
    """X-UMX: :class:`UMX` with the two averaging bridges. Same constructor, config and shapes.

    ``forward``: magnitude ``(nb_samples, nb_channels, nb_bins, nb_frames)`` ->
    ``(nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)``.
    """

    arch = "xumx"

    def _masks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bridged stacks. ``x``: ``(nb_frames, nb_samples, nb_channels, max_bin)`` ->
        one ``(nb_frames, nb_samples, nb_channels, nb_bins)`` mask per target."""
        stacks = list(self.stacks.values())
        encoded = [stack.encode(x) for stack in stacks]
        # bridge 1: average over targets, (T, B, hidden)
        shared = torch.stack(encoded, dim=0).mean(0)
        # skip connection per target: (T, B, hidden) ++ (T, B, hidden) -> (T, B, 2*hidden)
        skips = [torch.cat([h, stack.recur(shared)], dim=-1) for h, stack in zip(encoded, stacks)]
        # bridge 2: average over targets, (T, B, 2*hidden)
        joint = torch.stack(skips, dim=0).mean(0)
        return [stack.decode(joint) for stack in stacks]
