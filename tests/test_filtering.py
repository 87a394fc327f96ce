"""Tests for xumx_slicq/filtering.py: Wiener-EM (torch, numba) and the zero-padded sliCQ matrix glue.

The reference is norbert 0.2.1, composed from its public functions (``norbert.softmask`` and
``norbert.expectation_maximization``) with open-unmix's residual and ``scale_factor`` conventions.
"""

import itertools

import norbert
import numpy as np
import pytest
import torch

from xumx_slicq.filtering import wiener, wiener_matrix, wiener_numba

TOL = 1e-4  # acceptance tolerance (relative, Frobenius norm and max-abs)


def rel_err(a, b):
    """Largest of the Frobenius-relative and max-abs-relative differences of a against b."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    return max(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300), np.abs(a - b).max() / scale)


def norbert_wiener(v, x, iterations, softmask, residual, scale_factor=10.0, eps=1e-10):
    """norbert 0.2.1 with open-unmix's residual source and scale_factor (inputs are copied)."""
    v, x = v.copy(), x.copy()
    if softmask:
        y = norbert.softmask(v, x, eps=eps)
    else:
        y = v * np.exp(1j * np.angle(x[..., None]))
    if y.shape[2] != x.shape[2]:
        y = np.broadcast_to(y, x.shape + y.shape[-1:]).copy()
    if residual:
        y = np.concatenate([y, x[..., None] - y.sum(axis=-1, keepdims=True)], axis=-1)
    if iterations == 0:
        return y
    max_abs = max(1.0, np.abs(x).max() / scale_factor)
    y = norbert.expectation_maximization(y / max_abs, x / max_abs, iterations, eps=eps)[0]
    return y * max_abs


def make_inputs(seed, nb_frames=16, nb_bins=5, nb_channels=2, nb_sources=3, dtype=np.float64, loud=30.0,
                target_channels=None):
    """Random mixture `(F, B, C)` (peaks above scale_factor so the normalisation is active) and targets."""
    rng = np.random.default_rng(seed)
    cdtype = np.complex64 if dtype == np.float32 else np.complex128
    x = (rng.standard_normal((nb_frames, nb_bins, nb_channels))
         + 1j * rng.standard_normal((nb_frames, nb_bins, nb_channels))) * rng.uniform(0.05, loud, (1, nb_bins, 1))
    tch = nb_channels if target_channels is None else target_channels
    v = np.abs(x[..., :tch])[..., None] * rng.uniform(0.0, 1.0, (nb_frames, nb_bins, tch, nb_sources))
    return v.astype(dtype), x.astype(cdtype)


GRID = list(itertools.product((0, 1, 2), (False, True), (False, True), (1, 2), (1, 2, 3, 4)))
GRID_IDS = [f"it{i}-sm{int(s)}-res{int(r)}-ch{c}-src{j}" for i, s, r, c, j in GRID]


# --------------------------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations,softmask,residual,channels,sources", GRID, ids=GRID_IDS)
def test_torch_matches_norbert(iterations, softmask, residual, channels, sources):
    v, x = make_inputs(100 + sources * 7 + channels, nb_channels=channels, nb_sources=sources)
    ref = norbert_wiener(v, x, iterations, softmask, residual)
    out = wiener(torch.from_numpy(v), torch.from_numpy(x), iterations, softmask, residual).numpy()
    assert out.shape == ref.shape == (16, 5, channels, sources + residual)
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("iterations,softmask,residual,channels,sources", GRID, ids=GRID_IDS)
def test_numba_matches_torch(iterations, softmask, residual, channels, sources):
    for dtype in (np.float64, np.float32):
        v, x = make_inputs(200 + sources * 7 + channels, nb_channels=channels, nb_sources=sources, dtype=dtype)
        ref = wiener(torch.from_numpy(v), torch.from_numpy(x), iterations, softmask, residual).numpy()
        out = wiener_numba(v, x, iterations, softmask, residual)
        assert out.shape == ref.shape and out.dtype == ref.dtype
        assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("softmask", [False, True])
