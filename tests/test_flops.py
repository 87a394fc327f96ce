"""The compute ceiling (xumx_slicq/flops.py): analytic MAC count vs torch's flop counter, the default network's
GMAC per audio second, the matmul peak, the receptive field."""

import pytest
import torch

from xumx_slicq import flops
from xumx_slicq.model import XUMXSliCQ
from xumx_slicq.transforms import SliCQT

SMALL = dict(slicq_config=dict(scale="bark", fbins=40, fmin=50.0, fmax=22050.0, sample_rate=44100),
             hidden_channels=(3, 4), bandwidth=16000.0)


@pytest.mark.parametrize("executed", [True, False])
@pytest.mark.parametrize("seconds", [0.15, 1.3])
def test_analytic_count_equals_flop_counter(executed, seconds):
    """Both counting conventions on a small model, short (encoder padding) and longer inputs, 1 and 2 samples."""
    torch.manual_seed(0)
    model = XUMXSliCQ(**SMALL).eval()
    n = int(seconds * 44100)
    for nb_samples in (1, 2):
        analytic = flops.network_macs(model, n, nb_samples=nb_samples, executed=executed)
        counted = flops.counted_macs(model, n, nb_samples=nb_samples, grad=not executed)
        assert analytic == counted > 0


def test_default_network_is_5_05_gmac_per_second():
    """FACTS.md section 10: 5.05 GMAC per second of stereo audio (flop counter on the inference path, 10 s)."""
    model = XUMXSliCQ()
    per_second = flops.macs_per_second(model, seconds=10.0)
    assert per_second / 1e9 == pytest.approx(5.05, abs=0.005)
    assert flops.macs_per_second(model, 10.0, executed=False) < per_second  # the padding's products excluded


def test_baseline_counts_its_lstm():
    """UMX: the LSTMs (which the flop counter alone misses) are added: 4 gates x hidden x (input + hidden) per
    frame, layer and direction."""
    from xumx_slicq.checkpoint import build_model

    model = build_model("umx", {"hidden_size": 32}).eval()
    n = 44100
    total = flops.network_macs(model, n)
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert lstms
    frames = model.stft(torch.zeros(1, 2, n)).shape[-1]
    lstm_share = sum(flops._lstm_macs(m, torch.zeros(frames, 1, m.input_size)) for m in lstms)
    h = 32 // 2 if lstms[0].bidirectional else 32
    assert lstm_share == frames * len(lstms) * sum(
        (2 if m.bidirectional else 1) * 4 * h * ((m.input_size if k == 0 else 2 * h) + h)
        for m in lstms[:1] for k in range(m.num_layers))
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(model.stft(torch.randn(1, 2, n)).abs())
    assert total == counter.get_total_flops() // 2 + lstm_share


def test_matmul_peak_restores_threads():
    before = torch.get_num_threads()
    peak = flops.matmul_peak_gmacs(threads=1, size=256, repeats=2)
    assert peak["gmacs"] > 0 and peak["threads"] == 1 and peak["gmacs"] >= peak["median_gmacs"]
    assert torch.get_num_threads() == before


def test_receptive_field_bounds_the_network():
    """Perturbing the input beyond the computed reach leaves the output around a point untouched (mixture phase,
    no Wiener-EM); perturbing it beyond the transform's reach but inside the network's changes it."""
    torch.manual_seed(0)
    model = XUMXSliCQ(**SMALL).eval()
    field = flops.receptive_field(model)
    slicqt = SliCQT(**model.slicq_config)
    assert field["path_samples"] == field["network_samples"] + slicqt.sllen
    widest = max(field["blocks"], key=lambda r: r["samples"])
    assert widest["frames"] == 2 * 2 * (widest["kernel"][1] - 1) + 1
    n = 6 * field["path_samples"]
    x = torch.randn(1, 2, n) * 0.1
    centre = n // 2
    far = x.clone()
    far[..., : centre - field["path_samples"] - slicqt.sllen] += 0.5  # beyond the reach (+ a slice of slack)
    near = x.clone()  # beyond the transform's own reach (a slice), inside the network's
    near[..., centre - slicqt.sllen - field["network_samples"] // 2 : centre - slicqt.sllen - 1000] += 0.5

    with torch.no_grad():
        def masks_at_centre(audio):
            blocks = [b.abs() for b in slicqt(audio)]
            out = slicqt.inverse([m[:, 0] * b for m, b in zip(model.masks(blocks), slicqt(audio))], n)
            return out[..., centre - 100 : centre + 100]

        base = masks_at_centre(x)
        assert torch.allclose(masks_at_centre(far), base, atol=1e-6)
        assert not torch.allclose(masks_at_centre(near), base, atol=1e-6)
