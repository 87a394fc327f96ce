"""Tests of the UMX / X-UMX baselines: STFT front-end, models, losses, inference helper."""

import copy
import itertools
import json

import numpy as np
import pytest
import torch

from xumx_slicq.baselines import (
    ARCHITECTURES,
    ISTFT,
    STFT,
    UMX,
    XUMX,
    MultiDomainLoss,
    build_baseline,
    compute_input_stats,
    freq_combination_loss,
    magnitude,
    time_combination_loss,
    weighted_sdr,
    wiener_postprocess,
)
from xumx_slicq.baselines.losses import combination_subsets

TARGETS = ("vocals", "drums", "bass", "other")

# a small configuration for the behavioural tests (the full one is used where sizes matter)
SMALL = dict(n_fft=256, n_hop=64, max_bin=90, hidden_size=16)


def expected_stack_params(nb_channels, max_bin, nb_bins, hidden, nb_layers):
    """Parameter count of one target stack, counted layer by layer from the architecture."""
    lstm_units = hidden // 2
    n = 2 * max_bin  # input mean + scale
    n += nb_channels * max_bin * hidden + 2 * hidden  # fc1 + bn1
    for layer in range(nb_layers):
        inp = hidden if layer == 0 else 2 * lstm_units
        # per direction: input and recurrent weights of 4 gates, two bias vectors
        n += 2 * (4 * lstm_units * (inp + lstm_units) + 2 * 4 * lstm_units)
    n += 2 * hidden * hidden + 2 * hidden  # fc2 + bn2
    n += hidden * nb_channels * nb_bins + 2 * nb_channels * nb_bins  # fc3 + bn3
    n += 2 * nb_bins  # output scale + mean
    return n


@pytest.fixture(scope="module", params=["umx", "xumx"])
def full_model(request):
    torch.manual_seed(0)
    return build_baseline(request.param)


# ---------------------------------------------------------------------------------------------- sizes
def test_parameter_count_per_target(full_model):
    counts = full_model.parameters_per_target()
    assert tuple(counts) == TARGETS == full_model.targets
    assert full_model.max_bin == 1487 and full_model.nb_bins == 2049
    formula = expected_stack_params(2, 1487, 2049, 512, 3)
    assert formula == 8_893_348
    for name, count in counts.items():
        assert count == 8_893_348, f"{name}: {count}"
    assert sum(p.numel() for p in full_model.parameters()) == 4 * 8_893_348


def test_xumx_has_no_extra_parameters():
    a, b = UMX(**SMALL), XUMX(**SMALL)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("batch", [1, 2])
def test_forward_shapes(full_model, batch):
    full_model.train()
    mag = torch.rand(batch, 2, 2049, 9)
    out = full_model(mag)
    assert out.shape == (batch, 4, 2, 2049, 9)
    assert torch.isfinite(out).all() and (out >= 0).all()


def test_forward_short_input_eval(full_model):
    full_model.eval()
    for nb_frames in (1, 2):
        out = full_model(torch.rand(1, 2, 2049, nb_frames))
        assert out.shape == (1, 4, 2, 2049, nb_frames)
    full_model.train()


def test_forward_rejects_bad_shape(full_model):
    with pytest.raises(ValueError, match="umx.py"):
        full_model(torch.rand(1, 2, 2048, 4))
    with pytest.raises(ValueError, match="umx.py"):
        full_model(torch.rand(2, 2049, 4))


def test_output_masks_mixture(full_model):
    """Estimates are a non-negative multiple of the mixture: zero where the mixture is zero."""
    full_model.eval()
    mag = torch.rand(1, 2, 2049, 5)
    mag[:, :, 100:200] = 0.0
    out = full_model(mag)
    assert (out[:, :, :, 100:200] == 0).all()
    full_model.train()


# ---------------------------------------------------------------------------------------------- gradients
def test_backward_reaches_every_parameter(full_model):
    full_model.train()
    full_model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    mag = torch.rand(2, 2, 2049, 12)
    out = full_model(mag)
    (out**2).mean().backward()
    for name, p in full_model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"
    full_model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------- bridges
