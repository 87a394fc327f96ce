"""Structured pruning: a trained xumx-sliCQ network narrowed to smaller hidden widths.

A network with hidden widths ``(h1, h2)`` (e.g. the shipped 25/55) gives the starting weights of a narrower
one ``(k1, k2)`` (e.g. 16/32, the width that runs faster than UMX; docs/run2.md): in every block and for every
target, the ``k`` most important channels of each hidden layer are kept and the others removed, with the
convolutions and BatchNorms around them sliced to match. The narrow network then fine-tunes from there instead
of from random weights (``python -m train --init-from MODEL_DIR``).

Each :class:`~xumx_slicq.model.BlockNet` has three hidden activations, each chosen independently per target
(group): the outputs of ``layers[0]`` (``h1``), ``layers[3]`` (``h2``) and ``layers[6]`` (``h1``), each followed
by a BatchNorm and a ReLU. A channel's importance is ``|gamma| * ||w_next||``: the BatchNorm scale that sets how
much of it passes, times the norm of the weights that read it in the next layer. A channel whose BatchNorm scale
and shift are both zero is exactly zero after the ReLU, so removing it leaves the output unchanged
(``tests/test_pruning.py``). Input scaling, the last (transposed) convolution and the de-overlap layer are
copied as they are.
"""
from typing import Sequence

import torch
from torch import Tensor, nn

from .model import BlockNet, XUMXSliCQ

__all__ = ["channel_importance", "keep_channels", "prune_hidden_channels"]


