"""Tests of the xumx-sliCQ v1 model (xumx_slicq/model.py): sizes, shapes, masks, configuration, input scaler."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from xumx_slicq.model import XUMXSliCQ, compute_block_stats, init_input_scaler, kernel_for_block
from xumx_slicq.transforms import SliCQT, overlap_add

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGETS = ("vocals", "drums", "bass", "other")
# tiny hidden layers: the same kernel rules and sizes as the default model, a fraction of the compute
TINY = dict(hidden_channels=(3, 4))
OTHER_CONFIGS = [
    dict(scale="mel", fbins=60, fmin=40.0, fmax=22050.0),
    dict(scale="cqlog", fbins=48, fmin=80.0, fmax=16000.0),
    dict(scale="lin", fbins=40, fmin=100.0, fmax=22050.0),
    dict(scale="vqlog", fbins=100, fmin=30.0, fmax=22050.0, sllen=8192),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return XUMXSliCQ()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return XUMXSliCQ(**TINY)


def mixture_magnitudes(slicqt, nb_samples, length, seed=0):
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(nb_samples, 2, length, generator=gen) * 0.1
    return [b.abs() for b in slicqt(audio)]


def expected_conv_bn_params(model):
    """Conv/BN parameters counted from the architecture rules, block by block (independent of the code)."""
    c, (h1, h2) = model.nb_channels, model.hidden_channels
    total = 0
    for blk, learn in zip(model.blocks, model.learned):
        if not learn:
            continue
        kf = 1 if blk.nb_bins < 10 else (3 if blk.nb_bins < 20 else 5)
        kt = 7 if blk.T <= 100 else 13
        convs = (c * h1 + h1 * h2 + h2 * h1 + h1 * c) * kf * kt  # four main (transposed) convolutions, no bias
        bns = 2 * (h1 + h2 + h1 + c)  # weight + bias of four BatchNorms
        final = c * c * 3 + c  # ConvTranspose2d(c -> c, (1, 3)) with bias
        total += convs + bns + final
    return total * model.nb_targets


# ---------------------------------------------------------------------------------------------- sizes
def test_parameter_count_default(model):
    counts = model.parameter_counts()
    assert counts["conv_bn"] == 6_669_912
    assert counts["conv_bn"] == expected_conv_bn_params(model)
    assert counts["input_scaler"] == 1_944 == model.learned_bins() * 2 * 4
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    # grouped layers hold exactly one equal share per target
    assert counts["per_target"] * 4 == counts["total"]


def test_block_layout_default(model, slicqt):
    assert model.targets == TARGETS
    assert len(model.blocks) == 70 and model.nb_learned_blocks == 51 and sum(model.learned) == 51
    assert model.learned_bins() == 243
    freqs = slicqt.frequencies
    for blk, learn in zip(model.blocks, model.learned):
        assert learn == (freqs[blk.first_bin].item() < 16000.0)
    # learned blocks come first, then the passed-through ones (monotone frequencies)
    assert model.learned == [True] * 51 + [False] * 19
    assert model.blocks[51].first_bin == 243


def test_kernel_rules():
    assert kernel_for_block(1, 28) == (1, 7)
    assert kernel_for_block(9, 100) == (1, 7)
    assert kernel_for_block(10, 101) == (3, 13)
    assert kernel_for_block(19, 16) == (3, 7)
    assert kernel_for_block(20, 16) == (5, 7)
    assert kernel_for_block(86, 292) == (5, 13)
    # custom rules that would not fit the bins are reduced: 4 bins, kernel 5 -> 2 (4 - 2*1 = 2 bins left)
    assert kernel_for_block(4, 16, freq_kernel_thresholds=(2,), freq_kernels=(1, 5)) == (2, 7)
    with pytest.raises(ValueError, match="model.py"):
        kernel_for_block(4, 16, freq_kernel_thresholds=(2,), freq_kernels=(1,))


def test_parameter_count_follows_arguments():
    m = XUMXSliCQ(targets=("vocals", "accompaniment"), hidden_channels=(5, 7), bandwidth=8000.0)
    counts = m.parameter_counts()
    assert counts["conv_bn"] == expected_conv_bn_params(m)
    assert counts["input_scaler"] == m.learned_bins() * 2 * 2
    assert m.nb_learned_blocks < 51


# ---------------------------------------------------------------------------------------------- shapes
def _check_forward_backward(model, slicqt, nb_samples, length):
    mags = mixture_magnitudes(slicqt, nb_samples, length)
    model.train()
    model.zero_grad(set_to_none=True)
    estimates, masks = model(mags, return_masks=True)
    assert len(estimates) == len(masks) == len(mags)
    for x, e, m in zip(mags, estimates, masks):
        expected = (x.shape[0], model.nb_targets, *x.shape[1:])
        assert tuple(e.shape) == expected and tuple(m.shape) == expected
        assert torch.isfinite(e).all()
    sum(e.square().mean() for e in estimates).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("nb_samples", [1, 3])
@pytest.mark.parametrize("seconds", [1, 6])
def test_forward_backward_shapes_all_sizes(tiny, slicqt, nb_samples, seconds):
    # default kernels and sizes, tiny hidden layers (the shapes depend only on the kernels)
    _check_forward_backward(tiny, slicqt, nb_samples, seconds * 44100)


@pytest.mark.parametrize("nb_samples,seconds", [(3, 1), (1, 6)])
def test_forward_backward_shapes_default_model(model, slicqt, nb_samples, seconds):
    _check_forward_backward(model, slicqt, nb_samples, seconds * 44100)


@pytest.mark.parametrize("length", [1, 1000, 9030, 9031, 13546, 22050])
def test_every_block_output_size_short_inputs(tiny, slicqt, length):
    # inputs of <= 9030 samples have 2 slices: the 16-coefficient block's view (24 frames) is shorter than
    # the encoder's receptive field (25 frames) and is padded internally
    mags = mixture_magnitudes(slicqt, 2, length)
    with torch.no_grad():
        masks = tiny.masks(mags)
    for x, m in zip(mags, masks):
        assert tuple(m.shape) == (2, 4, *x.shape[1:])


@pytest.mark.parametrize("config", OTHER_CONFIGS, ids=lambda c: c["scale"])
def test_other_transform_configurations(config):
    torch.manual_seed(0)
    m = XUMXSliCQ(slicq_config=config, **TINY)
    t = SliCQT(**config)
    assert m.slicq_config == t.config
    for length in (1, 30_000):
        mags = mixture_magnitudes(t, 1, length)
        est = m(mags)
        for x, e in zip(mags, est):
            assert tuple(e.shape) == (1, 4, *x.shape[1:])
        sum(e.mean() for e in est).backward()


def test_blocknet_intermediate_sizes(model):
    # every learned block of Bark-262: the transposed convolutions restore the encoder's input size exactly
    for net, blk in zip(model.nets, [b for b, l in zip(model.blocks, model.learned) if l]):
        x = torch.zeros(1, 4 * 2, blk.nb_bins, 100)
        sizes = []
        for layer in net.layers:
            x = layer(x)
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                sizes.append(tuple(x.shape[-2:]))
        kf, kt = net.kernel
        shrink_f, shrink_t = kf - 1, 2 * (kt - 1)
        assert sizes == [
            (blk.nb_bins - shrink_f, 100 - shrink_t),
            (blk.nb_bins - 2 * shrink_f, 100 - 2 * shrink_t),
            (blk.nb_bins - shrink_f, 100 - shrink_t),
            (blk.nb_bins, 100),
        ]
        assert min(s[0] for s in sizes) >= 1
        assert tuple(net.final(x).shape[-2:]) == (blk.nb_bins, 201)


# ---------------------------------------------------------------------------------------------- masks
def test_masks_in_unit_interval_and_estimates(tiny, slicqt):
    mags = mixture_magnitudes(slicqt, 2, 44100, seed=3)
    tiny.eval()
    with torch.no_grad():
        estimates, masks = tiny(mags, return_masks=True)
        masks_only = tiny.masks(mags)
    for x, e, m, m2, learn in zip(mags, estimates, masks, masks_only, tiny.learned):
        assert m.min() >= 0 and m.max() <= 1
        assert torch.equal(m, m2)
        torch.testing.assert_close(e, m * x.unsqueeze(1))
        if learn:
            # a real mask, not a constant
            assert m.std() > 0
        else:
            # passed-through blocks: mask 1, every target's estimate is the mixture magnitude
            assert torch.equal(m, torch.ones_like(m))
            for k in range(4):
                assert torch.equal(e[:, k], x)


def test_targets_are_independent(slicqt):
    # grouped convolutions must not mix targets: perturbing one target's weights changes only its masks
    torch.manual_seed(1)
    m = XUMXSliCQ(**TINY).eval()
    mags = mixture_magnitudes(slicqt, 1, 20000)
    with torch.no_grad():
        before = m.masks(mags)
        net = m.nets[1]
        # first conv's weight rows of target 2 (output channels 2*h1 .. 3*h1)
        h1 = m.hidden_channels[0]
        net.layers[0].weight[2 * h1 : 3 * h1] += 0.5
        after = m.masks(mags)
    changed = (before[1] - after[1]).abs().amax(dim=(0, 2, 3, 4, 5))
    assert changed[2] > 0 and changed[[0, 1, 3]].max() == 0


def test_input_validation(tiny, slicqt):
    mags = mixture_magnitudes(slicqt, 1, 5000)
    with pytest.raises(ValueError, match="70 sliCQ blocks"):
        tiny(mags[:-1])
    with pytest.raises(TypeError, match="magnitudes"):
        tiny([m.to(torch.complex64) for m in mags])
    bad = list(mags)
    bad[3] = bad[3][:, :1]
    with pytest.raises(ValueError, match="first bin 101"):
        tiny(bad)


# ---------------------------------------------------------------------------------------------- config
def test_get_config_rebuilds_identical_model(slicqt):
    torch.manual_seed(2)
    m = XUMXSliCQ(targets=("vocals", "drums", "bass", "other"), hidden_channels=(4, 6), bandwidth=12000.0,
                  time_kernels=(5, 9))
    # non-trivial weights and BatchNorm statistics
    mags = mixture_magnitudes(slicqt, 2, 30000, seed=5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        m.train()
        m(mags)
    cfg = json.loads(json.dumps(m.get_config()))  # must be JSON-safe
    rebuilt = XUMXSliCQ(**cfg)
    rebuilt.load_state_dict(m.state_dict(), strict=True)
    assert rebuilt.get_config() == m.get_config()
    m.eval()
    rebuilt.eval()
    with torch.no_grad():
        for a, b in zip(m(mags), rebuilt(mags)):
            assert torch.equal(a, b)
    # a default model has a different layout: loading must fail loudly
    with pytest.raises(RuntimeError):
        XUMXSliCQ(**TINY).load_state_dict(m.state_dict(), strict=True)


def test_config_lists_every_constructor_argument():
    import inspect

    params = set(inspect.signature(XUMXSliCQ.__init__).parameters) - {"self"}
    assert set(XUMXSliCQ().get_config()) == params


# ---------------------------------------------------------------------------------------------- input scaler
def test_init_input_scaler_matches_direct_statistics(slicqt):
    torch.manual_seed(0)
    m = XUMXSliCQ(**TINY)
    items = [mixture_magnitudes(slicqt, 2, 20000, seed=s) for s in range(4)]
    used = init_input_scaler(m, iter(items), max_items=3, progress=False)
    assert used == 3
    learned = [b for b, l in enumerate(m.learned) if l]
    means, stds = [], []
    for b in learned:
        # per-bin statistics of the overlap-add views of the first 3 items, pooled over samples/channels/frames
        views = torch.cat([overlap_add(it[b].double()).transpose(0, 2).reshape(it[b].shape[2], -1)
                           for it in items[:3]], dim=1)  # (nb_bins_b, N)
        means.append(views.mean(1))
        stds.append(views.std(1, unbiased=False))
    # the std floor is global: 1e-4 x the largest std of all learned bins
    floor = 1e-4 * torch.cat(stds).max()
    for net, mean, std in zip(m.nets, means, stds):
        for k in range(4):
            torch.testing.assert_close(net.input_mean[k].double(), mean, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(1.0 / net.input_scale[k].double(), std.clamp_min(floor), rtol=1e-4, atol=0)
    # the 4th item was not read: statistics over all 4 differ
    m4 = XUMXSliCQ(**TINY)
    init_input_scaler(m4, items, progress=False)
    assert not torch.allclose(m4.nets[0].input_mean, m.nets[0].input_mean)


def test_init_input_scaler_accepts_audio_and_datasets(slicqt):
    torch.manual_seed(0)
    audio = [torch.randn(2, 15000) * 0.1 for _ in range(3)]
    ref = XUMXSliCQ(**TINY)
    init_input_scaler(ref, [[b.abs() for b in slicqt(a[None])] for a in audio], progress=False)
    for data in (audio, [(a, torch.zeros(4, 2, 15000)) for a in audio]):
        m = XUMXSliCQ(**TINY)
        assert init_input_scaler(m, data, slicqt=slicqt, progress=False) == 3
        for a, b in zip(m.nets, ref.nets):
            torch.testing.assert_close(a.input_mean, b.input_mean)
            torch.testing.assert_close(a.input_scale, b.input_scale)
    with pytest.raises(TypeError, match="init_input_scaler"):
        init_input_scaler(XUMXSliCQ(**TINY), ["not a tensor"], progress=False)


def test_block_stats_constant_input_floors_std(slicqt):
    # constant magnitudes: std 0 everywhere except where overlap-add doubles the edges; stats are finite
    blocks = [torch.full(s, 2.0) for s in slicqt.block_shapes(20000)]
    means, stds, n = compute_block_stats([blocks], slicqt.blocks, progress=False)
    assert n == 1 and all(torch.isfinite(m).all() and torch.isfinite(s).all() for m, s in zip(means, stds))
    m = XUMXSliCQ(**TINY)
    init_input_scaler(m, [blocks], progress=False)
    assert all(torch.isfinite(net.input_scale).all() for net in m.nets)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_summary():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "model-summary", "--summary", "--depth", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "6,669,912" in proc.stdout and "1,944" in proc.stdout and "Total params" in proc.stdout
    assert "learned: 51" in proc.stdout


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "benchmark", "model-summary", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout


@pytest.mark.parametrize("groups,kernel,dilation", [(1, (1, 7), (1, 2)), (4, (5, 13), (1, 2)), (4, (3, 7), (2, 1))])
def test_transposed_conv_as_conv_equals_conv_transpose(groups, kernel, dilation):
    from xumx_slicq.model import transposed_conv_as_conv

    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(8 * groups // groups * groups, 4 * groups, kernel, dilation=dilation,
                                     groups=groups, bias=groups == 1)
    x = torch.randn(2, layer.in_channels, 6, 30)
    torch.testing.assert_close(transposed_conv_as_conv(x, layer), layer(x), rtol=1e-5, atol=1e-5)
    strided = torch.nn.ConvTranspose2d(4, 4, (1, 3), stride=(1, 2), groups=2)
    y = torch.randn(1, 4, 3, 10)
    torch.testing.assert_close(transposed_conv_as_conv(y, strided), strided(y))


def test_inference_and_training_paths_agree():
    """Under no_grad the transposed convolutions run as padded convolutions: same masks as with autograd."""
    from xumx_slicq.transforms import SliCQT

    torch.manual_seed(1)
    model = XUMXSliCQ(hidden_channels=(4, 6)).eval()
    mags = [b.abs() for b in SliCQT()(torch.randn(1, 2, 44100))]
    with torch.no_grad():
        fast = model(mags)
    slow = model(mags)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_training_path_channels_last_same_gradients():
    """The training path runs the layers on a channels-last input: same outputs and gradients as the layers on
    the plain (contiguous) input."""
    import copy

    from xumx_slicq.model import BlockNet, overlap_add

    torch.manual_seed(2)
    net = BlockNet(nb_bins=12, nb_targets=4, hidden_channels=(4, 6), kernel=(3, 7)).train()
    ref = copy.deepcopy(net)
    mag = torch.rand(3, 2, 12, 4, 20)
    out = net(mag)
    # the reference: the same steps as BlockNet.forward, contiguous memory throughout
    x = overlap_add(mag)
    x = (x.unsqueeze(1) - ref.input_mean[:, None, :, None]) * ref.input_scale[:, None, :, None]
    x = ref.layers(x.reshape(3, 8, 12, x.shape[-1]).contiguous())
    assert x.is_contiguous()
    expected = torch.sigmoid(ref.final(x))[..., : 4 * 20].reshape(out.shape)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    weights = torch.rand_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for (name, a), b in zip(net.named_parameters(), ref.parameters()):
        scale = float(b.grad.abs().max())  # float32 sums in another order: error relative to the gradient's scale
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{name}: {m}")
