"""Tests of the chunked separator machinery."""

import stat

import numpy as np
import pytest
import torch

from xumx_slicq.separator import _tensor_reader, chunk_plan, chunked_apply


def local_process(x):
    """A stand-in for a model with finite reach (+-50 samples): (nb_samples, C, n) -> (nb_samples, 2, C, n)."""
    kernel = torch.hann_window(101, dtype=x.dtype)[None, None]
    nb, c, n = x.shape
    smooth = torch.nn.functional.conv1d(x.reshape(nb * c, 1, n), kernel, padding=50).reshape(nb, c, n)
    return torch.stack([smooth, x - smooth], dim=1)


def test_chunk_plan_tiles_and_merges_short_tail():
    assert chunk_plan(10, 4, 2) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_plan(9, 4, 2) == [(0, 4), (4, 9)]  # a 1-sample tail is shorter than the fade: merged
    assert chunk_plan(3, 4, 2) == [(0, 3)]
    assert chunk_plan(0, 4, 2) == []
    with pytest.raises(ValueError):
        chunk_plan(10, 1, 2)


@pytest.mark.parametrize("length", [1, 77, 1000, 1001, 4321])
@pytest.mark.parametrize("segment,context,fade", [(200, 100, 100), (333, 80, 60), (10_000, 100, 100)])
def test_chunked_equals_whole(length, segment, context, fade):
    x = torch.randn(2, 2, length, dtype=torch.float64)
    whole = local_process(x)
    out = torch.full_like(whole, float("nan"))
    covered = []
    for start, stop, piece in chunked_apply(local_process, _tensor_reader(x), length, segment, context, fade):
        assert piece.shape[-1] == stop - start
        out[..., start:stop] = piece
        covered.append((start, stop))
    # pieces tile [0, length) in order
    assert covered[0][0] == 0 and covered[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-12)


def test_crossfade_hides_boundary_errors():
    """With too little context the pieces disagree near boundaries, yet the output stays a convex mix."""
    x = torch.ones(1, 1, 3000, dtype=torch.float64)

    def offset_process(seg):  # output depends on where the segment starts: constant per segment
        return (seg * 0 + torch.rand(1, dtype=seg.dtype)).unsqueeze(1)

    pieces = list(chunked_apply(offset_process, _tensor_reader(x), 3000, 1000, 100, 200))
    out = torch.cat([p for _, _, p in pieces], dim=-1)
    assert out.shape[-1] == 3000
    assert torch.all(out >= 0) and torch.all(out <= 1)
    # no jump larger than the per-sample ramp step inside a cross-fade
    assert torch.diff(out[0, 0, 0]).abs().max() < 1.0 / 100


def test_tensor_reader_zero_pads():
    x = torch.arange(1, 6, dtype=torch.float32)[None, None]  # 1..5
    read = _tensor_reader(x)
    assert read(-2, 3).tolist() == [[[0, 0, 1, 2, 3]]]
    assert read(3, 8).tolist() == [[[4, 5, 0, 0, 0]]]
    assert read(-1, 7).shape[-1] == 8


# ----------------------------------------------------------------------------------------------------------------
# The separator with real models
# ----------------------------------------------------------------------------------------------------------------

import soundfile as sf  # noqa: E402

import xumx_slicq  # noqa: E402
from tests.helpers import randomise_batchnorm  # noqa: E402
from xumx_slicq.checkpoint import load_model, save_model  # noqa: E402
from xumx_slicq.model import XUMXSliCQ  # noqa: E402
from xumx_slicq.separator import Separator, load_separator  # noqa: E402

SR = 44100


def small_model(seed=0):
    """The default architecture with few channels: same blocks, kernels and reach, fast on CPU."""
    torch.manual_seed(seed)
    return randomise_batchnorm(XUMXSliCQ(hidden_channels=(4, 6)))


@pytest.fixture(scope="module")
def model():
    return small_model()


