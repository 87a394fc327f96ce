"""The int8 network: quantization, the quality gate, the gated backend and auto's refusal of ungated files.

One tiny model (Bark-12, thin layers, tests.helpers.tiny_model) is exported and quantized once per module on a
tiny corpus (tests.helpers.write_tiny_corpus: train a/b/c for calibration, test t + the train songs as the gate's
two sets).
"""

import json
import shutil

import pytest
import torch

from export.__main__ import main as export_main
from tests.helpers import tiny_model, write_tiny_corpus
from xumx_slicq.checkpoint import save_model
from xumx_slicq.onnx_backend import ONNX_NAME, OnnxNetwork, sidecar_path, weights_digest
from xumx_slicq.onnx_export import export_model
from xumx_slicq.quantize import INT8_FORMAT, INT8_NAME, GateError, build_int8, calibration_tracks, gate_status
from xumx_slicq.separator import Separator, load_separator
from xumx_slicq.transforms import SliCQT

SR = 44100


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """``(model, model_dir, corpus, float_path, gate_roots, meta)``: the float32 export in its own folder, the
    int8 file built by the CLI into ``model_dir``."""
    corpus = write_tiny_corpus(tmp_path_factory.mktemp("corpus"), seconds=3)
    model = tiny_model()
    model_dir = tmp_path_factory.mktemp("model")
    save_model(model, model_dir, "xumx-slicq")
    float_dir = tmp_path_factory.mktemp("float32")
    export_model(model, float_dir, parity_seconds=(1.3,), audio_root=corpus / "test", threads=1)
    gate_roots = [str(corpus / "test"), str(corpus / "train")]
    # the CLI finds the float32 export in the model folder (copied there), quantizes and gates
    for name in (ONNX_NAME, ONNX_NAME + ".json"):
        shutil.copy(float_dir / name, model_dir / name)
    assert export_main(["--model", str(model_dir), "--output", str(model_dir), "--int8", "--calibration",
                        str(corpus), "--gate-root", *gate_roots, "--threads", "1", "--calib-seconds", "1.5",
                        "--calib-chunks", "2"]) == 0
    for name in (ONNX_NAME, ONNX_NAME + ".json"):  # the model folder keeps only the int8 network
        (model_dir / name).unlink()
    meta = json.loads(sidecar_path(model_dir / INT8_NAME).read_text())
    return model, model_dir, corpus, float_dir / ONNX_NAME, gate_roots, meta


def test_cli_writes_a_gated_int8_file_with_its_figures(setup):
    model, model_dir, corpus, float_path, gate_roots, meta = setup
    assert gate_status(model_dir / INT8_NAME, model) == (True, "gated")
    assert meta["format"] == INT8_FORMAT and meta["weights_sha256"] == weights_digest(model)
    assert meta["float32_onnx_sha256"] == json.loads(sidecar_path(float_path).read_text())["onnx_sha256"]
    gate = meta["gate"]
    assert gate["passed"] and gate["threshold_db"] == 0.1 and sorted(gate["sets"]) == sorted(gate_roots)
    for s in gate["sets"].values():
        assert s["loss_db"] == pytest.approx(s["float32_mean_sdr"] - s["int8_mean_sdr"]) and s["passed"]
        assert len(s["per_song"]) == s["songs"] >= 1
    assert meta["quantization"]["quant_format"] in ("QDQ", "QOperator") and meta["quantization"]["per_channel"]
    assert "3 training tracks" in meta["calibration"]["description"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(model_dir / INT8_NAME)).graph.node}
    assert ops & {"QLinearConv", "QuantizeLinear"}  # really quantized
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_int8_network_is_close_to_float32(setup):
    model, model_dir, corpus, float_path, _, _ = setup
    x = torch.from_numpy(calibration_tracks(corpus)[0].read("mixture", 0, 2 * SR))[None]  # (1, 2, 2 s)
    mags = [b.abs() for b in SliCQT(**model.slicq_config)(x)]
    f32 = OnnxNetwork(float_path, device="cpu", threads=1).masks(mags)
    q8 = OnnxNetwork(model_dir / INT8_NAME, device="cpu", threads=1).masks(mags)
    diffs = [(a - b).abs().mean() for a, b, learn in zip(q8, f32, model.learned) if learn]
    assert 0 < float(torch.stack(diffs).mean()) < 0.02  # quantized (not equal), yet close
    # and through the separator (Wiener-EM), named backend, found next to the weights
    sep = load_separator(model_dir, backend="onnxruntime-int8", wiener="torch", onnx_options={"threads": 1})
    assert sep.backend == "onnxruntime-int8" and sep.network.path == model_dir / INT8_NAME
    ref = Separator(model, backend="onnxruntime", onnx_path=float_path, wiener="torch",
                    onnx_options={"threads": 1})(x)
    got = sep(x)
    assert got.shape == ref.shape
    assert float((got - ref).norm() / ref.norm()) < 0.1


