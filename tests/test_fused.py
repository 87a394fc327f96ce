"""Tests of the fused execution of the per-block networks (xumx_slicq/fused.py, XUMXSliCQ.set_fused)."""

import copy
import pathlib

import pytest
import torch

from xumx_slicq.fused import FusedBlocks, plan_buckets
from xumx_slicq.model import XUMXSliCQ
from xumx_slicq.transforms import SliCQT

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-5
# non-default transforms and kernels: mel and constant-Q layouts, kernel rules that make kf > 1 buckets need bin
# padding (several blocks of 3 or 5 bins with different sizes), other hidden channels
OTHER = [
    dict(slicq_config=dict(scale="mel", fbins=60, fmin=40.0, fmax=22050.0), hidden_channels=(3, 5),
         freq_kernel_thresholds=(3, 6), bandwidth=22050.0),
    dict(slicq_config=dict(scale="cqlog", fbins=48, fmin=80.0, fmax=16000.0), hidden_channels=(4, 3),
         freq_kernel_thresholds=(2, 40), time_kernels=(5, 9), time_kernel_thresholds=(60,)),
]


def randomise(model, seed=0):
    """Non-trivial input scaler, BatchNorm affine parameters and running statistics (the defaults are 0/1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in model.nets:
            net.input_mean.copy_(0.1 * torch.randn(net.input_mean.shape, generator=gen))
            net.input_scale.copy_(0.5 + torch.rand(net.input_scale.shape, generator=gen))
            for layer in net.layers:
                if isinstance(layer, torch.nn.BatchNorm2d):
                    for t, lo in ((layer.weight, 0.5), (layer.running_var, 0.5)):
                        t.copy_(lo + torch.rand(t.shape, generator=gen))
                    for t in (layer.bias, layer.running_mean):
                        t.copy_(0.2 * torch.randn(t.shape, generator=gen))
    return model


def magnitudes(model, nb_samples, length, seed=0):
    gen = torch.Generator().manual_seed(seed)
    audio = 0.1 * torch.randn(nb_samples, model.nb_channels, length, generator=gen)
    return [b.abs() for b in SliCQT(**model.slicq_config)(audio)]


def rel(a, b):
    """max |a - b| / max |b| over tensor lists."""
    num = max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b))
    return num / max(float(y.detach().double().abs().max()) for y in b)


def pair(seed=0, max_padding=None, **kwargs):
    torch.manual_seed(seed)
    ref = randomise(XUMXSliCQ(**kwargs), seed)
    return ref, copy.deepcopy(ref).set_fused(True, max_padding)


def check_eval(ref, fused, mags):
    ref.eval(), fused.eval()
    with torch.no_grad():
        est_r, m_r = ref(mags, return_masks=True)
        est_f, m_f = fused(mags, return_masks=True)
        masks_only = fused.masks(mags)
    assert rel(m_f, m_r) <= TOL and rel(est_f, est_r) <= TOL and rel(masks_only, m_r) <= TOL
    assert all(a.shape == b.shape for a, b in zip(m_f, m_r))


def train_step(model, mags):
    """One training forward + backward: estimates, every parameter's gradient, every buffer after the step."""
    model.train()
    model.zero_grad(set_to_none=True)
    est = model(mags)
    weights = [torch.linspace(0.5, 1.5, e.numel()).reshape(e.shape) for e in est]  # a loss that sees every value
    sum((w * e * e).mean() for w, e in zip(weights, est)).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    return [e.detach() for e in est], grads, {k: b.detach().clone() for k, b in model.named_buffers()}


def check_train(ref, fused, mags):
    """Training: float32 estimates against the per-block model; BatchNorm buffers and gradients in float64 (float32
    gradients of either execution stray up to ~1e-2 from the float64 ones on ill-conditioned blocks, so a float32
    comparison would measure rounding, not the fused layout)."""
    ref64, fused64 = copy.deepcopy(ref).double(), copy.deepcopy(fused).double()
    est_r, _, _ = train_step(ref, mags)
    est_f, _, _ = train_step(fused, mags)
    assert rel(est_f, est_r) <= TOL
    # BatchNorm buffers and gradients in float64: the per-block training path runs on channels-last memory, the
    # fused one does not, so float32 batch means of near-cancelling channels differ by rounding (~1e-5 relative)
    mags64 = [m.double() for m in mags]
    _, g_r, buf_r = train_step(ref64, mags64)
    _, g_f, buf_f = train_step(fused64, mags64)
    assert set(buf_f) == set(buf_r)
    for k in buf_r:
        assert torch.equal(buf_f[k], buf_r[k]) if "num_batches" in k else rel([buf_f[k]], [buf_r[k]]) <= TOL, k
    top = max(float(g.abs().max()) for g in g_r.values())
    for k in g_r:
        # relative to the parameter's own largest gradient; gradients that are zero up to rounding (input_mean
        # of some blocks: ~1e-19) are compared with the model's largest gradient instead
        scale = max(float(g_r[k].abs().max()), 1e-9 * top)
        assert float((g_f[k] - g_r[k]).abs().max()) <= TOL * scale, k