def test_separator_targets_and_shapes(model):
    sep = Separator(model, wiener="off")
    x = torch.randn(2, 2, SR)
    y = sep(x)
    assert y.shape == (2, 4, 2, SR) and sep.targets == ["vocals", "drums", "bass", "other"]
    assert torch.isfinite(y).all()
    sep_res = Separator(model, wiener="torch", residual=True)
    assert sep_res.targets[-1] == "residual"
    y = sep_res(x)
    assert y.shape == (2, 5, 2, SR)
    # with the residual the targets sum back to the mixture
    torch.testing.assert_close(y.sum(1), x, rtol=0, atol=2e-3)


@pytest.mark.parametrize("length", [1, 1000, SR, 10 * SR, int(61.3 * SR)])
def test_output_length_equals_input(model, length):
    sep = Separator(model, wiener="off", chunk_seconds=20.0)
    x = torch.randn(1, 2, length) * 0.1
    y = sep(x)
    assert y.shape == (1, 4, 2, length)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("length", [1, 1000, SR])
def test_default_model_lengths_and_wiener_backends(length):
    torch.manual_seed(0)
    model = XUMXSliCQ().eval()
    x = torch.randn(1, 2, length) * 0.1
    outs = {w: Separator(model, wiener=w)(x) for w in ("off", "torch", "numba")}
    for y in outs.values():
        assert y.shape == (1, 4, 2, length) and torch.isfinite(y).all()
    scale = outs["torch"].abs().max().clamp_min(1e-12)
    assert (outs["torch"] - outs["numba"]).abs().max() / scale < 1e-4


def test_chunked_equals_one_piece_at_the_default_context(model):
    """20 s through 4 s segments with the default context and cross-fade equals one piece (with as much silence
    around it), everywhere: the default leaves ``context - fade / 2`` beyond the transform's and the network's
    reach (mixture phase; Wiener-EM's covariances are per chunk). Too little context does not."""
    from xumx_slicq.budget import CONTEXT_SECONDS, FADE_SECONDS

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 20 * SR, generator=gen) * 0.1
    whole = Separator(model, wiener="off", chunk_seconds=60.0, context_seconds=3.0)(x)
    chunked_sep = Separator(model, wiener="off", chunk_seconds=4.0)
    assert chunked_sep.context == Separator(model, context_seconds=CONTEXT_SECONDS).context
    assert chunked_sep.fade == round(FADE_SECONDS * SR) // 2 * 2 if FADE_SECONDS else chunked_sep.context
    assert len(chunk_plan(x.shape[-1], chunked_sep.segment, chunked_sep.fade)) >= 4
    rel = (chunked_sep(x) - whole).abs().max() / whole.abs().max()
    assert rel < 1e-4
    short = Separator(model, wiener="off", chunk_seconds=4.0, context_seconds=0.4, fade_seconds=0.4)
    rel_short = (short(x) - whole).abs().max() / whole.abs().max()
    assert rel_short > 1e-4 and rel_short > 10 * rel


def test_fade_is_bounded_by_segment_and_context():
    from xumx_slicq.separator import fade_samples

    assert fade_samples(9030, 100_000) == 9030 and fade_samples(9030, 100_000, 0.1) == 4410
    assert fade_samples(9030, 100_000, 1.0) == 18060  # at most twice the context
    assert fade_samples(90300, 1000, None) == 1000  # never longer than a segment
    with pytest.raises(ValueError, match="fade_seconds"):
        fade_samples(9030, 100_000, -1.0)


def test_mono_input_gives_mono_output(model):
    x = torch.randn(1, 1, SR) * 0.1
    y = Separator(model, wiener="off")(x)
    assert y.shape == (1, 4, 1, SR)
    stereo = Separator(model, wiener="off")(x.expand(-1, 2, -1))
    torch.testing.assert_close(y[:, :, 0], stereo.mean(2))


def test_bad_channel_count_is_refused(model):
    with pytest.raises(ValueError, match="2-channel"):
        Separator(model, wiener="off")(torch.zeros(1, 3, 1000))
    with pytest.raises(ValueError, match="wiener must be"):
        Separator(model, wiener="fast")


def test_saved_model_reloads_and_separates_identically(tmp_path, model):
    save_model(model, tmp_path, "xumx-slicq", note="test")
    loaded, meta = load_model(tmp_path)
    assert meta["note"] == "test" and meta["arch"] == "xumx-slicq"
    x = torch.randn(1, 2, 2 * SR) * 0.1
    a = Separator(model, wiener="torch")(x)
    b = load_separator(tmp_path, wiener="torch")(x)
    assert torch.equal(a, b)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model in"):
        load_separator(tmp_path)


