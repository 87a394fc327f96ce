"""Tests for xumx_slicq/wiener.py: the torch Wiener-EM against norbert 0.2.1, its properties and its checks."""

import itertools

import numpy as np
import pytest
import torch

from tests.wiener_reference import TOL, make_inputs, norbert_wiener, rel_err, run_torch
from xumx_slicq.wiener import wiener


run = run_torch


# --------------------------------------------------------------------------------------------------------
# parity with norbert
# --------------------------------------------------------------------------------------------------------


def test_float32_matches_norbert():
    v, x = make_inputs(11, nb_frames=64, nb_bins=9, nb_sources=4, dtype=np.float32)
    for iterations, softmask in itertools.product((1, 2), (False, True)):
        assert rel_err(run(v, x, iterations, softmask), norbert_wiener(v, x, iterations, softmask, False)) <= TOL


def test_mono_duplicated_to_stereo_float32_is_accurate():
    """Identical channels make every spatial covariance rank one; the 2x2 inverse must not lose it in float32
    (norbert's complex64 path is off by several percent here)."""
    rng = np.random.default_rng(3)
    x1 = (rng.standard_normal((100, 8, 1)) + 1j * rng.standard_normal((100, 8, 1))) * rng.uniform(0.1, 80, (1, 8, 1))
    x = np.concatenate([x1, x1], axis=2)
    v = np.abs(x)[..., None] * rng.dirichlet(np.ones(4), size=(100, 8, 1)).repeat(2, axis=2)
    ref = run(v, x, 2)
    assert rel_err(run(v.astype(np.float32), x.astype(np.complex64), 2), ref) <= 1e-5
    # and the stereo result is the mono one up to the regulariser
    assert rel_err(ref[:, :, :1], run(v[:, :, :1], x1, 2)) <= 1e-3


# --------------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------------


def test_dtype_follows_the_mixture():
    for real, cplx in ((np.float32, torch.complex64), (np.float64, torch.complex128)):
        v, x = make_inputs(15, dtype=real)
        for iterations in (0, 1):
            assert wiener(torch.from_numpy(v), torch.from_numpy(x), iterations).dtype == cplx
    v, x = make_inputs(15, dtype=np.float32)  # targets follow the mixture's precision
    assert wiener(torch.from_numpy(v), torch.from_numpy(x.astype(np.complex128))).dtype == torch.complex128


def test_differentiable():
    v, x = make_inputs(16, nb_frames=4, nb_bins=2, nb_sources=2)
    vt = torch.from_numpy(v).requires_grad_()
    xt = torch.from_numpy(x).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: torch.view_as_real(wiener(a, b, 2, residual=True)), (vt, xt))
    # the autograd path gives the same values as the fast one
    with torch.no_grad():
        fast = wiener(vt, xt, 2, residual=True)
    assert torch.equal(wiener(vt, xt, 2, residual=True).detach(), fast)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    v, x = make_inputs(17, nb_sources=4, dtype=np.float32)
    cpu = wiener(torch.from_numpy(v), torch.from_numpy(x), 2, residual=True)
    gpu = wiener(torch.from_numpy(v).cuda(), torch.from_numpy(x).cuda(), 2, residual=True)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.complex64
    assert rel_err(gpu.cpu().numpy(), cpu.numpy()) <= TOL


def test_bad_arguments_raise_clear_errors():
    v, x = make_inputs(18)
    vt, xt = torch.from_numpy(v), torch.from_numpy(x)
    with pytest.raises(ValueError, match=r"Wiener-EM: wiener: targets \(16, 3, 2, 3\) do not match the mixture"):
        wiener(vt[:, :3], xt)
    with pytest.raises(ValueError, match="targets .* do not match"):
        wiener(vt[..., 0], xt)  # no sources axis
    with pytest.raises(ValueError, match="iterations must be an integer >= 0, got -1"):
        wiener(vt, xt, iterations=-1)
    with pytest.raises(ValueError, match="scale_factor must be > 0"):
        wiener(vt, xt, scale_factor=0)
    with pytest.raises(TypeError, match="mixture must be a complex torch tensor"):
        wiener(vt, xt.real.clone())
    with pytest.raises(TypeError, match="targets must be a real floating torch tensor"):
        wiener(xt[..., None], xt)
    with pytest.raises(TypeError, match="mixture must be a complex torch tensor"):
        wiener(v, x)  # numpy arrays
    with pytest.raises(ValueError, match="empty input"):
        wiener(vt[:, :, :, :0], xt)