def test_three_channels_and_mono_targets_match_norbert(softmask):
    """General-channel path (solve) and one-channel target spectrograms broadcast over the mixture."""
    v, x = make_inputs(7, nb_channels=3, nb_sources=2)
    ref = norbert_wiener(v, x, 2, softmask, True)
    assert rel_err(wiener(torch.from_numpy(v), torch.from_numpy(x), 2, softmask, True).numpy(), ref) <= TOL
    assert rel_err(wiener_numba(v, x, 2, softmask, True), ref) <= TOL
    v, x = make_inputs(8, nb_channels=2, nb_sources=3, target_channels=1)
    ref = norbert_wiener(v, x, 1, softmask, False)
    assert rel_err(wiener(torch.from_numpy(v), torch.from_numpy(x), 1, softmask).numpy(), ref) <= TOL
    assert rel_err(wiener_numba(v, x, 1, softmask), ref) <= TOL


@pytest.mark.parametrize("scale_factor", [0.5, 2.0, 1e9])
def test_scale_factor_matches_norbert(scale_factor):
    v, x = make_inputs(9, nb_sources=4)
    ref = norbert_wiener(v, x, 2, False, False, scale_factor=scale_factor)
    out = wiener(torch.from_numpy(v), torch.from_numpy(x), 2, scale_factor=scale_factor).numpy()
    assert rel_err(out, ref) <= TOL
    assert rel_err(wiener_numba(v, x, 2, scale_factor=scale_factor), ref) <= TOL


def test_float32_matches_norbert():
    v, x = make_inputs(11, nb_frames=64, nb_bins=9, nb_sources=4, dtype=np.float32)
    for iterations, softmask in itertools.product((1, 2), (False, True)):
        ref = norbert_wiener(v, x, iterations, softmask, False)
        out = wiener(torch.from_numpy(v), torch.from_numpy(x), iterations, softmask).numpy()
        assert rel_err(out, ref) <= TOL
        assert rel_err(wiener_numba(v, x, iterations, softmask), ref) <= TOL


def test_mono_duplicated_to_stereo_float32_is_accurate():
    """Identical channels make every spatial covariance rank one; the 2x2 inverse must not lose it in float32
    (norbert's complex64 path is off by several percent here)."""
    rng = np.random.default_rng(3)
    x1 = (rng.standard_normal((100, 8, 1)) + 1j * rng.standard_normal((100, 8, 1))) * rng.uniform(0.1, 80, (1, 8, 1))
    x = np.concatenate([x1, x1], axis=2)
    v = np.abs(x)[..., None] * rng.dirichlet(np.ones(4), size=(100, 8, 1)).repeat(2, axis=2)
    ref = wiener(torch.from_numpy(v), torch.from_numpy(x), 2).numpy()
    v32, x32 = v.astype(np.float32), x.astype(np.complex64)
    assert rel_err(wiener(torch.from_numpy(v32), torch.from_numpy(x32), 2).numpy(), ref) <= 1e-5
    assert rel_err(wiener_numba(v32, x32, 2), ref) <= 1e-5
    # and the stereo result is the mono one up to the regulariser
    mono = wiener(torch.from_numpy(v[:, :, :1]), torch.from_numpy(x1), 2).numpy()
    assert rel_err(ref[:, :, :1], mono) <= 1e-3


# --------------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [0, 1, 2])
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_residual_mixture_consistency(iterations, backend):
    v, x = make_inputs(12, nb_frames=32, nb_sources=3)
    if backend == "torch":
        y = wiener(torch.from_numpy(v), torch.from_numpy(x), iterations, residual=True).numpy()
    else:
        y = wiener_numba(v, x, iterations, residual=True)
    assert y.shape[-1] == 4
    # exact for the initial estimate; after EM off only by the sqrt(eps) regulariser: x - sqrt(eps) C^-1 x
    assert rel_err(y.sum(axis=-1), x) <= (1e-12 if iterations == 0 else 1e-5)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_inputs_not_modified(backend):
    for softmask, residual in itertools.product((False, True), repeat=2):
        v, x = make_inputs(13, nb_sources=2)
        v0, x0 = v.copy(), x.copy()
        if backend == "torch":
            vt, xt = torch.from_numpy(v), torch.from_numpy(x)
            wiener(vt, xt, 2, softmask, residual)
        else:
            wiener_numba(v, x, 2, softmask, residual)
        np.testing.assert_array_equal(v, v0)
        np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_silent_sources_are_finite(channels):
    v, x = make_inputs(14, nb_channels=channels, nb_sources=3)
    zeros_v = np.zeros_like(v)
    for tgt, mix in ((zeros_v, x), (zeros_v, np.zeros_like(x)), (v, np.zeros_like(x))):
        for iterations, softmask, residual in itertools.product((0, 1, 2), (False, True), (False, True)):
            yt = wiener(torch.from_numpy(tgt), torch.from_numpy(mix), iterations, softmask, residual).numpy()
            yn = wiener_numba(tgt, mix, iterations, softmask, residual)
            assert np.isfinite(yt).all() and np.isfinite(yn).all()
            if not tgt.any():  # silent sources stay silent
                assert not yt[..., :3].any() and not yn[..., :3].any()
    # one silent source among loud ones
    v[..., 1] = 0
    yt = wiener(torch.from_numpy(v), torch.from_numpy(x), 2).numpy()
    assert np.isfinite(yt).all() and not yt[..., 1].any()
    assert np.isfinite(wiener_numba(v, x, 2)).all()


