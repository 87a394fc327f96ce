"""Tests of the xumx-sliCQ losses (xumx_slicq/losses.py): combination MSE, multi-domain SI-SDR, gradients."""

import itertools

import pytest
import torch

from xumx_slicq.losses import MultiDomainLoss, combination_loss, combination_subsets, subset_matrix, subset_sisdr_loss
from xumx_slicq.model import XUMXSliCQ
from xumx_slicq.transforms import mix_phase


def random_blocks(nb_samples, nb_targets, seed, shapes=((3, 4, 16), (1, 4, 28), (5, 4, 8))):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(nb_samples, nb_targets, 2, *s, generator=gen, dtype=torch.float64) for s in shapes]


def brute_force_combination(estimates, targets):
    """The definition, literally: every subset, every block, sum then MSE; mean over subsets then blocks."""
    nb_targets = estimates[0].shape[1]
    if nb_targets == 1:
        subsets = [(0,)]
    else:
        subsets = [c for r in range(1, nb_targets) for c in itertools.combinations(range(nb_targets), r)]
    per_block = []
    for e, t in zip(estimates, targets):
        terms = [torch.nn.functional.mse_loss(e[:, list(s)].sum(1), t[:, list(s)].sum(1)) for s in subsets]
        per_block.append(sum(terms) / len(subsets))
    return sum(per_block) / len(per_block)


# ---------------------------------------------------------------------------------------------- subsets
def test_subsets():
    subsets = combination_subsets(4)
    assert len(subsets) == 14
    assert sum(len(s) == 1 for s in subsets) == 4 and sum(len(s) == 2 for s in subsets) == 6
    assert sum(len(s) == 3 for s in subsets) == 4 and len(set(subsets)) == 14
    assert subset_matrix(4).sum().item() == 4 * 1 + 6 * 2 + 4 * 3
    assert combination_subsets(1) == [(0,)]
    with pytest.raises(ValueError, match="losses.py"):
        combination_subsets(0)


# ---------------------------------------------------------------------------------------------- combination MSE
@pytest.mark.parametrize("nb_targets", [1, 2, 3, 4, 5])
def test_combination_loss_equals_brute_force(nb_targets):
    est = random_blocks(2, nb_targets, seed=nb_targets)
    ref = random_blocks(2, nb_targets, seed=100 + nb_targets)
    got = combination_loss(est, ref)
    torch.testing.assert_close(got, brute_force_combination(est, ref), rtol=1e-12, atol=0)


def test_combination_loss_weights_blocks_equally():
    # one block with a large error, one small: the mean over blocks, not over all coefficients
    est = [torch.ones(1, 4, 1, 1, 1, 2), torch.zeros(1, 4, 1, 50, 4, 2)]
    ref = [torch.zeros(1, 4, 1, 1, 1, 2), torch.zeros(1, 4, 1, 50, 4, 2)]
    # block 0: subset sums of ones: sizes 1 (x4), 2 (x6), 3 (x4): (4*1 + 6*4 + 4*9) / 14 = 64 / 14
    torch.testing.assert_close(combination_loss(est, ref), torch.tensor(64 / 14 / 2))


def test_combination_loss_zero_for_perfect_and_positive_otherwise():
    ref = random_blocks(3, 4, seed=7)
    assert combination_loss(ref, [r.clone() for r in ref]).item() == 0.0
    noisy = [r + 0.01 * torch.randn_like(r) for r in ref]
    assert combination_loss(noisy, ref).item() > 0


def test_combination_loss_rejects_bad_input():
    ref = random_blocks(1, 4, seed=1)
    with pytest.raises(ValueError, match="losses.py"):
        combination_loss(ref[:2], ref)
    with pytest.raises(ValueError, match="losses.py"):
        combination_loss([ref[0][:, :3]] + ref[1:], ref)
    with pytest.raises(TypeError, match="magnitudes"):
        combination_loss([r.to(torch.complex128) for r in ref], ref)


# ---------------------------------------------------------------------------------------------- time domain
def make_batch(slicqt, nb_samples=2, length=20000, seed=0, coherent=False, silent=None, dtype=torch.float64):
    """Target waveforms, their sliCQ magnitudes, the mixture's complex sliCQ."""
    gen = torch.Generator().manual_seed(seed)
    if coherent:
        # scaled copies of one signal: every target has the mixture's phase, so mix-phase inversion is exact
        base = torch.randn(nb_samples, 1, 2, length, generator=gen, dtype=dtype)
        waves = base * torch.tensor([1.0, 0.5, 0.25, 2.0], dtype=dtype)[None, :, None, None]
    else:
        waves = torch.randn(nb_samples, 4, 2, length, generator=gen, dtype=dtype) * 0.1
    if silent is not None:
        waves[:, silent] = 0
    mixture = slicqt(waves.sum(1))
    target_mags = [b.abs() for b in slicqt(waves.reshape(-1, 2, length))]
    # (nb_samples * nb_targets, ...) -> (nb_samples, nb_targets, ...)
    target_mags = [b.reshape(nb_samples, 4, *b.shape[1:]) for b in target_mags]
    return waves, target_mags, mixture