# -------------------------------------------------------------------------------------------------- the plan
def test_buckets_cover_every_block_once_and_respect_the_bound():
    model = XUMXSliCQ(hidden_channels=(2, 2))
    specs = [(n.nb_bins, b.T, n.kernel) for n, b in zip(model.nets, [b for b, l in zip(model.blocks, model.learned)
                                                                      if l])]
    for bound in (1.0, 1.25, 2.0, float("inf")):
        buckets = plan_buckets(specs, bound)
        assert sorted(i for b in buckets for i in b) == list(range(len(specs)))
        for b in buckets:
            assert len({specs[i][2] for i in b}) == 1  # one kernel per bucket
        plan = FusedBlocks(model.nets, [s[1] for s in specs], bound)
        assert all(d["work_factor"] <= bound + 1e-12 or len(d["members"]) == 1 for d in plan.describe())
    assert len(plan_buckets(specs, float("inf"))) == len({s[2] for s in specs})  # one bucket per kernel
    assert len(plan_buckets(specs, 1.25)) < len(specs) / 5
    with pytest.raises(ValueError, match="max_padding"):
        plan_buckets(specs, 0.9)


def test_macs_real_count_matches_the_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = XUMXSliCQ(hidden_channels=(3, 4)).eval().set_fused(True)
    mags = magnitudes(model, 1, 44100)
    ref = copy.deepcopy(model).set_fused(False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        ref.masks(mags)
    macs = model.fused.macs(model.nets, mags[0].shape[3])
    assert macs["real"] == counter.get_total_flops() // 2
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.masks(mags)
    assert macs["padded"] == counter.get_total_flops() // 2 > macs["real"]


# -------------------------------------------------------------------------------------------------- equality
def test_default_model_eval_and_train_equal_per_block():
    ref, fused = pair()
    assert fused.state_dict().keys() == ref.state_dict().keys()
    mags = magnitudes(ref, 1, 44100)  # one 1 s item: the default model is large, float64 gradients are slow
    check_eval(ref, fused, mags)
    check_train(ref, fused, mags)


@pytest.mark.parametrize("config", OTHER, ids=["mel60-kf-padding", "cqlog48-kernels"])
def test_other_configurations_equal_per_block(config):
    ref, fused = pair(1, max_padding=1.5, **config)
    if config is OTHER[0]:
        assert any(d["layout"] == "blocks" and len(set(d["nb_bins"])) > 1 for d in fused.fused.describe()), \
            "the configuration should need bin padding"
    mags = magnitudes(ref, 2, 3 * 44100, seed=1)
    check_eval(ref, fused, mags)
    check_train(ref, fused, mags)


@pytest.mark.parametrize("length", [4000, 9000])
def test_short_inputs_equal_per_block(length):
    """Below the encoder's min_frames the per-block network pads with silence: the fused one must too."""
    ref, fused = pair(2, hidden_channels=(3, 4))
    mags = magnitudes(ref, 2, length, seed=2)
    assert any((x.shape[3] + 1) * b.T // 2 < n.min_frames
               for x, b, n in zip([m for m, l in zip(mags, ref.learned) if l],
                                  [b for b, l in zip(ref.blocks, ref.learned) if l], ref.nets))
    check_eval(ref, fused, mags)
    check_train(ref, fused, mags)


def test_sliced_path_equals_gather_path():
    """The per-block slicing that torch.export traces gives the same masks as the cached gather."""
    ref, fused = pair(3, hidden_channels=(3, 4))
    mags = magnitudes(ref, 1, 3 * 44100, seed=3)
    for training in (False, True):
        fused.train(training)
        a = fused.masks(mags)
        fused.fused._gather = False
        b = fused.masks(mags)
        fused.fused._gather = True
        assert rel(a, b) <= TOL


@pytest.mark.parametrize("gather", [True, False])
def test_padding_never_leaks_into_valid_outputs(gather):
    """Garbage in every padded position changes nothing; without the validity masks it does (so the test can
    fail)."""
    ref, fused = pair(4, max_padding=1.5, **OTHER[0])  # time and bin padding
    mags = magnitudes(ref, 2, 2 * 44100, seed=4)
    plan = fused.fused
    plan._gather = gather
    for training in (False, True):
        fused.train(training)
        clean = fused.masks(mags)
        plan._pad_value = 1e3
        dirty = fused.masks(mags)
        plan._use_masks = False
        leaky = fused.masks(mags)
        plan._pad_value, plan._use_masks = 0.0, True
        assert rel(dirty, clean) <= TOL
        assert rel(leaky, clean) > 1e-2


def test_set_fused_off_and_on_keeps_parameters_and_config():
    torch.manual_seed(0)
    model = XUMXSliCQ(hidden_channels=(2, 3))
    keys = list(model.state_dict())
    model.set_fused(True, max_padding=1.5)
    assert model.fused is not None and model.fused.max_padding == 1.5
    assert list(model.state_dict()) == keys and "fused" not in model.get_config()
    assert model.set_fused(False).fused is None


def test_shipped_checkpoint_loads_into_fused_model_unchanged():
    from xumx_slicq.checkpoint import load_model

    model, _ = load_model(ROOT / "pretrained-model", arch="xumx-slicq")
    model.eval()
    fused = copy.deepcopy(model).set_fused(True)
    fused.load_state_dict(model.state_dict(), strict=True)  # same keys and shapes
    import soundfile as sf

    song = sorted((ROOT / "data" / "test").glob("*/mixture.wav"))
    if song:
        audio, _ = sf.read(str(song[0]), frames=3 * 44100, start=10 * 44100, dtype="float32", always_2d=True)
        audio = torch.from_numpy(audio.T.copy())[None]  # (1, 2, nb_timesteps)
    else:  # the demo songs are data, not code: fall back to noise rather than skip
        audio = 0.1 * torch.randn(1, 2, 3 * 44100, generator=torch.Generator().manual_seed(0))
    mags = [b.abs() for b in SliCQT(**model.slicq_config)(audio)]
    check_eval(model, fused, mags)