def _self_consistent_set(model, float_path, corpus, dest):
    """Gate songs the float32 network separates almost perfectly: its own estimates of two corpus songs are the
    stems, their sum the mixture (a random model scores near the mixture / 4 floor on real stems, where no
    quantization error could lower the SDR clearly; here any error of the int8 network does)."""
    import soundfile as sf

    from xumx_slicq.data import WavTrack
    from xumx_slicq.quantize import _gate_separator

    sep = _gate_separator(model, float_path, "numba", 1)
    for song in ("test/t", "train/a"):
        est = sep(torch.from_numpy(WavTrack(corpus / song).read("mixture"))[None])[0].numpy()
        folder = dest / song.replace("/", "_")
        folder.mkdir(parents=True)
        for j, target in enumerate(sep.targets):
            sf.write(folder / f"{target}.wav", est[j].T, SR, subtype="FLOAT")  # (nb_timesteps, nb_channels)
        sf.write(folder / "mixture.wav", est.sum(0).T, SR, subtype="FLOAT")
    return dest


def test_gate_refuses_a_broken_quantization_with_the_numbers(setup, tmp_path):
    """Calibrated on magnitudes 1e4 too large, the activations lose their resolution: the SDR drops (measured:
    41.3 -> 14.1 dB) and nothing is written; the honest calibration passes the same gate and loses far less (its
    loss may be slightly negative: 0.8 dB on the Intel machine, -0.02 dB on an AMD EPYC)."""
    model, _, corpus, float_path, _, _ = setup
    gate = [str(_self_consistent_set(model, float_path, corpus, tmp_path / "gate"))]
    opts = dict(threshold=3.0, threads=1, chunk_seconds=1.5, chunks_per_track=2)
    dest = tmp_path / "refused"
    with pytest.raises(GateError, match=r"refused by the quality gate.*float32 .* dB, int8 .* dB, loss") as err:
        build_int8(model, dest, float_path, corpus, gate, calibration_transform=lambda mags: [m * 1e4 for m in mags],
                   **opts)
    figures = err.value.figures
    assert not figures["passed"] and figures["sets"][gate[0]]["loss_db"] > 3.0 and figures["threshold_db"] == 3.0
    assert not dest.exists() or list(dest.iterdir()) == []
    meta = build_int8(model, tmp_path / "honest", float_path, corpus, gate, **opts)
    honest_loss = meta["gate"]["sets"][gate[0]]["loss_db"]
    assert meta["gate"]["passed"] and honest_loss < 3.0 < figures["sets"][gate[0]]["loss_db"]
    assert (tmp_path / "honest" / INT8_NAME).is_file()