@pytest.mark.parametrize("impl", ["gram", "auraloss"])
def test_time_term_equals_fourteen_separate_inverses(slicqt, impl):
    import auraloss

    waves, mags, mix = make_batch(slicqt, length=15000)
    est = [m * (0.5 + torch.rand_like(m)) for m in mags]
    loss = MultiDomainLoss(slicqt, sisdr=impl)
    fast = loss.time_loss(est, mix, waves)
    # reference: invert each subset's summed mix-phase estimate on its own
    sisdr = auraloss.time.SISDRLoss()
    per_subset = []
    for subset in combination_subsets(4):
        summed = [e[:, list(subset)].sum(1) for e in est]  # (nb_samples, nb_channels, ...)
        wave = slicqt.inverse([mix_phase(s, m) for s, m in zip(summed, mix)], waves.shape[-1])
        per_subset.append(sisdr(wave, waves[:, list(subset)].sum(1)))
    torch.testing.assert_close(fast, torch.stack(per_subset).mean(), rtol=1e-9, atol=1e-9)


def auraloss_subsets(est_wave, ref_wave):
    import auraloss

    m = subset_matrix(est_wave.shape[1], dtype=est_wave.dtype)
    # (nb_samples, nb_targets, nb_channels, L) -> (nb_samples, nb_subsets, nb_channels, L)
    sub = lambda w: torch.einsum("sk,bkcl->bscl", m, w)  # noqa: E731
    return auraloss.time.SISDRLoss()(sub(est_wave), sub(ref_wave))


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_gram_sisdr_equals_auraloss_values_and_gradients(dtype, rtol):
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 4, 2, 5000, generator=gen, dtype=torch.float64)
    ref[1, 2] = 0.0  # a silent target
    ref[2, :, 1] += 0.3  # DC offsets (zero-mean removes them)
    for noise in (1.0, 0.1, 1e-3):
        est0 = (ref + noise * torch.randn(ref.shape, generator=gen, dtype=torch.float64)).to(dtype)
        est_a = est0.clone().requires_grad_(True)
        est_b = est0.clone().requires_grad_(True)
        a = subset_sisdr_loss(est_a, ref.to(dtype))
        b = auraloss_subsets(est_b, ref.to(dtype))
        a.backward()
        b.backward()
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol)
        torch.testing.assert_close(est_a.grad, est_b.grad, rtol=10 * rtol, atol=10 * rtol * est_b.grad.abs().max())


def test_mix_phase_is_polar_with_the_mixture_angle_held_constant(slicqt):
    waves, mags, mix = make_batch(slicqt, length=6000)
    mix = [m.clone() for m in mix]
    mix[0][..., 0] = 0  # exact zeros take phase 0, like angle(0)
    mix = [m.requires_grad_(True) for m in mix]
    mags = [m.clone().requires_grad_(True) for m in mags]
    ours = [mix_phase(e, m) for e, m in zip(mags, mix)]  # (nb_samples, nb_targets, nb_channels, ...)
    for a, e, m in zip(ours, mags, mix):
        expected = torch.polar(e.detach(), torch.angle(m.detach()).unsqueeze(1).expand_as(e))
        torch.testing.assert_close(a.detach(), expected, rtol=1e-12, atol=1e-12)
    sum(a.real.sum() + a.imag.sum() for a in ours).backward()
    assert all(m.grad is None for m in mix)  # the mixture phase is a constant
    assert all(e.grad is not None and e.grad.abs().sum() > 0 for e in mags)


def test_perfect_estimates_minimise_both_terms(slicqt):
    waves, mags, mix = make_batch(slicqt, coherent=True)
    loss = MultiDomainLoss(slicqt, mcoef=0.1)
    perfect = loss.terms([m.clone() for m in mags], mags, mix, waves)
    assert perfect["mse"].item() == 0.0
    # phase-coherent targets: the mix-phase inverse of perfect magnitudes is the true waveform (SI-SDR > 100 dB)
    assert perfect["sisdr"].item() < -100
    torch.testing.assert_close(perfect["total"], perfect["mse"] + 0.1 * perfect["sisdr"])
    gen = torch.Generator().manual_seed(1)
    worse = loss.terms([m * (1 + 0.1 * torch.rand(m.shape, generator=gen, dtype=m.dtype)) for m in mags], mags,
                       mix, waves)
    assert worse["mse"] > perfect["mse"] and worse["sisdr"] > perfect["sisdr"] + 50