def test_dtype_preserved():
    for real, cplx in ((np.float32, np.complex64), (np.float64, np.complex128)):
        v, x = make_inputs(15, dtype=real)
        for iterations in (0, 1):
            assert wiener(torch.from_numpy(v), torch.from_numpy(x), iterations).dtype == torch.from_numpy(x).dtype
            assert wiener_numba(v, x, iterations).dtype == cplx
    # targets follow the mixture's precision
    v, x = make_inputs(15, dtype=np.float32)
    x64 = x.astype(np.complex128)
    assert wiener(torch.from_numpy(v), torch.from_numpy(x64)).dtype == torch.complex128
    assert wiener_numba(v, x64).dtype == np.complex128


def test_wiener_is_differentiable():
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
    with pytest.raises(ValueError, match="filtering.py"):
        wiener(torch.from_numpy(v[:, :3]), torch.from_numpy(x))
    with pytest.raises(ValueError, match="iterations"):
        wiener(torch.from_numpy(v), torch.from_numpy(x), iterations=-1)
    with pytest.raises(TypeError, match="complex"):
        wiener(torch.from_numpy(v), torch.from_numpy(x.real.copy()))
    with pytest.raises(TypeError, match="complex"):
        wiener_numba(v, x.real.copy())
    with pytest.raises(ValueError, match="bin_lengths"):
        wiener_matrix(np.zeros((1, 2, 2, 3, 4, 5)), np.zeros((1, 2, 3, 4, 5), np.complex64), [5, 6, 1])


# --------------------------------------------------------------------------------------------------------
# zero-padded sliCQ matrix
# --------------------------------------------------------------------------------------------------------


LENGTHS = np.array([7, 4, 4, 4, 5, 5, 7, 9, 9, 12])  # runs of equal T, a repeated T, max_T = 12


def make_matrix(seed, nb_samples=2, nb_targets=3, nb_channels=2, nb_slices=6, dtype=np.float64, garbage=True,
                lengths=LENGTHS):
    """Zero-padded mixture `(N, C, B, S, max_T)` and targets `(N, J, C, B, S, max_T)`.

    With `garbage`, the targets hold large values in the padding (they must be ignored)."""
    rng = np.random.default_rng(seed)
    max_t = int(lengths.max())
    cdtype = np.complex64 if dtype == np.float32 else np.complex128
    shape = (nb_samples, nb_channels, len(lengths), nb_slices, max_t)
    loudness = rng.uniform(0.1, 40, (1, 1, len(lengths), 1, 1))  # per bin
    mix = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * loudness
    tgt = np.abs(mix)[:, None] * rng.uniform(0, 1, (nb_samples, nb_targets) + shape[1:])
    valid = np.arange(max_t)[None, :] < lengths[:, None]  # (B, T)
    mix = mix * valid[:, None, :]  # (B, 1, T) broadcasts over (..., B, S, T)
    if garbage:
        tgt = np.where(valid[:, None, :], tgt, 1e3)
    else:
        tgt = tgt * valid[:, None, :]
    return tgt.astype(dtype), mix.astype(cdtype), valid


def padding(out, valid):
    """Values of `out` `(..., B, S, T)` at the padded positions of `valid` `(B, T)`."""
    mask = np.broadcast_to(~valid[:, None, :], out.shape[-3:])  # (B, 1, T) -> (B, S, T)
    return out[..., mask]