def test_cli_refusal_exits_1_and_writes_nothing(setup, tmp_path, capsys):
    model, model_dir, corpus, float_path, gate_roots, _ = setup
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    (folder / INT8_NAME).unlink()
    (folder / (INT8_NAME + ".json")).unlink()
    for name in (ONNX_NAME, ONNX_NAME + ".json"):
        shutil.copy(float_path.parent / name, folder / name)
    # a threshold no network meets: refused, with the figures on stderr
    assert export_main(["--model", str(folder), "--output", str(tmp_path / "out"), "--int8", "--calibration",
                        str(corpus), "--gate-root", gate_roots[0], "--gate-threshold", "-100", "--threads", "1",
                        "--calib-seconds", "1.5", "--calib-chunks", "1"]) == 1
    err = capsys.readouterr().err
    assert "refused by the quality gate" in err and "loss" in err and "nothing written" in err
    assert not (tmp_path / "out" / INT8_NAME).exists()
    assert export_main(["--model", str(folder), "--output", str(tmp_path / "out"), "--int8", "--calibration",
                        str(corpus / "test")]) == 2  # a test split is no calibration root


def _ungated_copies(model_dir, tmp_path):
    """``{case: folder}``: the model with an int8 file that is gated, failed its gate, has other weights' digest,
    was modified after gating, or lacks its sidecar."""
    cases = {}
    for case in ("gated", "failed_gate", "other_weights", "modified_file", "no_sidecar"):
        folder = tmp_path / case
        shutil.copytree(model_dir, folder)
        side = sidecar_path(folder / INT8_NAME)
        meta = json.loads(side.read_text())
        if case == "failed_gate":
            meta["gate"]["passed"] = False
        elif case == "other_weights":
            meta["weights_sha256"] = "0" * 64
        elif case == "modified_file":
            with open(folder / INT8_NAME, "ab") as f:
                f.write(b"\0")
        side.write_text(json.dumps(meta))
        if case == "no_sidecar":
            side.unlink()
        cases[case] = folder
    return cases


def test_auto_never_picks_an_ungated_int8_file(setup, tmp_path, monkeypatch, caplog):
    import xumx_slicq.backends as backends

    model, model_dir, *_ = setup
    seen = []

    def int8_always_fastest(model, onnx_path, *a, **k):
        names = sorted(backends._onnx_candidates(onnx_path))
        seen.append(names)
        network = {"torch": 1.0, **{n: (0.01 if n == "onnxruntime-int8" else 0.5) for n in names}}
        return {"network": network, "best": {"network": min(network, key=network.get)}, "seconds": 1.0}

    monkeypatch.setattr(backends, "measure_backends", int8_always_fastest)
    for case, folder in _ungated_copies(model_dir, tmp_path).items():
        monkeypatch.setenv("XUMX_SLICQ_CACHE", str(tmp_path / f"cache_{case}"))
        caplog.clear()
        sep = load_separator(folder, backend="auto", wiener="off", onnx_options={"threads": 1})
        if case == "gated":
            assert seen[-1] == ["onnxruntime-int8"] and sep.backend == "onnxruntime-int8", case
            continue
        assert sep.backend == "torch" and sep.network is None, case  # no other candidate: nothing measured
        assert "int8 network ignored" in caplog.text, case
        with pytest.raises(ValueError, match="needs a gated int8 network"):
            load_separator(folder, backend="onnxruntime-int8", wiener="off")
    assert seen == [["onnxruntime-int8"]]  # only the gated file was ever a candidate


def test_auto_measures_torch_float32_and_gated_int8_together(setup, tmp_path, monkeypatch):
    import xumx_slicq.backends as backends

    model, model_dir, corpus, float_path, *_ = setup
    monkeypatch.setenv("XUMX_SLICQ_CACHE", str(tmp_path))
    real = backends.measure_backends
    monkeypatch.setattr(backends, "measure_backends", lambda *a, **k: real(*a, **{**k, "seconds": 1.0}))
    sep = Separator(model, backend="auto", wiener="off", model_dir=model_dir, onnx_path=float_path,
                    onnx_options={"threads": 1})
    timings = sep.backend_timings["network"]
    assert set(timings) == {"torch", "onnxruntime", "onnxruntime-int8"}
    assert sep.backend == min(timings, key=timings.get)
    assert (sep.network is None) == (sep.backend == "torch")