@pytest.mark.parametrize("silent", [0, [1, 3]])
def test_silent_targets_give_finite_loss_and_gradient(slicqt, silent):
    waves, mags, mix = make_batch(slicqt, silent=silent, dtype=torch.float32)
    est = [(m + 0.01).requires_grad_(True) for m in mags]
    terms = MultiDomainLoss(slicqt).terms(est, mags, mix, waves)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    assert all(torch.isfinite(e.grad).all() for e in est)
    # silent estimates too (all-zero estimates of a silent target)
    zeros = [torch.zeros_like(m, requires_grad=True) for m in mags]
    t0 = MultiDomainLoss(slicqt).terms(zeros, mags, mix, waves)
    t0["total"].backward()
    assert all(torch.isfinite(v) for v in t0.values()) and all(torch.isfinite(z.grad).all() for z in zeros)


def test_time_domain_optional(slicqt):
    waves, mags, mix = make_batch(slicqt, length=8000)
    est = [m * 0.9 for m in mags]
    off = MultiDomainLoss(slicqt, time_domain=False).terms(est, mags)
    assert set(off) == {"total", "mse"} and torch.equal(off["total"], off["mse"])
    on = MultiDomainLoss(slicqt, mcoef=0.5).terms(est, mags, mix, waves)
    assert set(on) == {"total", "mse", "sisdr"}
    torch.testing.assert_close(on["total"], on["mse"] + 0.5 * on["sisdr"])
    with pytest.raises(ValueError, match="time_domain=False"):
        MultiDomainLoss(slicqt).terms(est, mags)
    with pytest.raises(ValueError, match="target waveforms"):
        MultiDomainLoss(slicqt).terms(est, mags, mix, waves[:, :3])


# ---------------------------------------------------------------------------------------------- gradients
@pytest.fixture(scope="module")
def model_batch(slicqt):
    torch.manual_seed(0)
    model = XUMXSliCQ().train()
    waves, mags, mix = make_batch(slicqt, nb_samples=2, length=44100, seed=3, dtype=torch.float32)
    return model, waves, mags, mix


@pytest.mark.parametrize("term", ["total", "mse", "sisdr"])
def test_gradients_reach_every_learned_parameter(slicqt, model_batch, term):
    model, waves, mags, mix = model_batch
    model.zero_grad(set_to_none=True)
    estimates = model([m.abs() for m in mix])
    terms = MultiDomainLoss(slicqt, mcoef=0.1).terms(estimates, mags, mix, waves)
    terms[term].backward()
    names = [n for n, _ in model.named_parameters()]
    # per learned block: mean, scale, 4 conv weights, 4 x BN (weight, bias), final weight + bias = 16
    assert len(names) == 51 * 16
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{term}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"{term}: non-finite gradient for {name}"
        assert p.grad.abs().max() > 0, f"{term}: zero gradient for {name}"


def test_sisdr_gradient_is_real_and_descends(slicqt, model_batch):
    # one SGD step on the SI-SDR term alone lowers it: the time-domain term is not a constant
    model, waves, mags, mix = model_batch
    loss = MultiDomainLoss(slicqt)
    inputs = [m.abs() for m in mix]
    model.zero_grad(set_to_none=True)
    before = loss.time_loss(model(inputs), mix, waves)
    before.backward()
    with torch.no_grad():
        saved = [p.clone() for p in model.parameters()]
        for p in model.parameters():
            p -= 1e-3 * p.grad
        after = loss.time_loss(model(inputs), mix, waves)
        for p, s in zip(model.parameters(), saved):
            p.copy_(s)
    assert after < before


# ---------------------------------------------------------------------------------------------- benchmark script
def test_loss_cost_benchmark_runs(tmp_path):
    import json
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmark.loss_cost", "--help"], cwd=root, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "usage:" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "benchmark.loss_cost", "--batch", "1", "--seconds", "0.3",
                           "--repeats", "1", "--warmup", "0", "--threads", "1", "--output", str(tmp_path)],
                          cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "loss_cost_1x0.3s_t1.json").read_text())
    assert out["parameters"]["conv_bn"] == 6_669_912
    for mode in ("mse", "mse+sisdr", "mse+sisdr-auraloss"):
        r = out["results"][mode]
        assert r["step_s"]["median"] > 0 and set(r["last_loss"]) >= {"total", "mse"}
    gram, aura = out["results"]["mse+sisdr"]["last_loss"], out["results"]["mse+sisdr-auraloss"]["last_loss"]
    assert abs(gram["sisdr"] - aura["sisdr"]) < 1e-3 * max(1.0, abs(aura["sisdr"]))
    assert set(out["sisdr_overhead"]) == {"mse+sisdr", "mse+sisdr-auraloss"}