def per_bin_reference(tgt, mix, lengths, n, b, s0, s1, **opts):
    """`wiener` on one bin's valid frames of one sample and slice range: frames = (slice, t) slice-major."""
    nt = int(lengths[b])
    # (C, S, T) -> (S, T, C) -> (S*T, 1, C)
    x = mix[n, :, b, s0:s1, :nt].transpose(1, 2, 0).reshape(-1, 1, mix.shape[1])
    # (J, C, S, T) -> (S, T, C, J) -> (S*T, 1, C, J)
    v = tgt[n, :, :, b, s0:s1, :nt].transpose(2, 3, 1, 0).reshape(-1, 1, tgt.shape[2], tgt.shape[1])
    y = wiener(torch.from_numpy(v), torch.from_numpy(x), **opts).numpy()
    # (S*T, 1, C, J') -> (S, T, C, J') -> (J', C, S, T)
    return y.reshape(s1 - s0, nt, x.shape[2], -1).transpose(3, 2, 0, 1)


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matrix_equals_wiener_on_each_bin(backend, dtype):
    tgt, mix, valid = make_matrix(20, dtype=dtype)
    for iterations, softmask, residual in ((1, False, False), (2, True, True), (0, False, True)):
        opts = dict(iterations=iterations, softmask=softmask, residual=residual)
        tgt_in = torch.from_numpy(tgt) if backend == "torch" else tgt
        mix_in = torch.from_numpy(mix) if backend == "torch" else mix
        out = wiener_matrix(tgt_in, mix_in, torch.from_numpy(LENGTHS), window_frames=None, backend=backend, **opts)
        out = out.numpy() if backend == "torch" else out
        assert out.shape == (2, 3 + residual, 2, len(LENGTHS), 6, 12) and out.dtype == mix.dtype
        # padding stays exactly zero
        assert padding(out, valid).size and not padding(out, valid).any()
        for n, b in itertools.product(range(2), range(len(LENGTHS))):
            ref = per_bin_reference(tgt, mix, LENGTHS, n, b, 0, 6, **opts)
            assert rel_err(out[n, :, :, b, :, :LENGTHS[b]], ref) <= 1e-5, (n, b)


@pytest.mark.parametrize("window", [1, 4])
def test_matrix_windows_and_backends_agree(window):
    """Windows are counted in slices; each (sample, bin, window) is filtered on its own."""
    tgt, mix, valid = make_matrix(21, nb_slices=7)
    opts = dict(iterations=2, softmask=False, residual=True)
    out_t = wiener_matrix(torch.from_numpy(tgt), torch.from_numpy(mix), LENGTHS, window_frames=window, **opts).numpy()
    out_n = wiener_matrix(tgt, mix, LENGTHS, window_frames=window, backend="numba", **opts)
    assert rel_err(out_n, out_t) <= TOL
    assert not padding(out_t, valid).any() and not padding(out_n, valid).any()
    for s0 in range(0, 7, window):
        s1 = min(7, s0 + window)
        for n, b in itertools.product(range(2), (0, 3, 9)):
            ref = per_bin_reference(tgt, mix, LENGTHS, n, b, s0, s1, **opts)
            assert rel_err(out_t[n, :, :, b, s0:s1, :LENGTHS[b]], ref) <= 1e-5


def test_matrix_ignores_padding_content_and_keeps_inputs():
    tgt, mix, _ = make_matrix(22, garbage=True)
    clean = np.where(np.arange(12)[None, :] < LENGTHS[:, None], 1.0, 0.0)[:, None, :] * tgt
    tgt0, mix0 = tgt.copy(), mix.copy()
    for backend in ("torch", "numba"):
        a = wiener_matrix(tgt, mix, LENGTHS, backend=backend)
        b = wiener_matrix(clean, mix, LENGTHS, backend=backend)
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tgt, tgt0)
    np.testing.assert_array_equal(mix, mix0)


def test_matrix_mono_targets_and_torch_in_numba_backend():
    tgt, mix, valid = make_matrix(23, nb_targets=2)
    tgt_mono = tgt[:, :, :1]  # one target channel, broadcast over the mixture's two
    out_t = wiener_matrix(torch.from_numpy(tgt_mono), torch.from_numpy(mix), LENGTHS, backend="torch")
    out_n = wiener_matrix(torch.from_numpy(tgt_mono), torch.from_numpy(mix), LENGTHS, backend="numba")
    assert torch.is_tensor(out_n) and out_n.dtype == torch.complex128
    assert rel_err(out_n.numpy(), out_t.numpy()) <= TOL
    assert not padding(out_t.numpy(), valid).any()
