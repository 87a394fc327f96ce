"""What every Wiener-EM backend (torch `wiener`, the numba backend of `wiener_blocks`) must do, on STFT-layout
problems `(nb_frames, nb_bins, nb_channels[, nb_sources])`: match norbert 0.2.1, and the EM's properties. Each test
runs once per backend."""

import itertools

import numpy as np
import pytest

from tests.wiener_reference import GRID, GRID_IDS, RUNNERS, TOL, make_inputs, norbert_wiener, rel_err


@pytest.fixture(params=sorted(RUNNERS))
def run(request):
    """The backend's runner: numpy in, numpy out."""
    return RUNNERS[request.param]


@pytest.mark.parametrize("iterations,softmask,residual,channels,sources", GRID, ids=GRID_IDS)
def test_matches_norbert(run, iterations, softmask, residual, channels, sources):
    v, x = make_inputs(100 + sources * 7 + channels, nb_channels=channels, nb_sources=sources)
    ref = norbert_wiener(v, x, iterations, softmask, residual)
    out = run(v, x, iterations, softmask, residual)
    assert out.shape == ref.shape == (16, 5, channels, sources + residual) and out.dtype == ref.dtype
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("softmask", [False, True])
def test_three_channels_and_mono_targets_match_norbert(run, softmask):
    """The general-channel path (solve) and one-channel target spectrograms broadcast over the mixture."""
    v, x = make_inputs(7, nb_channels=3, nb_sources=2)
    assert rel_err(run(v, x, 2, softmask, True), norbert_wiener(v, x, 2, softmask, True)) <= TOL
    v, x = make_inputs(8, nb_channels=2, nb_sources=3, target_channels=1)
    assert rel_err(run(v, x, 1, softmask), norbert_wiener(v, x, 1, softmask, False)) <= TOL


@pytest.mark.parametrize("scale_factor", [0.5, 2.0, 1e9])
def test_scale_factor_matches_norbert(run, scale_factor):
    v, x = make_inputs(9, nb_sources=4)
    ref = norbert_wiener(v, x, 2, False, False, scale_factor=scale_factor)
    assert rel_err(run(v, x, 2, scale_factor=scale_factor), ref) <= TOL


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_residual_sums_to_the_mixture(run, iterations, channels):
    v, x = make_inputs(12, nb_frames=32, nb_channels=channels, nb_sources=3)
    y = run(v, x, iterations, residual=True)
    assert y.shape[-1] == 4
    # exact for the initial estimate; after EM off only by the sqrt(eps) regulariser: x - sqrt(eps) C^-1 x
    assert rel_err(y.sum(axis=-1), x) <= (1e-12 if iterations == 0 else 1e-5)


def test_swapped_channels_give_swapped_estimates(run):
    """Symmetry: the EM treats the channels alike, so swapping them in the input swaps them in the output."""
    v, x = make_inputs(19, nb_sources=3)
    y = run(v, x, 2, residual=True)
    swapped = run(v[:, :, ::-1].copy(), x[:, :, ::-1].copy(), 2, residual=True)
    assert rel_err(swapped, y[:, :, ::-1]) <= 1e-12


def test_inputs_not_modified(run):
    for softmask, residual in itertools.product((False, True), repeat=2):
        v, x = make_inputs(13, nb_sources=2)
        v0, x0 = v.copy(), x.copy()
        run(v, x, 2, softmask, residual)
        np.testing.assert_array_equal(v, v0)
        np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_silent_sources_are_finite(run, channels):
    v, x = make_inputs(14, nb_channels=channels, nb_sources=3)
    zeros_v = np.zeros_like(v)
    for tgt, mix in ((zeros_v, x), (zeros_v, np.zeros_like(x)), (v, np.zeros_like(x))):
        for iterations, softmask, residual in itertools.product((0, 1, 2), (False, True), (False, True)):
            y = run(tgt, mix, iterations, softmask, residual)
            assert np.isfinite(y).all()
            if not tgt.any():  # silent sources stay silent
                assert not y[..., :3].any()
    v[..., 1] = 0  # one silent source among loud ones
    y = run(v, x, 2)
    assert np.isfinite(y).all() and not y[..., 1].any()