def channel_importance(bn: nn.BatchNorm2d, next_weight: Tensor, nb_groups: int, in_axis: int) -> Tensor:
    """Importance of each channel of a hidden activation: ``|gamma| * ||weights reading it||``.

    Args:
        bn: the BatchNorm after the layer that produces the activation, ``nb_groups * h`` channels.
        next_weight: the weight of the next (transposed) convolution, which reads the activation.
            ``Conv2d``: ``(nb_groups * h_out, h, kf, kt)`` (``in_axis=1``); ``ConvTranspose2d``:
            ``(nb_groups * h, h_out, kf, kt)`` (``in_axis=0``).
        nb_groups: groups of the convolutions (targets).
        in_axis: the axis of ``next_weight`` that indexes the activation's channels (within a group for 1).
    Returns:
        ``(nb_groups, h)`` importances, one row per group.
    """
    h = bn.num_features // nb_groups
    w = next_weight.detach()
    if in_axis == 0:  # transposed convolution: one row per input channel
        norms = w.reshape(nb_groups * h, -1).norm(dim=1)
    else:  # convolution: input channel j of group k is column j of the group's output rows
        # (nb_groups * h_out, h, kf, kt) -> (nb_groups, h_out, h, kf * kt), norm over outputs and taps
        norms = w.reshape(nb_groups, w.shape[0] // nb_groups, h, -1).pow(2).sum(dim=(1, 3)).sqrt().reshape(-1)
    return (bn.weight.detach().abs() * norms).reshape(nb_groups, h)


def keep_channels(importance: Tensor, keep: int) -> Tensor:
    """Indices (within each group, ascending) of the ``keep`` most important channels.

    Args:
        importance: ``(nb_groups, h)``.
        keep: channels kept per group, ``1 <= keep <= h``.
    Returns:
        ``(nb_groups, keep)`` long tensor; ties go to the lower index.
    """
    nb_groups, h = importance.shape
    if not 1 <= keep <= h:
        raise ValueError(f"pruning.py: cannot keep {keep} of {h} channels per group")
    # a stable descending sort: equal importances keep their order, so the lower index wins
    order = torch.sort(importance, dim=1, descending=True, stable=True).indices
    return order[:, :keep].sort(dim=1).values


def _flat(idx: Tensor, h: int) -> Tensor:
    """``(nb_groups, keep)`` within-group indices -> flat channel indices of ``nb_groups * h`` channels."""
    offsets = torch.arange(idx.shape[0])[:, None] * h  # (nb_groups, 1)
    return (idx + offsets).reshape(-1)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, flat: Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[flat])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _grouped(weight: Tensor, nb_groups: int) -> Tensor:
    """``(nb_groups * a, b, kf, kt)`` -> ``(nb_groups, a, b, kf, kt)``: the group axis split off the first."""
    return weight.reshape(nb_groups, weight.shape[0] // nb_groups, *weight.shape[1:])


def _select(weight: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Per group ``k``: ``weight[k][rows[k]][:, cols[k]]``; ``weight`` ``(nb_groups, a, b, kf, kt)`` ->
    ``(nb_groups * len(rows[k]), len(cols[k]), kf, kt)``."""
    picked = torch.stack([weight[k][rows[k]][:, cols[k]] for k in range(weight.shape[0])])
    return picked.reshape(-1, *picked.shape[2:])  # groups back into the first axis, group-major


@torch.no_grad()
def prune_block(big: BlockNet, small: BlockNet) -> None:
    """Copy ``big``'s weights into the narrower ``small`` (same block, kernel and targets), keeping the most
    important hidden channels of each target; ``small`` is changed in place."""
    g = big.nb_targets
    h1, h2 = big.layers[1].num_features // g, big.layers[4].num_features // g
    k1, k2 = small.layers[1].num_features // g, small.layers[4].num_features // g
    L, S = big.layers, small.layers
    # the three hidden activations: after layers[0] (read by the conv layers[3], inputs on axis 1),
    # after layers[3] (read by the transposed conv layers[6], inputs on axis 0), after layers[6] (layers[9])
    a = keep_channels(channel_importance(L[1], L[3].weight, g, in_axis=1), k1)  # (g, k1)
    b = keep_channels(channel_importance(L[4], L[6].weight, g, in_axis=0), k2)  # (g, k2)
    c = keep_channels(channel_importance(L[7], L[9].weight, g, in_axis=0), k1)  # (g, k1)
    fa, fb, fc = _flat(a, h1), _flat(b, h2), _flat(c, h1)
    S[0].weight.copy_(L[0].weight[fa])  # (g * h1, nb_channels, kf, kt): output rows
    _copy_bn(S[1], L[1], fa)
    S[3].weight.copy_(_select(_grouped(L[3].weight, g), b, a))  # conv (g * h2, h1, ...): rows b, columns a
    _copy_bn(S[4], L[4], fb)
    S[6].weight.copy_(_select(_grouped(L[6].weight, g), b, c))  # transposed (g * h2, h1, ...): inputs b, outputs c
    _copy_bn(S[7], L[7], fc)
    S[9].weight.copy_(L[9].weight[fc])  # transposed (g * h1, nb_channels, ...): input rows
    _copy_bn(S[10], L[10], torch.arange(S[10].num_features))
    small.final.load_state_dict(big.final.state_dict())
    small.input_mean.copy_(big.input_mean)
    small.input_scale.copy_(big.input_scale)


def prune_hidden_channels(model: XUMXSliCQ, hidden_channels: Sequence[int]) -> XUMXSliCQ:
    """A new network with hidden widths ``hidden_channels`` whose weights are ``model``'s most important channels.

    Args:
        model: a trained network, hidden widths ``(h1, h2)``.
        hidden_channels: ``(k1, k2)`` with ``1 <= k1 <= h1`` and ``1 <= k2 <= h2``.
    Returns:
        an ``XUMXSliCQ`` with ``model``'s configuration but ``hidden_channels``, in ``model``'s training mode.
        Keeping every channel gives the same network (same outputs).
    """
    h1, h2 = model.hidden_channels
    k1, k2 = (int(h) for h in hidden_channels)
    if not (1 <= k1 <= h1 and 1 <= k2 <= h2):
        raise ValueError(f"pruning.py: hidden widths {k1}/{k2} do not fit inside the model's {h1}/{h2}")
    config = model.get_config()
    config["hidden_channels"] = [k1, k2]
    small = XUMXSliCQ(**config).to(next(model.parameters()).device)
    for big_net, small_net in zip(model.nets, small.nets):
        prune_block(big_net, small_net)
    return small.train(model.training)
