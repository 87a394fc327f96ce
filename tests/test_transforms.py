"""Tests of the sliCQ transform: reference parity with nsgt 0.19, exact inversion, gradients, helpers."""

import numpy as np
import pytest
import torch

from benchmark import reference_nsgt
from xumx_slicq.transforms import (
    SliCQT,
    auto_slice_length,
    frequency_scale,
    magnitude_phase,
    mix_phase,
    nb_slices,
    overlap_add,
    overlap_add_length,
    polar,
    slice_window,
)


@pytest.fixture(scope="module")
def bark():
    return SliCQT()


# ----------------------------------------------------------------------------------------------------------------
# Reference implementation (test-only dependency, CC BY-NC-SA: never copied into the package)
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nsgt_ref():
    """nsgt 0.19 (patched for numpy 2) and the matching reference scales."""
    return reference_nsgt.load()


REFERENCE_CONFIGS = [
    ("bark", 262, 32.9, 22050.0),  # the original model's configuration
    ("mel", 100, 20.0, 22050.0),
    ("cqlog", 84, 40.0, 20000.0),
    ("vqlog", 120, 30.0, 18000.0),
    ("lin", 150, 50.0, 20000.0),
]


@pytest.mark.parametrize("scale,fbins,fmin,fmax", REFERENCE_CONFIGS)
def test_coefficients_equal_nsgt_reference(nsgt_ref, scale, fbins, fmin, fmax):
    slicqt = SliCQT(scale, fbins, fmin, fmax)
    ref = nsgt_ref.NSGT_sliced(
        nsgt_ref.make_scale(scale, fbins, fmin, fmax), slicqt.sllen, slicqt.trlen, 44100,
        real=True, matrixform=False, multichannel=True,
    )
    x = np.random.default_rng(1).standard_normal((2, 47_000))
    ref_slices = list(ref.forward([x]))  # per slice: per channel: per bin: (M_k,) complex
    ours = slicqt(torch.from_numpy(x)[None])
    assert len(ref_slices) == ours[0].shape[3] == slicqt.nb_slices(x.shape[-1])
    assert len(ref_slices[0][0]) == slicqt.nb_bins
    worst = 0.0
    for blk, coefs in zip(slicqt.blocks, ours):
        for j in range(blk.nb_bins):
            k = blk.first_bin + j
            # reference bin k stacked to (nb_channels, nb_slices, M_k)
            expected = np.stack([np.stack([s[ch][k] for s in ref_slices]) for ch in range(2)])
            got = coefs[0, :, j].numpy()
            assert got.shape == expected.shape, f"bin {k}"
            worst = max(worst, np.abs(got - expected).max() / np.abs(expected).max())
    assert worst <= 1e-6


def test_bark262_layout(bark):
    assert (bark.sllen, bark.trlen) == (18060, 4516)
    assert bark.nb_bins == 263 and len(bark.blocks) == 70
    assert [tuple(b) for b in bark.blocks[:8]] == [
        (0, 1, 28), (1, 86, 16), (87, 14, 20), (101, 11, 24), (112, 9, 28), (121, 8, 32), (129, 7, 36), (136, 6, 40)
    ]
    assert tuple(bark.blocks[-1]) == (262, 1, 292)
    assert sum(b.nb_bins * b.T for b in bark.blocks) == 18640
    assert bark.max_T == 292 and bark.bin_lengths.shape == (263,)
    assert bark.frequencies[0] == 0 and bark.frequencies[-1] == 22050
    assert torch.all(torch.diff(bark.frequencies) > 0)
    # blocks tile the bins in order
    assert [b.first_bin for b in bark.blocks[1:]] == [b.first_bin + b.nb_bins for b in bark.blocks[:-1]]


@pytest.mark.parametrize("seconds,expected", [(1, 6), (2, 11), (6, 31)])
def test_slice_count(bark, seconds, expected):
    assert nb_slices(seconds * 44100, 18060) == expected
    assert bark(torch.zeros(1, 1, seconds * 44100))[0].shape[3] == expected


def test_auto_slice_length_rules():
    f, q = frequency_scale("bark", 262, 32.9, 22050.0)
    assert auto_slice_length(f[:-1], q[:-1], 44100) == (18060, 4516)
    for scale in ("mel", "cqlog", "vqlog", "lin"):
        t = SliCQT(scale, 60, 40.0, 16000.0)
        assert t.sllen % 4 == 0 and t.trlen % 2 == 0 and t.trlen <= t.sllen // 2


