"""Tests of xumx_slicq.pruning: keeping every channel is the identity, removing channels that are exactly zero
after their ReLU changes nothing, the most important channels are the ones kept, and bad widths are refused."""

import pytest
import torch

from tests.helpers import randomise_batchnorm
from xumx_slicq.model import XUMXSliCQ
from xumx_slicq.pruning import channel_importance, keep_channels, prune_hidden_channels
from xumx_slicq.transforms import SliCQT

SLICQ = SliCQT(fbins=12).config


def model_of(hidden, seed=0):
    torch.manual_seed(seed)
    return randomise_batchnorm(XUMXSliCQ(slicq_config=SLICQ, hidden_channels=hidden))


def magnitudes(model, seed=1, nb_slices=3):
    """Random mixture magnitude blocks ``(1, nb_channels, nb_bins_b, nb_slices, T_b)`` for ``model``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 2, b.nb_bins, nb_slices, b.T, generator=g) for b in model.blocks]


def outputs(model, x):
    with torch.no_grad():
        return model(x)


def assert_same_outputs(a, b, x):
    for ya, yb in zip(outputs(a, x), outputs(b, x)):
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)


def test_keeping_every_channel_is_the_identity():
    model = model_of((6, 8))
    same = prune_hidden_channels(model, (6, 8))
    assert same is not model and same.hidden_channels == (6, 8) and not same.training
    assert_same_outputs(model, same, magnitudes(model))


#: the three hidden activations of a BlockNet: (BatchNorm index, next layer index, axis of the next layer's weight
#: that reads the activation's channels: 1 for the conv, 0 for the transposed convs), and which width they have
HIDDEN = ((1, 3, 1, 0), (4, 6, 0, 1), (7, 9, 0, 0))


def removed_channels(model, kept, seed):
    """Per block and hidden activation, a random set of ``h - k`` channels of every target to make removable:
    yields ``(net, bn_index, next_index, axis, target, width, channel)``."""
    g = torch.Generator().manual_seed(seed)
    for net in model.nets:
        for bn_i, next_i, axis, which in HIDDEN:
            h, k = model.hidden_channels[which], kept[which]
            for j in range(net.nb_targets):
                for c in torch.randperm(h, generator=g)[: h - k].tolist():
                    yield net, bn_i, next_i, axis, j, h, c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removing_dead_channels_changes_nothing(seed):
    """Hidden channels whose BatchNorm scale and shift are both zero output exactly zero after the ReLU: a model
    with only ``k`` live channels per layer and target equals its pruning to ``k`` channels."""
    kept = (3, 5)
    model = model_of((6, 8), seed)
    with torch.no_grad():
        for net, bn_i, _, _, j, h, c in removed_channels(model, kept, 100 + seed):
            net.layers[bn_i].weight[j * h + c] = 0.0
            net.layers[bn_i].bias[j * h + c] = 0.0
    small = prune_hidden_channels(model, kept)
    assert small.hidden_channels == kept
    assert small.nets[0].layers[0].out_channels == small.nets[0].nb_targets * kept[0]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert_same_outputs(model, small, magnitudes(model, seed))


def test_a_pruned_model_differs_when_live_channels_go():
    """The identity above is not vacuous: pruning live channels changes the output."""
    model = model_of((6, 8))
    small = prune_hidden_channels(model, (3, 5))
    x = magnitudes(model)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(outputs(model, x), outputs(small, x)))


def test_importance_reads_the_next_layers_inputs():
    """A conv's input channel j of group k is column j of that group's rows; a transposed conv's is row j."""
    bn = torch.nn.BatchNorm2d(2 * 3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 1.0, 1.0, 1.0]))
    conv_w = torch.zeros(2 * 4, 3, 1, 2)  # Conv2d (groups * h_out, h, kf, kt)
    conv_w[4:, 1] = 1.0  # group 1 reads only its channel 1 (4 outputs x 2 taps of 1.0: norm sqrt(8))
    imp = channel_importance(bn, conv_w, nb_groups=2, in_axis=1)
    torch.testing.assert_close(imp, torch.tensor([[0.0, 0.0, 0.0], [0.0, 8**0.5, 0.0]]))
    deconv_w = torch.zeros(2 * 3, 4, 1, 2)  # ConvTranspose2d (groups * h, h_out, kf, kt)
    deconv_w[0] = 1.0  # channel 0 of group 0: norm sqrt(8)
    imp = channel_importance(bn, deconv_w, nb_groups=2, in_axis=0)
    torch.testing.assert_close(imp, torch.tensor([[8**0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_keep_channels_picks_the_largest_in_ascending_order():
    imp = torch.tensor([[0.1, 0.9, 0.5, 0.7], [1.0, 1.0, 0.0, 1.0]])
    assert keep_channels(imp, 2).tolist() == [[1, 3], [0, 1]]  # ties go to the lower index
    assert keep_channels(imp, 4).tolist() == [[0, 1, 2, 3]] * 2
    with pytest.raises(ValueError, match="cannot keep 5 of 4"):
        keep_channels(imp, 5)


def test_wider_or_empty_widths_are_refused():
    model = model_of((6, 8))
    for bad in ((7, 8), (6, 9), (0, 4)):
        with pytest.raises(ValueError, match="do not fit"):
            prune_hidden_channels(model, bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_removing_unread_channels_changes_nothing(seed):
    """Hidden channels that the next layer reads with all-zero weights contribute nothing, however large their
    BatchNorm scale: they are the ones pruned (the importance reads the right axis of each next layer)."""
    kept = (4, 5)
    model = model_of((6, 8), seed)
    with torch.no_grad():
        for net in model.nets:
            for bn_i, _, _, _ in HIDDEN:
                net.layers[bn_i].weight.mul_(0.1)  # live channels: small scales
        for net, bn_i, next_i, axis, j, h, c in removed_channels(model, kept, 200 + seed):
            net.layers[bn_i].weight[j * h + c] = 10.0  # unread channels: large scales
            w = net.layers[next_i].weight
            if axis == 1:  # conv (targets * h_out, h, kf, kt): column c of target j's rows
                rows = w.shape[0] // net.nb_targets
                w[j * rows : (j + 1) * rows, c] = 0.0
            else:  # transposed conv (targets * h, h_out, kf, kt): row c of target j
                w[j * h + c] = 0.0
    assert_same_outputs(model, prune_hidden_channels(model, kept), magnitudes(model, seed))