def test_public_separate_api_layout_rate_and_mono(tmp_path, model):
    save_model(model, tmp_path, "xumx-slicq")
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((30_000, 2))).astype(np.float32)
    stems = xumx_slicq.separate(stereo, SR, model_dir=tmp_path, wiener="off")
    assert sorted(stems) == ["bass", "drums", "other", "vocals"]
    assert all(s.shape == stereo.shape and s.dtype == np.float32 for s in stems.values())
    mono = 0.1 * rng.standard_normal(22_050)  # 1 s at 22.05 kHz, float64, 1-D
    stems = xumx_slicq.separate(mono, 22050, model_dir=tmp_path, wiener="off")
    assert all(s.shape == mono.shape and s.dtype == np.float64 for s in stems.values())
    with pytest.raises(ValueError, match="NaN"):
        xumx_slicq.separate(np.full((100, 2), np.nan), SR, model_dir=tmp_path)


def test_separate_file_streams_to_disk_atomically(tmp_path, model, umask_022):
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((9 * SR + 123, 2))).astype(np.float32)
    src = tmp_path / "mixture.wav"
    sf.write(src, audio, SR, subtype="FLOAT")
    sep = Separator(model, wiener="off", chunk_seconds=4.0, context_seconds=2.0)
    paths = sep.separate_file(src, tmp_path / "out", subtype="FLOAT")
    expected = sep(torch.from_numpy(audio.T.copy())[None])[0]
    for j, target in enumerate(sep.targets):
        data, rate = sf.read(paths[target], dtype="float32", always_2d=True)
        assert rate == SR and data.shape == audio.shape
        np.testing.assert_allclose(data.T, expected[j].numpy(), atol=1e-6)
        assert stat.S_IMODE(paths[target].stat().st_mode) == 0o644  # the umask's mode, not mkstemp's 0o600
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{t}.wav" for t in sep.targets)


