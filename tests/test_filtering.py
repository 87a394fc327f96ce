"""Tests for xumx_slicq/filtering.py: wiener_blocks, the sliCQ-block Wiener-EM and its backend dispatch."""

import pytest
import torch

import xumx_slicq.filtering as filtering
from tests.wiener_reference import TOL, rel_err
from xumx_slicq.filtering import wiener_blocks
from xumx_slicq.wiener import wiener


def make_blocks(slicqt, seed, channels=2, seconds=0.5, dtype=torch.float32, target_channels=None, loud=0.2):
    """Mixture blocks of random audio (standard deviation `loud`) and random magnitude estimates of 4 targets."""
    gen = torch.Generator().manual_seed(seed)
    mix = slicqt(torch.randn(1, channels, int(seconds * 44100), generator=gen, dtype=dtype) * loud)
    tch = channels if target_channels is None else target_channels
    est = [m[:, :tch].abs().unsqueeze(1) * torch.rand(1, 4, 1, 1, 1, 1, generator=gen, dtype=dtype) for m in mix]
    return est, mix


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_each_bin_is_wiener_on_its_frames(slicqt, backend):
    """Every (sample, bin) of a block is one problem whose frames are its (slice, t) grid, slice-major, with one
    normaliser per block (the loudest blocks of this audio exceed scale_factor 10, the others do not)."""
    est, mix = make_blocks(slicqt, 0, dtype=torch.float64)
    opts = dict(iterations=2, softmask=False, residual=True)
    out = wiener_blocks(est, mix, backend=backend, **opts)
    assert max(float(m.abs().max()) for m in mix) > 10.0 > min(float(m.abs().max()) for m in mix)
    for k in range(len(mix)):
        e, m, y = est[k], mix[k], out[k]
        assert y.shape == (1, 5) + tuple(m.shape[1:]) and y.dtype == m.dtype
        for b in range(m.shape[2]):
            # (C, S, T) -> (S, T, C) -> (S*T, 1, C)
            x = m[0, :, b].permute(1, 2, 0).reshape(-1, 1, m.shape[1])
            # (J, C, S, T) -> (S, T, C, J) -> (S*T, 1, C, J)
            v = e[0, :, :, b].permute(2, 3, 1, 0).reshape(-1, 1, e.shape[2], e.shape[1])
            # the block's normaliser max(1, max|mix_b| / 10), reproduced on one bin by its scale_factor
            scale = max(1.0, float(m.abs().max()) / 10.0)
            ref = wiener(v, x, **(dict(opts, scale_factor=float(x.abs().max()) / scale) if scale > 1.0 else opts))
            # (S*T, 1, C, J') -> (S, T, C, J') -> (J', C, S, T)
            ref = ref.reshape(m.shape[3], m.shape[4], m.shape[1], -1).permute(3, 2, 0, 1)
            assert rel_err(y[0, :, :, b].numpy(), ref.numpy()) <= 1e-6, (k, b)


@pytest.mark.parametrize("channels,target_channels", [(2, 2), (2, 1), (1, 1), (3, 3)])
def test_backends_agree(slicqt, channels, target_channels):
    est, mix = make_blocks(slicqt, channels, channels=channels, target_channels=target_channels)
    for iterations, softmask, residual in ((0, True, False), (1, False, False), (2, True, True)):
        opts = dict(iterations=iterations, softmask=softmask, residual=residual)
        a = wiener_blocks(est, mix, backend="torch", **opts)
        b = wiener_blocks(est, mix, backend="numba", **opts)
        assert [x.shape for x in a] == [x.shape for x in b] and all(x.dtype == torch.complex64 for x in b)
        scale = max(float(x.abs().max()) for x in a)
        assert max(float((x - y).abs().max()) for x, y in zip(a, b)) <= TOL * scale


def test_residual_blocks_sum_to_the_mixture(slicqt):
    # the sqrt(eps) regulariser is the only departure from the sum: loud audio and no normalisation
    # (scale_factor above every |mix|) make it negligible
    est, mix = make_blocks(slicqt, 5, dtype=torch.float64, loud=100.0)
    for backend in ("torch", "numba"):
        out = wiener_blocks(est, mix, backend=backend, iterations=1, residual=True, scale_factor=1e9)
        assert max(rel_err(y.sum(1).numpy(), m.numpy()) for y, m in zip(out, mix)) <= 1e-5


def test_numba_backend_runs_the_block_kernels(slicqt, monkeypatch):
    calls = []
    real = filtering.wiener_blocks_numba
    monkeypatch.setattr(filtering, "wiener_blocks_numba", lambda *a, **k: calls.append(k) or real(*a, **k))
    est, mix = make_blocks(slicqt, 6)
    wiener_blocks(est, mix, backend="torch")
    assert not calls
    wiener_blocks(est, mix, backend="numba", iterations=2, scale_factor=3.0)
    assert calls == [dict(iterations=2, softmask=False, residual=False, scale_factor=3.0, eps=1e-10)]


@pytest.mark.parametrize("backend", ["tensorrt", "Torch", "auto", "off", None])
def test_unknown_backend_is_refused(slicqt, backend):
    est, mix = make_blocks(slicqt, 7)
    with pytest.raises(ValueError, match=rf"wiener_blocks: unknown backend {backend!r}; choose one of 'torch', "
                                         r"'numba'"):
        wiener_blocks(est, mix, backend=backend)


def test_bad_blocks_raise_clear_errors(slicqt):
    est, mix = make_blocks(slicqt, 8)
    with pytest.raises(ValueError, match=rf"wiener_blocks: {len(est) - 1} target pieces for {len(mix)} mixture"):
        wiener_blocks(est[1:], mix)
    with pytest.raises(ValueError, match="block 3: targets .* do not match the mixture"):
        wiener_blocks(est[:3] + [est[4]] + est[4:], mix)
    with pytest.raises(ValueError, match="scale_factor must be > 0"):
        wiener_blocks(est, mix, backend="numba", scale_factor=-1.0)