def _perturbed_outputs(cls, param_path):
    """Outputs of a model before and after perturbing one parameter of the vocals stack."""
    torch.manual_seed(3)
    model = cls(**SMALL).eval()
    mag = torch.rand(2, 2, 129, 7)
    with torch.no_grad():
        before = model(mag)
        other = copy.deepcopy(model)
        param = dict(other.stacks["vocals"].named_parameters())[param_path]
        param.add_(0.5 * torch.randn_like(param))
        after = other(mag)
    return before, after


@pytest.mark.parametrize("param_path", ["fc1.weight", "lstm.weight_hh_l0", "input_scale"])
def test_umx_targets_independent(param_path):
    before, after = _perturbed_outputs(UMX, param_path)
    assert not torch.allclose(before[:, 0], after[:, 0])  # vocals changed
    assert torch.equal(before[:, 1:], after[:, 1:])  # the others did not move at all


@pytest.mark.parametrize("param_path", ["fc1.weight", "lstm.weight_hh_l0", "input_scale"])
def test_xumx_bridges_couple_targets(param_path):
    before, after = _perturbed_outputs(XUMX, param_path)
    for t in range(4):
        assert (before[:, t] - after[:, t]).abs().max() > 1e-4, f"target {t} unaffected by {param_path}"


def test_xumx_decoder_stays_private():
    """Bridges sit before the decoders: a vocals decoder change must not reach other targets."""
    before, after = _perturbed_outputs(XUMX, "fc3.weight")
    assert not torch.allclose(before[:, 0], after[:, 0])
    assert torch.equal(before[:, 1:], after[:, 1:])


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("arch", ["umx", "xumx"])
def test_config_round_trip(arch):
    torch.manual_seed(4)
    model = build_baseline(arch, SMALL).eval()
    cfg = json.loads(json.dumps(model.get_config()))
    rebuilt = ARCHITECTURES[arch].from_config(cfg).eval()
    assert type(rebuilt) is type(model) and rebuilt.arch == arch
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert not any("window" in k for k in model.state_dict())
    mag = torch.rand(1, 2, 129, 6)
    with torch.no_grad():
        assert torch.equal(model(mag), rebuilt(mag))


def test_build_baseline_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        build_baseline("demucs")


def test_input_scaler_from_magnitudes():
    torch.manual_seed(5)
    chunks = [torch.rand(2, 2, 129, n) * torch.linspace(0.1, 3, 129)[:, None] + 5 for n in (7, 13, 4)]
    mean, std = compute_input_stats(chunks, nb_bins=129)
    # reference: all values of each bin pooled together, float64
    pooled = torch.cat([c.double().permute(2, 0, 1, 3).reshape(129, -1) for c in chunks], dim=1)
    assert torch.allclose(mean.double(), pooled.mean(1), atol=1e-5)
    assert torch.allclose(std.double(), pooled.std(1, unbiased=False), rtol=1e-4)
    model = UMX(**SMALL)
    model.init_input_scaler(chunks)
    for stack in model.stacks.values():
        assert torch.allclose(stack.input_mean, mean[:90])
        assert torch.allclose(stack.input_scale, 1 / std[:90])
    # a constant bin gets a floored, finite scale
    flat = torch.ones(1, 2, 129, 5)
    model.init_input_scaler([flat, flat * 2])
    assert torch.isfinite(model.stacks["bass"].input_scale).all()