def test_separate_file_reports_bad_input(tmp_path, model):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match="broken.wav"):
        Separator(model, wiener="off").separate_file(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------------------------------------------
# Backends (the ONNX Runtime ones, which need an exported graph, are in tests/test_export.py)
# ----------------------------------------------------------------------------------------------------------------

def test_wiener_backend_numba_uses_the_block_kernel(model, monkeypatch):
    import xumx_slicq.filtering as filtering

    calls = []
    real = filtering.wiener_blocks_numba
    monkeypatch.setattr(filtering, "wiener_blocks_numba", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(1, 2, SR) * 0.1
    a = Separator(model, wiener="numba", context_seconds=0.5)(x)
    b = Separator(model, wiener="torch", context_seconds=0.5)(x)
    assert calls and (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_backend_arguments_are_checked(model):
    with pytest.raises(ValueError, match="backend must be"):
        Separator(model, backend="tensorrt")
    assert Separator(model).backend == "torch" and Separator(model).network is None  # default auto, no ONNX: torch

    class NotSlicq(torch.nn.Module):
        targets = ("a",)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    with pytest.raises(ValueError, match="xumx-sliCQ only"):
        Separator(NotSlicq(), backend="onnxruntime")
    auto = Separator(NotSlicq(), backend="auto", wiener="auto")  # one backend: nothing to measure
    assert (auto.backend, auto.wiener) == ("torch", "torch")


def test_auto_without_onnx_falls_back_to_torch_network(model, tmp_path, monkeypatch):
    """No exporter available: backend='auto' runs the torch network; wiener='auto' is still chosen."""
    import xumx_slicq.backends as backends

    monkeypatch.setenv("XUMX_SLICQ_CACHE", str(tmp_path))

    def no_onnx(*a, **k):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(backends, "onnx_for_model", no_onnx)
    real = backends.measure_backends
    monkeypatch.setattr(backends, "measure_backends", lambda *a, **k: real(*a, **{**k, "seconds": 1.0}))
    monkeypatch.setattr(backends, "measure_wiener", lambda *a, **k: {"torch": 2.0, "numba": 1.0})
    sep = Separator(model, backend="auto", wiener="auto")
    assert sep.backend == "torch" and sep.network is None
    # one network backend: nothing measured for it; Wiener-EM measured at the chunk's size
    assert "network" not in sep.backend_timings and sep.wiener == "numba"
    with pytest.raises(RuntimeError, match="no exporter"):
        Separator(model, backend="onnxruntime")


# ----------------------------------------------------------------------------------------------------------------
# wiener="auto": torch or numba per problem size (measurements monkeypatched)
# ----------------------------------------------------------------------------------------------------------------


def _fake_wiener_timings(monkeypatch, tmp_path, crossover_s):
    """numba faster below ``crossover_s`` seconds of input, torch above; returns the list of measured sizes."""
    import xumx_slicq.backends as backends

    monkeypatch.setenv("XUMX_SLICQ_CACHE", str(tmp_path))
    measured = []

    def fake(model, seconds, niter, softmask=False, residual=False, candidates=("torch", "numba"), repeats=2):
        measured.append(seconds)
        return {"torch": 1.0, "numba": 0.5 if seconds < crossover_s else 2.0}

    monkeypatch.setattr(backends, "measure_wiener", fake)
    return measured


def test_wiener_bucket_rounds_up_to_5_seconds():
    from xumx_slicq.backends import wiener_bucket

    assert wiener_bucket(1) == 5.0 and wiener_bucket(5 * SR) == 5.0 and wiener_bucket(5 * SR + 1) == 10.0
    assert wiener_bucket(int(36.1 * SR)) == 40.0


def test_wiener_auto_chooses_per_size_and_caches(model, tmp_path, monkeypatch):
    import xumx_slicq.filtering  # noqa: F401
    import xumx_slicq.separator as separator_module

    measured = _fake_wiener_timings(monkeypatch, tmp_path, crossover_s=12.0)
    sep = Separator(model, wiener="auto", chunk_seconds=12, context_seconds=1)
    # the whole chunk with its context (~14 s -> the 15 s bucket): torch is faster there
    assert measured == [15.0] and sep.wiener == "torch" and sep.wiener_auto
    assert sep.backend_timings["wiener"] == {"torch": 1.0, "numba": 2.0}
    assert sep.backend_timings["best"]["wiener"] == "torch"
    used = []
    real = separator_module.wiener_blocks
    monkeypatch.setattr(separator_module, "wiener_blocks",
                        lambda *a, backend, **k: used.append(backend) or real(*a, backend=backend, **k))
    sep(torch.randn(1, 2, 2 * SR) * 0.1)  # a short song: one piece of ~4 s -> the 5 s bucket, where numba wins
    assert measured == [15.0, 5.0] and used == ["numba"]
    sep(torch.randn(1, 2, 2 * SR) * 0.1)  # the same size again: remembered, not measured
    assert measured == [15.0, 5.0] and used == ["numba", "numba"]
    # a new separator on the same machine: both sizes come from the per-machine cache
    again = Separator(model, wiener="auto", chunk_seconds=12, context_seconds=1)
    assert again.wiener_for(2 * SR) == "numba" and again.wiener == "torch" and measured == [15.0, 5.0]
    cache = __import__("json").loads((tmp_path / "wiener_choice.json").read_text())
    assert sorted(v["bucket_seconds"] for v in cache.values()) == [5.0, 15.0]


def test_wiener_explicit_or_off_never_measures(model, tmp_path, monkeypatch):
    measured = _fake_wiener_timings(monkeypatch, tmp_path, crossover_s=12.0)
    for wiener in ("torch", "numba", "off"):
        sep = Separator(model, wiener=wiener, chunk_seconds=12, context_seconds=1)
        assert not sep.wiener_auto and sep.wiener_for(2 * SR) == (wiener if wiener != "off" else "off")
    assert Separator(model, wiener="auto", niter=0).wiener == "off"
    assert measured == []


def test_measure_wiener_times_both_backends(model):
    """The real measurement (no monkeypatch): both backends on a short piece, positive times."""
    from xumx_slicq.backends import measure_wiener

    t = measure_wiener(model, 1.0, niter=1, repeats=1)
    assert set(t) == {"torch", "numba"} and min(t.values()) > 0