def test_scales_are_monotonic_and_vqlog_reduces_to_cqlog():
    for scale in ("bark", "mel", "cqlog", "vqlog", "lin"):
        f, q = frequency_scale(scale, 50, 30.0, 16000.0)
        assert f[0] == pytest.approx(30.0) and f[-1] == pytest.approx(16000.0)
        assert np.all(np.diff(f) > 0) and np.all(q > 0)
    f_cq, q_cq = frequency_scale("cqlog", 50, 30.0, 16000.0)
    f_vq, q_vq = frequency_scale("vqlog", 50, 30.0, 16000.0, gamma=0.0)
    np.testing.assert_allclose(q_vq, q_cq)
    _, q_vq25 = frequency_scale("vqlog", 50, 30.0, 16000.0, gamma=25.0)
    assert np.all(q_vq25 < q_cq)  # wider bands (lower Q) at low frequencies


def test_slice_windows_sum_to_one():
    w = slice_window(18060, 4516)
    hop = 18060 // 2
    np.testing.assert_allclose(w[:hop] + w[hop:], 1.0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 1000, 18060, 44100, 154351])
@pytest.mark.parametrize("nb_channels", [1, 2, 3])
@pytest.mark.parametrize("nb_samples", [1, 3])
def test_perfect_reconstruction(bark, length, nb_channels, nb_samples):
    gen = torch.Generator().manual_seed(length + 10 * nb_channels + nb_samples)
    x = torch.randn(nb_samples, nb_channels, length, dtype=torch.float64, generator=gen)
    blocks = bark(x)
    assert all(b.dtype == torch.complex128 for b in blocks)
    assert all(b.shape[:2] == (nb_samples, nb_channels) for b in blocks)
    y = bark.inverse(blocks, length)
    assert y.shape == x.shape and y.dtype == torch.float64
    assert (y - x).abs().max().item() <= 1e-10

    x32 = x.float()
    y32 = bark.inverse(bark(x32), length)
    assert y32.dtype == torch.float32
    rel_rmse = ((y32.double() - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt()).item()
    assert rel_rmse <= 1e-6


@pytest.mark.parametrize("scale", ["mel", "cqlog", "vqlog", "lin"])
def test_reconstruction_other_scales(scale):
    t = SliCQT(scale, 80, 30.0, 22050.0)
    x = torch.randn(2, 2, 30_000, dtype=torch.float64)
    assert (t.inverse(t(x), x.shape[-1]) - x).abs().max().item() <= 1e-10


def test_custom_slice_length_and_other_rate():
    t = SliCQT("bark", 60, 50.0, 8000.0, sample_rate=16000, sllen=8192, trlen=1024)
    assert (t.sllen, t.trlen) == (8192, 1024) and t.frequencies[-1] == 8000
    x = torch.randn(1, 2, 20_000, dtype=torch.float64)
    assert (t.inverse(t(x), x.shape[-1]) - x).abs().max().item() <= 1e-10


def test_batch_items_are_independent_and_transform_is_linear(bark):
    x = torch.randn(3, 2, 30_000, dtype=torch.float64)
    whole = bark(x)
    single = bark(x[1:2])
    for a, b in zip(whole, single):
        torch.testing.assert_close(a[1:2], b, rtol=0, atol=1e-12)
    y = torch.randn_like(x)
    for a, b, c in zip(bark(x + 2 * y), whole, bark(y)):
        torch.testing.assert_close(a, b + 2 * c, rtol=0, atol=1e-10)


def test_inverse_accepts_extra_leading_dims(bark):
    x = torch.randn(2, 4, 2, 20_000, dtype=torch.float64)  # (nb_samples, nb_targets, nb_channels, time)
    blocks = bark(x.reshape(8, 2, -1))  # transform sees (nb_samples * nb_targets, ...)
    blocks = [b.reshape(2, 4, *b.shape[1:]) for b in blocks]  # back to (nb_samples, nb_targets, ...)
    y = bark.inverse(blocks, x.shape[-1])
    assert y.shape == x.shape
    assert (y - x).abs().max().item() <= 1e-10


def test_bad_input_is_rejected_clearly(bark):
    with pytest.raises(ValueError, match="nb_samples, nb_channels, nb_timesteps"):
        bark(torch.zeros(2, 1000))
    with pytest.raises(TypeError, match="float32 or float64"):
        bark(torch.zeros(1, 2, 1000, dtype=torch.int16))
    with pytest.raises(ValueError, match="at least one sample"):
        bark(torch.zeros(1, 2, 0))
    blocks = bark(torch.zeros(1, 2, 1000))
    with pytest.raises(ValueError, match="expected 70 blocks"):
        bark.inverse(blocks[:-1], 1000)
    with pytest.raises(ValueError, match="unknown frequency scale"):
        SliCQT("erb")


# ----------------------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    """A small configuration so gradcheck stays fast (windows, slicing and grouping as in the big one)."""
    return SliCQT("bark", 24, 100.0, 4000.0, sample_rate=8000, sllen=256, trlen=64)


def test_gradcheck_forward(small):
    x = torch.randn(1, 2, 300, dtype=torch.float64, requires_grad=True)

    def fwd(x):
        return tuple(small(x))

    assert torch.autograd.gradcheck(fwd, (x,), fast_mode=True)


def test_gradcheck_inverse(small):
    x = torch.randn(1, 2, 300, dtype=torch.float64)
    blocks = [b.detach().requires_grad_(True) for b in small(x)]

    def inv(*blocks):
        return small.inverse(list(blocks), 300)

    assert torch.autograd.gradcheck(inv, tuple(blocks), fast_mode=True)


def test_gradcheck_through_forward_and_inverse(small):
    x = torch.randn(1, 1, 90, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    masks = [torch.rand(b.shape, generator=gen, dtype=torch.float64) for b in small(x.detach())]

    def roundtrip(x):
        return small.inverse([b * m for b, m in zip(small(x), masks)], x.shape[-1])

    assert torch.autograd.gradcheck(roundtrip, (x,))


def test_gradient_of_magnitude_loss_reaches_input(bark):
    x = torch.randn(1, 2, 10_000, requires_grad=True)
    loss = sum(b.abs().pow(2).sum() for b in bark(x))
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def test_matrix_round_trip_and_padding(bark):
    x = torch.randn(2, 2, 50_000)
    blocks = bark(x)
    m = bark.to_matrix(blocks)
    s = bark.nb_slices(50_000)
    assert m.shape == (2, 2, 263, s, 292) and m.dtype == torch.complex64
    for k, t in enumerate(bark.bin_lengths.tolist()):
        assert torch.all(m[..., k, :, t:] == 0)
        assert torch.any(m[..., k, :, :t] != 0)
    back = bark.from_matrix(m)
    for a, b in zip(blocks, back):
        assert torch.equal(a, b)
    assert (bark.inverse(back, 50_000) - x).abs().max() < 1e-5


def test_overlap_add_matches_naive_loop():
    block = torch.randn(2, 3, 5, 7, 12)
    view = overlap_add(block)
    assert view.shape == (2, 3, 5, overlap_add_length(7, 12)) == (2, 3, 5, 48)
    naive = torch.zeros(2, 3, 5, 48)
    for s in range(7):
        naive[..., s * 6 : s * 6 + 12] += block[..., s, :]
    torch.testing.assert_close(view, naive)


def test_overlap_add_shapes_helper(bark):
    shapes = bark.overlap_add_shapes(44100, nb_samples=3)
    assert len(shapes) == 70
    views = [overlap_add(b.abs()) for b in bark(torch.randn(3, 2, 44100))]
    assert [tuple(v.shape) for v in views] == shapes


def test_magnitude_phase_round_trip_and_mix_phase(bark):
    blocks = bark(torch.randn(1, 2, 20_000, dtype=torch.float64))
    mags, phases = magnitude_phase(blocks)
    for a, b in zip(blocks, polar(mags, phases)):
        torch.testing.assert_close(a, b)
    # mix-phase estimate with a target dimension: (nb_samples, nb_targets, nb_channels, ...)
    est = [mix_phase(m.unsqueeze(1).expand(-1, 4, -1, -1, -1, -1), b) for m, b in zip(mags, blocks)]
    for a, b in zip(est, blocks):
        assert a.shape == (1, 4, *b.shape[1:])
        torch.testing.assert_close(a[:, 2], b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(bark):
    x = torch.randn(2, 2, 44100)
    cpu = bark(x)
    gpu = bark.to("cuda")(x.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-4)
    y = bark.inverse(gpu, 44100).cpu()
    assert ((y - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt()) < 1e-6
    bark.to("cpu")


def test_mix_phase_broadcasts_over_targets_and_handles_zero():
    from xumx_slicq.transforms import mix_phase, unit_phasor

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 2, 3, 4, 5, dtype=torch.complex64, generator=g)  # (nb_samples, nb_channels, bins, slices, T)
    ref[0, 0, 0, 0, 0] = 0
    mag = torch.rand(2, 4, 2, 3, 4, 5, generator=g)  # (nb_samples, nb_targets, nb_channels, ...)
    out = mix_phase(mag, ref)
    expected = torch.polar(mag, torch.angle(ref).unsqueeze(1).expand_as(mag))
    assert out.shape == mag.shape and torch.allclose(out, expected, atol=1e-6)
    assert out[0, :, 0, 0, 0, 0].imag.abs().max() == 0  # zero mixture: phase 0
    assert torch.allclose(unit_phasor(ref).abs()[ref != 0], torch.ones(1))
    same = mix_phase(mag[:, 0], ref)  # same shapes: no broadcast
    assert torch.allclose(same, expected[:, 0], atol=1e-6)
