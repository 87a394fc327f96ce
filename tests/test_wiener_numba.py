"""Tests for xumx_slicq/wiener_numba.py: the numba block kernels against norbert 0.2.1 and the torch Wiener-EM.

An STFT-layout problem `(nb_frames, nb_bins, nb_channels)` is one sliCQ block of one sample and one slice
(`tests.wiener_reference.as_block`), so the norbert reference applies to the block kernels unchanged.
"""

import itertools

import numpy as np
import pytest
import torch

from tests.wiener_reference import TOL, as_block, make_inputs, norbert_wiener, rel_err, run_numba
from xumx_slicq.wiener import wiener
from xumx_slicq.filtering import wiener_blocks


run = run_numba


# --------------------------------------------------------------------------------------------------------
# parity with norbert and torch
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_float32_matches_norbert_and_torch(channels):
    v, x = make_inputs(11, nb_frames=64, nb_bins=9, nb_channels=channels, nb_sources=4, dtype=np.float32)
    for iterations, softmask, residual in itertools.product((1, 2), (False, True), (False, True)):
        out = run(v, x, iterations, softmask, residual)
        assert out.dtype == np.complex64
        assert rel_err(out, norbert_wiener(v, x, iterations, softmask, residual)) <= TOL
        torch_out = wiener(torch.from_numpy(v), torch.from_numpy(x), iterations, softmask, residual).numpy()
        assert rel_err(out, torch_out) <= TOL


def test_mono_duplicated_to_stereo_float32_is_accurate():
    """Identical channels: the closed-form 2x2 inverse keeps the rank-one covariance in float32."""
    rng = np.random.default_rng(3)
    x1 = (rng.standard_normal((100, 8, 1)) + 1j * rng.standard_normal((100, 8, 1))) * rng.uniform(0.1, 80, (1, 8, 1))
    x = np.concatenate([x1, x1], axis=2)
    v = np.abs(x)[..., None] * rng.dirichlet(np.ones(4), size=(100, 8, 1)).repeat(2, axis=2)
    ref = wiener(torch.from_numpy(v), torch.from_numpy(x), 2).numpy()
    assert rel_err(run(v.astype(np.float32), x.astype(np.complex64), 2), ref) <= 1e-5


@pytest.mark.parametrize("iterations,softmask,residual", [(0, False, False), (1, False, False), (2, True, False),
                                                          (1, False, True)])
def test_sliCQ_blocks_match_torch(slicqt, iterations, softmask, residual):
    """Real sliCQ blocks, two samples of very different loudness: one normaliser per block, as torch."""
    gen = torch.Generator().manual_seed(iterations)
    loud = torch.tensor([0.05, 30.0])
    mix = [m * loud[:, None, None, None, None] for m in slicqt(torch.randn(2, 2, 44100, generator=gen) * 0.2)]
    gains = torch.rand(2, 4, 1, 1, 1, 1, generator=gen) * loud[:, None, None, None, None, None]
    est = [m.abs().unsqueeze(1) * gains / loud[:, None, None, None, None, None] for m in mix]
    opts = dict(iterations=iterations, softmask=softmask, residual=residual)
    got = wiener_blocks(est, mix, backend="numba", **opts)
    assert len(got) == len(mix)
    for e, m, a in zip(est, mix, got):
        nb_samples, nb_channels, nb_bins, nb_slices, t = m.shape
        # (N, C, B, S, T) -> (S, T, N, B, C) -> frames x (samples * bins) x C, the torch reference on the block
        xs = m.permute(3, 4, 0, 2, 1).reshape(nb_slices * t, nb_samples * nb_bins, nb_channels)
        # (N, J, C, B, S, T) -> (S, T, N, B, C, J) -> frames x (samples * bins) x C x J
        vs = e.permute(4, 5, 0, 3, 2, 1).reshape(nb_slices * t, nb_samples * nb_bins, nb_channels, 4)
        ref = wiener(vs, xs, **opts)
        # (S*T, N*B, C, J') -> (S, T, N, B, C, J') -> (N, J', C, B, S, T)
        ref = ref.reshape(nb_slices, t, nb_samples, nb_bins, nb_channels, -1).permute(2, 5, 4, 3, 0, 1)
        assert a.shape == ref.shape and a.dtype == ref.dtype
        assert rel_err(a.numpy(), ref.numpy()) <= TOL


# --------------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------------


def test_dtype_follows_the_mixture():
    v, x = make_inputs(15, dtype=np.float32)
    assert run(v, x).dtype == np.complex64
    assert run(v, x.astype(np.complex128)).dtype == np.complex128  # targets follow the mixture's precision


def test_bad_arguments_raise_clear_errors():
    v, x = make_inputs(18)
    vb, xb = as_block(v, x)
    with pytest.raises(ValueError, match=r"wiener_blocks: 2 target pieces for 1 mixture pieces"):
        wiener_blocks([vb, vb], [xb], backend="numba")
    with pytest.raises(ValueError, match=r"wiener_blocks: block 0: targets .* do not match the mixture"):
        wiener_blocks([vb[:, :, :, :2]], [xb], backend="numba")
    with pytest.raises(ValueError, match="iterations must be an integer >= 0"):
        wiener_blocks([vb], [xb], backend="numba", iterations=1.5)
    with pytest.raises(TypeError, match="block 0: the mixture must be a complex torch tensor"):
        wiener_blocks([vb], [xb.real], backend="numba")
