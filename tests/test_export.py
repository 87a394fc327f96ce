"""ONNX export, its parity check, the ONNX Runtime backend and the profile.

One small model (Bark-12: 9 blocks, 8 learned, thin layers) is exported once per module through the CLI; the
default architecture only differs in size (the same layers per block), and exporting its 51 blocks takes ~1.5 min.
"""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from tests.helpers import tiny_model
from xumx_slicq.checkpoint import save_model
from xumx_slicq.onnx_backend import (ONNX_NAME, OnnxNetwork, choose_providers, file_digest, is_current, read_sidecar,
                                     session_options, sidecar_path, weights_digest)
from xumx_slicq.onnx_export import (MaskGraph, ParityError, dummy_inputs, export_model, input_names, load_or_export,
                                    min_slices)
from xumx_slicq.separator import Separator, load_separator
from xumx_slicq.transforms import SliCQT

SR = 44100


@pytest.fixture(scope="module")
def demo_songs(tmp_path_factory):
    """Two 2 s demo songs ``<root>/song<k>/mixture.wav`` (stereo 44.1 kHz noise): the parity audio is known."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("songs")
    rng = np.random.default_rng(7)
    for k in range(2):
        (root / f"song{k}").mkdir()
        sf.write(root / f"song{k}" / "mixture.wav", (0.1 * rng.standard_normal((2 * SR, 2))).astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory, demo_songs):
    """(model, model_dir, onnx_dir) with the model exported by ``python -m export`` (two parity lengths, on the
    demo songs)."""
    model = tiny_model()
    model_dir = tmp_path_factory.mktemp("model")
    save_model(model, model_dir, "xumx-slicq")
    out = tmp_path_factory.mktemp("onnx")
    assert export_main(["--model", str(model_dir), "--output", str(out), "--parity-seconds", "3", "1.3",
                        "--threads", "1", "--audio-root", str(demo_songs)]) == 0
    return model, model_dir, out


def test_export_writes_checked_graph_and_sidecar(exported, demo_songs):
    model, _, out = exported
    path = out / ONNX_NAME
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["opset"] == 18 and meta["exporter"] == "dynamo"
    assert meta["inputs"]["names"] == input_names(model) and len(meta["outputs"]["names"]) == model.nb_learned_blocks
    lb = [b for b, learn in zip(model.blocks, model.learned) if learn]
    assert meta["inputs"]["shapes"] == [["nb_samples", 2, b.nb_bins, "nb_slices", b.T] for b in lb]
    assert meta["outputs"]["shapes"][0] == ["nb_samples", 4, 2, lb[0].nb_bins, "nb_slices", lb[0].T]
    assert meta["weights_sha256"] == weights_digest(model) and meta["onnx_sha256"] == file_digest(path)
    # two song lengths, i.e. two slice counts, both within 1e-4 of PyTorch
    runs = meta["parity"]["runs"]
    assert len(runs) == 2 and runs[0]["nb_slices"] != runs[1]["nb_slices"]
    assert all(r["masks"] <= 1e-4 and r["estimates"] <= 1e-4 for r in runs)
    # the parity ran on the demo songs (the second run starts 11 s in, i.e. 3 s into the 4 s, and loops)
    assert runs[0]["audio"] == f"2 demo songs from {demo_songs} concatenated"
    assert runs[1]["audio"] == f"2 demo songs from {demo_songs} concatenated, looped"
    # inference form: stride-1 transposed convolutions were traced as convolutions
    assert meta["graph_ops"].get("ConvTranspose", 0) == model.nb_learned_blocks  # only the final de-overlap layer
    assert is_current(path, model)
    assert not is_current(path, tiny_model(seed=1))  # other weights


@pytest.mark.parametrize("nb_samples,nb_slices", [(1, None), (2, 57), (1, 400)])
def test_onnxruntime_equals_torch_for_any_length_and_batch(exported, nb_samples, nb_slices):
    model, _, out = exported
    nb_slices = nb_slices or min_slices(model)  # the shortest input the graph takes
    mags = [m * 3 for m in dummy_inputs(model, nb_slices, nb_samples, seed=nb_slices)]
    with torch.no_grad():
        ref = MaskGraph(model)(*mags)
    for io_binding, arena in ((True, False), (False, False), (True, True)):
        got = OnnxNetwork(out / ONNX_NAME, device="cpu", threads=1, io_binding=io_binding,
                          memory_arena=arena).learned_masks(mags)
        for a, b in zip(got, ref):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_session_options_arena_off_by_default():
    so = session_options(threads=2)
    assert so.enable_cpu_mem_arena is False and so.intra_op_num_threads == 2
    assert session_options(threads=1, memory_arena=True).enable_cpu_mem_arena is True
    with pytest.raises(ValueError, match="optimization"):
        session_options(optimization="fast")


def test_network_interface_matches_model(exported):
    model, _, out = exported
    net = OnnxNetwork(out / ONNX_NAME, device="cpu", threads=1)
    assert net.provider == "CPUExecutionProvider" and net.targets == model.targets
    slicqt = SliCQT(**model.slicq_config)
    x = torch.randn(1, 2, SR) * 0.1
    mags = [b.abs() for b in slicqt(x)]
    with torch.no_grad():
        ref = model(mags)
    got = net(mags)
    assert len(got) == len(ref)
    for a, b, learn in zip(got, ref, model.learned):
        assert a.shape == b.shape
        if learn:
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()
        else:
            assert torch.equal(a, b)  # passed-through blocks: the mixture for every target
    with pytest.raises(ValueError, match="at least"):
        net([m[..., :1, :] for m in mags])
    with pytest.raises(ValueError, match="blocks"):
        net(mags[:-1])


def test_parity_failure_writes_nothing(exported, tmp_path, monkeypatch):
    """A graph whose convolution weights drifted by 1 % is refused and nothing is left behind."""
    model, _, out = exported
    import xumx_slicq.onnx_export as oe

    proto = onnx.load(str(out / ONNX_NAME))
    for init in proto.graph.initializer:
        if len(init.dims) == 4:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 1.01, init.name))

    def fake_export(model, path, **kwargs):
        onnx.save(proto, str(path))
        return {"exporter": "test", "export_s": 0.0}

    monkeypatch.setattr(oe, "export_onnx", fake_export)
    dest = tmp_path / "refused"
    with pytest.raises(ParityError, match="tolerance"):
        export_model(model, dest, parity_seconds=(1.3,))
    assert list(dest.iterdir()) == []
    # the unmodified graph passes at 1e-4 but not at a zero tolerance: the check can fail both ways
    monkeypatch.setattr(oe, "export_onnx", lambda model, path, **k: (shutil.copy(out / ONNX_NAME, path),
                                                                      {"exporter": "copy", "export_s": 0.0})[1])
    with pytest.raises(ParityError):
        export_model(model, dest, parity_seconds=(1.3,), tolerance=0.0)
    assert list(dest.iterdir()) == []
    meta = export_model(model, dest, parity_seconds=(1.3,), audio_root=tmp_path / "no-songs")
    assert meta["parity"]["max_relative"] <= 1e-4 and (dest / ONNX_NAME).is_file()
    # without demo songs the parity audio is the chord, and the sidecar says so
    assert meta["parity"]["runs"][0]["audio"] == f"no demo songs in {tmp_path / 'no-songs'}: synthetic noisy chord"
    assert sorted(p.name for p in dest.iterdir()) == [ONNX_NAME, ONNX_NAME + ".json"]  # no temporary files left


def test_load_or_export_reuses_current_file(exported, monkeypatch):
    model, _, out = exported
    import xumx_slicq.onnx_export as oe

    monkeypatch.setattr(oe, "export_model", lambda *a, **k: pytest.fail("re-exported a current file"))
    path, meta = load_or_export(model, out)
    assert path == out / ONNX_NAME and meta == read_sidecar(path)


def test_separator_onnxruntime_equals_torch(exported):
    model, model_dir, out = exported
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 5 * SR, generator=gen) * 0.1
    for wiener in ("off", "torch", "numba"):
        ref = Separator(model, wiener=wiener, chunk_seconds=3.0, context_seconds=1.0)(x)
        sep = Separator(model, wiener=wiener, chunk_seconds=3.0, context_seconds=1.0, backend="onnxruntime",
                        onnx_path=out / ONNX_NAME, onnx_options={"threads": 1})
        assert sep.backend == "onnxruntime" and sep.network.provider == "CPUExecutionProvider"
        got = sep(x)
        assert got.shape == ref.shape
        assert (got - ref).abs().max() <= 1e-3 * ref.abs().max()


def test_load_separator_finds_the_onnx_next_to_the_weights(exported, tmp_path, monkeypatch):
    model, model_dir, out = exported
    monkeypatch.setenv("XUMX_SLICQ_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "shipped"
    shutil.copytree(model_dir, folder)
    for name in (ONNX_NAME, ONNX_NAME + ".json"):
        shutil.copy(out / name, folder / name)
    sep = load_separator(folder, backend="onnxruntime", wiener="off")
    assert sep.network.path == folder / ONNX_NAME
    assert not (tmp_path / "cache").exists()  # nothing exported
    with pytest.raises(ValueError, match="backend must be"):
        load_separator(folder, backend="tensorrt")


def test_auto_picks_the_measured_fastest_and_caches_it(exported, tmp_path, monkeypatch):
    import xumx_slicq.backends as backends

    model, _, out = exported
    monkeypatch.setenv("XUMX_SLICQ_CACHE", str(tmp_path))
    real = backends.measure_backends
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        kwargs["seconds"] = 1.5
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "measure_backends", spy)
    real_wiener = backends.measure_wiener
    monkeypatch.setattr(backends, "measure_wiener", lambda model, seconds, *a, **k: real_wiener(model, 1.0, *a, **k))
    opts = dict(onnx_path=out / ONNX_NAME, onnx_options={"threads": 1}, chunk_seconds=2.0, context_seconds=0.4)
    sep = Separator(model, backend="auto", wiener="auto", **opts)
    timings = sep.backend_timings
    assert set(timings["network"]) == {"torch", "onnxruntime"} and set(timings["wiener"]) == {"torch", "numba"}
    assert sep.backend == min(timings["network"], key=timings["network"].get)
    assert sep.wiener == min(timings["wiener"], key=timings["wiener"].get)
    assert (sep.network is not None) == (sep.backend == "onnxruntime")
    cache = json.loads((tmp_path / "backend_choice.json").read_text())
    assert len(cache) == 1 and len(calls) == 1
    assert len(json.loads((tmp_path / "wiener_choice.json").read_text())) == 1
    again = Separator(model, backend="auto", wiener="auto", **opts)
    assert len(calls) == 1 and (again.backend, again.wiener) == (sep.backend, sep.wiener)  # from the cache
    Separator(model, backend="auto", wiener="torch", **opts)  # the network's choice does not depend on Wiener-EM
    assert len(calls) == 1
    Separator(model, backend="auto", wiener="off", softmask=True, **opts)  # Wiener-EM options: same network
    assert len(calls) == 1
    Separator(model, backend="auto", wiener="off", **{**opts, "onnx_options": {"threads": 2}})  # measured anew
    assert len(calls) == 2 and len(json.loads((tmp_path / "backend_choice.json").read_text())) == 2


def test_providers_fall_back_to_cpu_without_a_gpu(monkeypatch):
    import xumx_slicq.onnx_backend as ob

    monkeypatch.setattr(ob, "cuda_driver_present", lambda: False)
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="cuda"):
        choose_providers("cuda")
    monkeypatch.setattr(ob, "cuda_driver_present", lambda: True)
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert choose_providers("auto")[0] == "CUDAExecutionProvider"


def _noise_wav(tmp_path, seconds: float = 3.0):
    """A stereo 44.1 kHz noise file, so the profile tests do not depend on the generated demo songs."""
    import soundfile as sf

    wav = tmp_path / "noise.wav"
    sf.write(wav, (0.1 * np.random.default_rng(1).standard_normal((int(seconds * SR), 2))).astype(np.float32), SR)
    return str(wav)



def test_profile_command_writes_the_report(exported, tmp_path, capsys):
    model, model_dir, out = exported
    dest = tmp_path / "profile"
    assert export_main(["--model", str(model_dir), "--output", str(dest), "--onnx-dir", str(out), "--profile",
                        "--seconds", "2", "--repeats", "1", "--threads", "1", "--no-full-paths",
                        "--audio", _noise_wav(tmp_path)]) == 0
    report = json.loads((dest / "profile.json").read_text())
    for key in ("torch_s", "onnxruntime_s"):
        assert report["network"][key] > 0
    for key in ("torch_s", "numba_s", "numba_first_call_s"):
        assert report["wiener"][key] > 0
    assert report["parity"]["onnxruntime"] <= 1e-4 and report["parity"]["numba"] <= 1e-4
    assert report["audio_seconds"] == pytest.approx(2.0, abs=1e-3) and report["threads"] == 1
    assert report["hardware"]["cores"] >= 1
    table = (dest / "profile.txt").read_text()
    assert "network, ONNX Runtime" in table and "Wiener-EM, numba" in table
    # the ceiling: GMAC per audio second of the piece, the run's matmul peak, achieved GMAC/s per backend
    ceil = report["ceiling"]
    assert ceil["gmac_per_audio_s"] > 0 and ceil["peak_gmacs"] > 0 and ceil["peak"]["threads"] == 1
    for b in ("torch", "onnxruntime"):
        assert ceil["achieved_gmacs"][b] == pytest.approx(ceil["network_gmac"] / report["network"][f"{b}_s"])
        assert ceil["fraction_of_peak"][b] == pytest.approx(ceil["achieved_gmacs"][b] / ceil["peak_gmacs"])
    assert "of the peak" in table
    assert table.strip() in capsys.readouterr().out
    assert not (dest / ONNX_NAME).exists()  # the existing export was reused
    png = (dest / "profile.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(p.name for p in dest.iterdir()) == ["profile.json", "profile.png", "profile.txt"]  # no temp left


def _fake_report(full_paths=None):
    stage = lambda s: {"best_s": s, "best_cpu_s": s}  # noqa: E731
    return {"audio_seconds": 10.0, "threads": 2, "niter": 1, "full_paths": full_paths,
            "stages": {"forward_slicq": stage(0.5), "network_torch": stage(2.0), "network_onnxruntime": stage(1.0),
                       "wiener_torch": stage(3.0), "wiener_numba": stage(1.5), "inverse_slicq": stage(0.25)}}


def test_stage_figure_stacks_each_paths_stages():
    import matplotlib.pyplot as plt

    from export.profile import PATHS, path_stages, stage_figure

    report = _fake_report([{"backend": "onnxruntime", "wiener": "numba", "separation_s": 4.0}])
    rows = path_stages(report)
    assert [label for label, _ in rows] == [f"network {b} + Wiener {w}" for b, w in PATHS]
    assert dict(rows)["network onnxruntime + Wiener numba"] == [("forward sliCQ", 0.5), ("network", 1.0),
                                                                ("Wiener-EM", 1.5), ("inverse sliCQ", 0.25)]
    fig = stage_figure(report)
    try:
        ax = fig.axes[0]
        bars = [(round(r.get_y() + r.get_height() / 2), r.get_x(), r.get_width()) for r in ax.patches]
        assert len(bars) == 4 * len(PATHS)
        ends = {}
        for y, x, w in bars:
            ends[y] = max(ends.get(y, 0.0), x + w)
        assert [pytest.approx(ends[y]) for y in range(len(PATHS))] == [
            sum(s for _, s in stages) for _, stages in rows]  # torch+torch 5.75 s ... onnxruntime+numba 3.25 s
        assert [t.get_text() for t in ax.get_yticklabels()] == [label for label, _ in rows]
        assert [line.get_xdata()[0] for line in ax.lines] == [4.0]  # the one full path measured file to file
        assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"forward sliCQ", "network", "Wiener-EM",
                                                                        "inverse sliCQ", "file to file (full path)"}
        assert "10.0 s of audio" in ax.get_title()
    finally:
        plt.close(fig)


def test_save_stage_figure_is_atomic(tmp_path, monkeypatch):
    import matplotlib.figure

    from export.profile import save_stage_figure

    target = tmp_path / "profile.png"
    target.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_stage_figure(_fake_report(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["profile.png"] and target.read_bytes() == b"old"
    monkeypatch.undo()
    save_stage_figure(_fake_report(), target)
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_full_path_child_reports_rtf_and_memory(exported, tmp_path, capsys):
    import soundfile as sf

    from export.profile import _full_path_child

    model, model_dir, out = exported
    wav = tmp_path / "mix.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal((2 * SR, 2))).astype(np.float32), SR)
    try:
        assert _full_path_child(["--model-dir", str(model_dir), "--input", str(wav), "--backend", "onnxruntime",
                                 "--wiener", "numba", "--niter", "1", "--threads", "1",
                                 "--onnx", str(out / ONNX_NAME)]) == 0
    finally:
        torch.set_num_threads(1)
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["provider"] == "CPUExecutionProvider" and row["audio_seconds"] == pytest.approx(2.0)
    assert row["rtf"] > 0 and row["peak_rss_mb"] > 0
    # where the time goes: the stages of the timed run only (the warm-up is not counted), the rest is file I/O
    c = row["ceiling"]
    assert set(c["stages"]) == {"forward_slicq_s", "network_s", "wiener_s", "inverse_slicq_s"}
    assert sum(c["stages"].values()) + c["io_and_other_s"] == pytest.approx(row["separation_s"])
    assert c["processed_ratio"] == pytest.approx((2 * SR + 2 * row["context_seconds"] * SR) / (2 * SR), rel=1e-6)
    assert c["achieved_gmacs"] > 0 and c["peak_gmacs"] > 0 and c["gmac_per_audio_s"] > 0
    from export.profile import stage_table

    table = stage_table({"full_paths": [row]})
    assert "file I/O (read + write) and chunking" in table and "chunk context" in table
    assert "processed / real audio" in table and "fraction of the peak" in table


def test_full_path_child_skips_a_backend_the_separator_rejects(exported, tmp_path, capsys):
    """The int8 paths light up once the separator accepts backend="onnxruntime-int8"; until then: a note."""
    from export.profile import _full_path_child, format_table
    from xumx_slicq.separator import NETWORK_BACKENDS

    model, model_dir, out = exported
    assert _full_path_child(["--model-dir", str(model_dir), "--input", _noise_wav(tmp_path, 1.0), "--backend",
                             "onnxruntime-int8", "--wiener", "numba", "--niter", "1", "--threads", "1",
                             "--onnx", str(out / ONNX_NAME)]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    if "onnxruntime-int8" in NETWORK_BACKENDS:  # merged: the tiny model has no gated int8 file, or it ran
        assert "skipped" in row or row["separation_s"] > 0
        return
    assert "onnxruntime-int8" in row["skipped"]
    report = _fake_report([row])
    report.update(audio="a", nb_slices=3, repeats=1, hardware={"cpu": "x", "cores": 2, "onnxruntime": "1",
                                                                 "torch": "2", "numba": "0"},
                  network={"ratio": 0.5, "onnxruntime_provider": "CPU"}, parity={"onnxruntime": 0, "numba": 0},
                  wiener={"ratio": 0.5, "numba_first_call_s": 1.0})
    assert "network onnxruntime-int8 + Wiener numba skipped" in format_table(report)


def test_only_full_paths_merges_into_the_profile(exported, tmp_path, monkeypatch):
    import export.profile as prof

    model, model_dir, out = exported
    dest = tmp_path / "p"
    args = ["--model", str(model_dir), "--output", str(dest), "--onnx-dir", str(out), "--profile", "--seconds", "1.5",
            "--threads", "1", "--audio", _noise_wav(tmp_path)]
    assert export_main(args + ["--only-full-paths"]) == 2  # needs the stage profile first
    assert export_main(args + ["--repeats", "1", "--no-full-paths"]) == 0
    seen = {}

    def fake_paths(model_dir_, wav, onnx_path, niter, threads):
        import soundfile as sf

        seen.update(frames=sf.info(wav).frames, onnx=onnx_path, threads=threads)
        return [{"backend": "onnxruntime", "wiener": "numba", "provider": "CPUExecutionProvider",
                 "separation_s": 0.5, "cpu_s": 0.4, "rtf": 0.5 / 1.5, "setup_s": 1.0, "audio_seconds": 1.5,
                 "peak_rss_mb": 321.0}]

    monkeypatch.setattr(prof, "full_paths", fake_paths)
    assert export_main(args + ["--only-full-paths"]) == 0
    assert seen == {"frames": int(1.5 * SR), "onnx": str(out / ONNX_NAME), "threads": 1}
    report = json.loads((dest / "profile.json").read_text())
    assert report["full_paths"][0]["peak_rss_mb"] == 321.0 and report["network"]["torch_s"] > 0
    assert "network onnxruntime + Wiener numba" in (dest / "profile.txt").read_text()
    assert (dest / "profile.png").read_bytes()[:4] == b"\x89PNG"
    assert export_main(args[:-1] + ["2", "--only-full-paths"]) == 2  # other thread count: refused


def test_auto_never_exports_and_onnxruntime_exports_once_into_the_cache(exported, tmp_path, monkeypatch):
    import xumx_slicq.onnx_export as oe
    import xumx_slicq.backends as backends

    model, model_dir, out = exported
    monkeypatch.setenv("XUMX_SLICQ_CACHE", str(tmp_path / "cache"))
    real_measure, real_export = backends.measure_backends, oe.export_model
    monkeypatch.setattr(backends, "measure_backends", lambda *a, **k: real_measure(*a, **{**k, "seconds": 1.0}))
    monkeypatch.setattr(oe, "export_model", lambda *a, **k: pytest.fail("auto must not export"))
    sep = load_separator(model_dir, backend="auto", wiener="off")  # the model folder has no ONNX file
    # one candidate per stage: nothing to choose from, so nothing is measured (no silent minutes at setup)
    assert sep.backend == "torch" and sep.backend_timings is None
    exports = []
    monkeypatch.setattr(oe, "export_model", lambda *a, **k: exports.append(1) or real_export(
        *a, **{**k, "parity_seconds": (1.3,)}))
    sep = load_separator(model_dir, backend="onnxruntime", wiener="off")
    assert exports == [1] and sep.network.path.parent.parent == tmp_path / "cache" / "onnx"
    again = load_separator(model_dir, backend="onnxruntime", wiener="off")  # reused from the cache
    assert exports == [1] and again.network.path == sep.network.path
    monkeypatch.setattr(oe, "export_model", lambda *a, **k: pytest.fail("auto must not export"))
    sep = load_separator(model_dir, backend="auto", wiener="off")  # now the cached file takes part
    assert set(sep.backend_timings["network"]) == {"torch", "onnxruntime"}