# ---------------------------------------------------------------------------------------------- STFT
@pytest.mark.parametrize("length", [1, 100, 2048, 2049, 3072, 4097, 44100 + 17])
def test_stft_istft_round_trip_exact(length):
    torch.manual_seed(6)
    x = torch.randn(2, 2, length, dtype=torch.float64)
    stft, istft = STFT(4096, 1024), ISTFT(4096, 1024)
    X = stft(x)
    assert X.is_complex() and X.shape == (2, 2, 2049, 1 + length // 1024)
    y = istft(X, length=length)
    assert y.shape == x.shape
    assert (y - x).abs().max().item() < 1e-10


def test_stft_matches_direct_dft():
    """Frame t is the rfft of the Hann-windowed, reflection-padded signal starting at t * hop."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(10000)
    X = STFT(4096, 1024)(torch.from_numpy(x)[None, None]).numpy()[0, 0]
    padded = np.pad(x, 2048, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(4096) / 4096)  # periodic Hann
    for t in (0, 3, X.shape[1] - 1):
        ref = np.fft.rfft(window * padded[t * 1024 : t * 1024 + 4096])
        np.testing.assert_allclose(X[:, t], ref, atol=1e-8)
    assert np.allclose(magnitude(torch.from_numpy(X)).numpy(), np.abs(X))


def test_istft_extra_leading_axes():
    torch.manual_seed(8)
    x = torch.randn(2, 3, 2, 5000, dtype=torch.float64)
    X = STFT(4096, 1024)(x)
    assert X.shape == (2, 3, 2, 2049, 5)
    assert (ISTFT(4096, 1024)(X, length=5000) - x).abs().max() < 1e-10


# ---------------------------------------------------------------------------------------------- losses
def _brute_force_wsdr(y, y_hat, x, eps=1e-8):
    """Weighted SDR of one signal pair, float64 numpy, straight from the formula."""
    z, z_hat = x - y, x - y_hat

    def cos(a, b):
        return np.dot(a, b) / (np.sqrt(np.dot(a, a) + eps) * np.sqrt(np.dot(b, b) + eps) + eps)

    alpha = np.dot(y, y) / (np.dot(y, y) + np.dot(z, z) + eps)
    return -alpha * cos(y, y_hat) - (1 - alpha) * cos(z, z_hat)


def _brute_force_losses(est_mag, ref_mag, est_wave, ref_wave, mix_wave):
    est_mag, ref_mag = est_mag.double().numpy(), ref_mag.double().numpy()
    est_wave, ref_wave, mix_wave = est_wave.double().numpy(), ref_wave.double().numpy(), mix_wave.double().numpy()
    freq_terms, time_terms = [], []
    for size in (1, 2, 3):
        for subset in itertools.combinations(range(4), size):
            s = list(subset)
            freq_terms.append(np.mean((est_mag[:, s].sum(1) - ref_mag[:, s].sum(1)) ** 2))
            per_signal = []
            for b in range(est_wave.shape[0]):
                for c in range(est_wave.shape[2]):
                    per_signal.append(
                        _brute_force_wsdr(ref_wave[b, s, c].sum(0), est_wave[b, s, c].sum(0), mix_wave[b, c])
                    )
            time_terms.append(np.mean(per_signal))
    assert len(freq_terms) == 14
    return np.mean(freq_terms), np.mean(time_terms)


def test_combination_subsets():
    subsets = combination_subsets(4)
    assert len(subsets) == len(set(subsets)) == 14
    assert all(0 < len(s) < 4 for s in subsets)


def test_combination_losses_refuse_a_single_target():
    # X-UMX's combination needs proper subsets; the sliCQ losses' one-target convention must not leak in
    x = torch.rand(1, 1, 2, 100)
    with pytest.raises(ValueError, match=">= 2 targets"):
        combination_subsets(1)
    with pytest.raises(ValueError, match=">= 2 targets"):
        freq_combination_loss(x, x)
    with pytest.raises(ValueError, match=">= 2 targets"):
        time_combination_loss(x, x, x[:, 0])


def test_combination_losses_match_brute_force():
    torch.manual_seed(9)
    est_mag, ref_mag = torch.rand(2, 4, 2, 33, 5), torch.rand(2, 4, 2, 33, 5)
    ref_wave = torch.randn(2, 4, 2, 300)
    est_wave = ref_wave + 0.7 * torch.randn(2, 4, 2, 300)
    mix_wave = ref_wave.sum(1) + 0.1 * torch.randn(2, 2, 300)
    freq_ref, time_ref = _brute_force_losses(est_mag, ref_mag, est_wave, ref_wave, mix_wave)
    assert freq_combination_loss(est_mag, ref_mag).item() == pytest.approx(freq_ref, rel=1e-5)
    assert time_combination_loss(est_wave, ref_wave, mix_wave).item() == pytest.approx(time_ref, rel=1e-5)


def _direct_combination_losses(est_mag, ref_mag, est_wave, ref_wave, mix_wave):
    """The combination losses with every subset's summed signals built explicitly (differentiable)."""
    freq, time = [], []
    for subset in combination_subsets(est_mag.shape[1]):
        s = list(subset)
        freq.append(((est_mag[:, s].sum(1) - ref_mag[:, s].sum(1)) ** 2).mean())
        time.append(weighted_sdr(est_wave[:, s].sum(1), ref_wave[:, s].sum(1), mix_wave).mean())
    return torch.stack(freq).mean(), torch.stack(time).mean()


def test_combination_losses_gradients_match_direct_form():
    # the Gram-matrix form must give the same gradients as summing every subset's signals, also with a
    # silent target (no NaN)
    torch.manual_seed(13)
    ref_wave = torch.randn(2, 4, 2, 400, dtype=torch.float64)
    ref_wave[:, 3] = 0
    mix_wave = ref_wave.sum(1)
    est_wave = (ref_wave + 0.3 * torch.randn_like(ref_wave)).requires_grad_(True)
    est_mag = torch.rand(2, 4, 2, 17, 6, dtype=torch.float64, requires_grad=True)
    ref_mag = torch.rand(2, 4, 2, 17, 6, dtype=torch.float64)
    grads = []
    for fn in (lambda: (freq_combination_loss(est_mag, ref_mag), time_combination_loss(est_wave, ref_wave, mix_wave)),
               lambda: _direct_combination_losses(est_mag, ref_mag, est_wave, ref_wave, mix_wave)):
        est_wave.grad = est_mag.grad = None
        freq, time = fn()
        (freq + 10 * time).backward()
        grads.append((est_mag.grad.clone(), est_wave.grad.clone()))
    for fast, direct in zip(*grads):
        assert torch.isfinite(fast).all()
        assert torch.allclose(fast, direct, rtol=1e-9, atol=1e-12)


def test_weighted_sdr_bounds():
    torch.manual_seed(10)
    y, n = torch.randn(3, 500), torch.randn(3, 500)
    x = y + n
    assert torch.allclose(weighted_sdr(y, y, x), torch.full((3,), -1.0), atol=1e-6)
    # a sign-flipped estimate is the worst case for the target part
    assert (weighted_sdr(-y, y, x) > weighted_sdr(y + 0.1 * n, y, x)).all()
    worse = weighted_sdr(y + 2 * torch.randn(3, 500), y, x)
    assert ((worse > -1) & (worse < 1)).all()


def test_multi_domain_loss_matches_brute_force():
    torch.manual_seed(11)
    n_fft, n_hop, length = 256, 64, 1000
    ref_wave = torch.randn(2, 4, 2, length, dtype=torch.float64)
    mix_wave = ref_wave.sum(1)
    loss = MultiDomainLoss(mcoef=10.0, n_fft=n_fft, n_hop=n_hop)
    mix_stft = loss.stft(mix_wave)
    est_mag = (torch.rand(2, 4, 2, n_fft // 2 + 1, mix_stft.shape[-1], dtype=torch.float64) * mix_stft.abs()[:, None])
    est_mag.requires_grad_(True)
    terms = loss.terms(est_mag, mix_stft, ref_wave, mix_wave)
    # independent path: torch.stft / torch.istft directly, phase via exp(i angle)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    ref_mag = torch.stft(
        ref_wave.reshape(-1, length), n_fft, n_hop, window=window, center=True, return_complex=True
    ).abs().reshape(est_mag.shape)
    est_c = est_mag.detach() * torch.exp(1j * torch.angle(mix_stft))[:, None]
    est_wave = torch.istft(
        est_c.reshape(-1, *est_c.shape[-2:]), n_fft, n_hop, window=window, center=True, length=length
    ).reshape(ref_wave.shape)
    freq_ref, time_ref = _brute_force_losses(est_mag.detach(), ref_mag, est_wave, ref_wave, mix_wave)
    assert terms["freq"].item() == pytest.approx(freq_ref, rel=1e-8)
    assert terms["time"].item() == pytest.approx(time_ref, rel=1e-8)
    assert terms["total"].item() == pytest.approx(freq_ref + 10.0 * time_ref, rel=1e-8)
    terms["total"].backward()
    assert est_mag.grad is not None and est_mag.grad.abs().sum() > 0
    # the time term alone also carries gradient (unlike the original sliCQ SI-SDR term)
    est_mag.grad = None
    loss.terms(est_mag, mix_stft, ref_wave, mix_wave)["time"].backward()
    assert est_mag.grad.abs().sum() > 0


def test_multi_domain_loss_perfect_estimate():
    torch.manual_seed(12)
    loss = MultiDomainLoss(n_fft=256, n_hop=64)
    ref_wave = torch.randn(1, 4, 2, 800, dtype=torch.float64)
    # only one target is non-silent, so the mixture phase is its phase and mixture-phase estimates are exact
    ref_wave[:, 1:] = 0
    mix_wave = ref_wave.sum(1)
    mix_stft = loss.stft(mix_wave)
    est_mag = loss.stft(ref_wave).abs()
    terms = loss.terms(est_mag, mix_stft, ref_wave, mix_wave)
    assert terms["freq"].item() < 1e-20
    # subsets with vocals: perfect (-1); subsets without: reference and estimate are silent (cos = 0 there,
    # and the noise part, the whole mixture, is matched exactly: -1 weighted by 1 - alpha = 1)
    assert terms["time"].item() == pytest.approx(-1.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("cls", [UMX, XUMX])
@pytest.mark.parametrize("length", [777, 5000])
def test_separate_mixture_phase_exact_length(cls, length):
    torch.manual_seed(13)
    model = cls(**SMALL).eval()
    wave = torch.randn(2, 2, length)
    out = model.separate(wave, niter=0)
    assert out.shape == (2, 4, 2, length)
    # same as the manual pipeline: STFT -> model -> mixture phase -> ISTFT
    with torch.no_grad():
        X = model.stft(wave)
        est = model(X.abs()) * torch.exp(1j * torch.angle(X))[:, None]
        manual = model.istft(est, length=length)
    assert torch.allclose(out, manual, atol=1e-5)


def test_separate_softmask_and_residual_sum_to_mixture():
    torch.manual_seed(14)
    model = XUMX(**SMALL).eval()
    wave = torch.randn(1, 2, 3000, dtype=torch.float64)
    model = model.double()
    soft = model.separate(wave, niter=0, softmask=True)
    assert soft.shape == (1, 4, 2, 3000)
    assert (soft.sum(1) - wave).abs().max() < 1e-8
    resid = model.separate(wave, niter=0, residual=True)
    assert resid.shape == (1, 5, 2, 3000)
    assert (resid.sum(1) - wave).abs().max() < 1e-8


def test_separate_rejects_bad_input():
    model = UMX(**SMALL)
    with pytest.raises(ValueError, match="separate"):
        model.separate(torch.randn(2, 1000))


def test_separate_with_wiener_em():
    from xumx_slicq.wiener import wiener

    torch.manual_seed(15)
    model = UMX(**SMALL).eval().double()
    length = 64 * 40 + 5
    wave = torch.randn(1, 2, length, dtype=torch.float64)
    out = model.separate(wave, niter=1, wiener_win_len=300)
    assert out.shape == (1, 4, 2, length) and torch.isfinite(out).all()
    with torch.no_grad():
        X = model.stft(wave)
        est = model(X.abs())
    nb_frames = X.shape[-1]
    # one window covering the song = one direct call in norbert layout (T, F, C, S)
    whole = wiener_postprocess(est, X, niter=1, wiener_win_len=None)
    direct = wiener(est[0].permute(3, 2, 1, 0), X[0].permute(2, 1, 0), iterations=1)
    assert torch.allclose(whole[0].permute(3, 2, 1, 0), direct, atol=1e-8)
    # windows are independent calls on consecutive frame ranges
    win = 16
    windowed = wiener_postprocess(est, X, niter=1, wiener_win_len=win)
    for start in range(0, nb_frames, win):
        stop = min(nb_frames, start + win)
        part = wiener(est[0, ..., start:stop].permute(3, 2, 1, 0), X[0, ..., start:stop].permute(2, 1, 0), iterations=1)
        assert torch.allclose(windowed[0, ..., start:stop].permute(3, 2, 1, 0), part, atol=1e-8)
    # with the residual as a fifth source the Wiener gains add up to (nearly) the identity
    resid = model.separate(wave, niter=1, residual=True)
    assert resid.shape == (1, 5, 2, length)
    assert (resid.sum(1) - wave).abs().max() < 1e-3 * wave.abs().max()
