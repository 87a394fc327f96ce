"""Properties every Wiener-EM backend must have (torch `wiener` and the numba backend of `wiener_blocks`), on
STFT-layout problems `(nb_frames, nb_bins, nb_channels[, nb_sources])`; each test runs once per backend."""

import itertools

import numpy as np
import pytest

from tests.wiener_reference import RUNNERS, make_inputs, rel_err


@pytest.fixture(params=sorted(RUNNERS))
def run(request):
    """The backend's runner: numpy in, numpy out."""
    return RUNNERS[request.param]


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
