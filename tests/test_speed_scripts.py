"""The speed benchmarks' scripts on tiny inputs: they run, use the one timing helper and the one demo signal, and
write the JSON keys their readers expect. Nothing here checks a speed."""

import json

import numpy as np
import soundfile as sf

from benchmark import separator_speed, transform_speed, wiener_speed
from xumx_slicq.audio import demo_audio


def test_make_song_writes_the_demo_signal_repeated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/test here: the chord
    path = tmp_path / "song.wav"
    separator_speed.make_song(str(path), 1.5 / 60)
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 44100 and data.shape == (int(1.5 * 44100), 2) and sf.info(path).subtype == "PCM_16"
    expected, _ = demo_audio(1.5, root=None)
    assert np.abs(data - expected).max() <= 1.0 / 32767  # 16-bit rounding only


def test_transform_speed_writes_its_table(tmp_path):
    assert transform_speed.main(["--seconds", "1", "--repeats", "2", "--no-reference", "--threads", "1",
                                 "--output", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "transform_speed.json").read_text())
    ours = summary["results"]["xumx_slicq"]
    assert summary["repeats"] == 2 and summary["speedup_vs_nsgt"] is None
    assert 0 < ours["forward_s"] and 0 < ours["total_s"] <= ours["total_median_s"] and ours["rel_rmse"] < 1e-5
    assert (tmp_path / "transform_speed.csv").read_text().startswith("method,forward_s")


def test_transform_speed_time_without_warm_up_counts_the_first_call():
    calls = []
    assert len(transform_speed._time(lambda: calls.append(1), 3)) == 3 and len(calls) == 4
    calls.clear()
    assert len(transform_speed._time(lambda: calls.append(1), 3, warmup=False)) == 3 and len(calls) == 3


def test_wiener_speed_keeps_its_json_keys(tmp_path):
    import numba

    out = tmp_path / "wiener_speed.json"
    threads = numba.get_num_threads()
    try:
        assert wiener_speed.main(["--mode", "blocks", "--seconds", "0.5", "--repeats", "1", "--threads", "1",
                                  "--output", str(out)]) == 0
    finally:
        numba.set_num_threads(threads)  # the script sets the process's numba threads
    w = json.loads(out.read_text())["workloads"]["blocks"]
    for backend in ("torch", "numba"):
        t = w[backend]
        assert len(t["wall_s"]) == len(t["cpu_s"]) == 1 and t["first_call_s"] > 0
        assert t["wall_min_s"] == min(t["wall_s"]) and t["cpu_min_s"] == min(t["cpu_s"])
    assert w["numba_vs_torch_rel_err"] < 1e-4
