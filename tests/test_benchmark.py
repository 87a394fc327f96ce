"""Tests of the quality and speed benchmarks (benchmark/evaluate, oracles, boxplot, curves, search, speed) on a tiny
generated 2-track set in MUSDB18-HQ layout."""

import json
import math
import pathlib

import numpy as np
import pytest
import soundfile as sf
import torch

from benchmark import boxplot, curves, evaluate, oracles, search, speed
from benchmark.common import TARGETS

SR = 44100
SECONDS = 2


def _source(rng, n, kind):
    """A stereo test source (n, 2): filtered noise bursts or tones, different per target."""
    t = np.arange(n) / SR
    if kind == "bass":
        x = np.sin(2 * np.pi * 55 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    elif kind == "vocals":
        x = np.sin(2 * np.pi * (440 + 30 * np.sin(2 * np.pi * 5 * t)) * t) * (t % 1.0 < 0.7)
    elif kind == "drums":
        x = rng.standard_normal(n) * np.exp(-(t % 0.25) * 30)
    else:
        x = np.sin(2 * np.pi * 330 * t) + 0.5 * np.sin(2 * np.pi * 660 * t) + 0.05 * rng.standard_normal(n)
    pan = rng.uniform(0.3, 0.7)
    return (0.2 * np.stack([pan * x, (1 - pan) * x], axis=1)).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """root/test/<track>/{mixture,vocals,drums,bass,other}.wav for two tracks, plus noisy estimates."""
    base = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    n = SECONDS * SR
    for name in ("track_a", "track_b"):
        folder = base / "root" / "test" / name
        folder.mkdir(parents=True)
        sources = {t: _source(rng, n, t) for t in TARGETS}
        for t, x in sources.items():
            sf.write(folder / f"{t}.wav", x, SR, subtype="FLOAT")
            noisy = x + 0.3 * np.std(x) * rng.standard_normal(x.shape).astype(np.float32)
            (base / "est" / name).mkdir(parents=True, exist_ok=True)
            sf.write(base / "est" / name / f"{t}.wav", noisy, SR, subtype="FLOAT")
        sf.write(folder / "mixture.wav", sum(sources.values()), SR, subtype="FLOAT")
    return base


@pytest.fixture(scope="module")
def evaluated(dataset):
    """The noisy estimates evaluated once (2 tracks), and two oracles."""
    out = dataset / "eval" / "noisy"
    table = evaluate.evaluate_dir(dataset / "root", dataset / "est", out, "noisy", jobs=1, progress=False)
    oracles.run_oracles(dataset / "root", dataset / "oracles", ["MIX", "IRM2"], jobs=1, progress=False)
    return {"dir": out, "table": table, "oracles": [dataset / "oracles" / "eval" / m for m in ("MIX", "IRM2")]}


# ------------------------------------------------------------------------------------------------- MDX SDR


def test_mdx_sdr_matches_formula_on_hand_built_arrays():
    s = np.ones((100, 2))
    assert evaluate.mdx_sdr(s, 0.5 * s) == pytest.approx(10 * math.log10((200 + 1e-7) / (50 + 1e-7)), abs=1e-12)
    assert evaluate.mdx_sdr(s, s) == pytest.approx(10 * math.log10((200 + 1e-7) / 1e-7), abs=1e-9)
    assert evaluate.mdx_sdr(np.zeros((10, 2)), np.zeros((10, 2))) == pytest.approx(0.0, abs=1e-12)
    ref = np.array([[1.0, -2.0], [3.0, 0.5]])
    est = np.array([[0.0, -2.0], [2.0, 1.5]])
    assert evaluate.mdx_sdr(ref, est) == pytest.approx(10 * math.log10((1 + 4 + 9 + 0.25 + 1e-7) / (1 + 0 + 1 + 1 + 1e-7)))
    with pytest.raises(ValueError, match="shape"):
        evaluate.mdx_sdr(np.ones((3, 2)), np.ones((3, 1)))


# ------------------------------------------------------------------------------------------------- evaluate


def test_evaluate_writes_museval_json_loadable_by_museval(evaluated):
    import museval

    out = evaluated["dir"]
    assert sorted(p.name for p in (out / "test").glob("*.json")) == ["track_a.json", "track_b.json"]
    store = museval.EvalStore()
    store.add_eval_dir(out)  # museval's own loader of <dir>/test/*.json
    df = store.df
    assert set(df.track) == {"track_a", "track_b"}
    assert set(df.target) == set(TARGETS)
    assert set(df.metric) == {"SDR", "SIR", "SAR", "ISR"}
    assert len(df) == 2 * 4 * 4 * SECONDS  # tracks x targets x metrics x 1 s frames
    methods = museval.MethodStore()
    methods.add_eval_dir(out)
    assert set(methods.df.method) == {"noisy"}
    # every JSON validates against museval's schema
    import jsonschema
    import simplejson

    schema = json.loads((pathlib.Path(museval.__path__[0]) / "musdb.schema.json").read_text())
    for p in (out / "test").glob("*.json"):
        jsonschema.validate(simplejson.loads(p.read_text()), schema)
    # aggregation = museval's median over frames, then over tracks
    store.df["score"] = store.df["score"].astype(float)
    expected = store.agg_frames_tracks_scores()
    table = evaluated["table"]
    for t in TARGETS:
        for m in ("SDR", "SIR", "SAR", "ISR"):
            assert table.loc[t, m] == pytest.approx(float(expected.loc[(t, m)]), abs=1e-6)
    assert table.loc["mean", "SDR"] == pytest.approx(np.mean([table.loc[t, "SDR"] for t in TARGETS]))
    assert (out / "aggregate.csv").is_file() and (out / "aggregate.pkl").is_file()
    import pandas as pd

    assert pd.read_pickle(out / "aggregate.pkl").loc["vocals", "SDR"] == pytest.approx(table.loc["vocals", "SDR"])


def test_evaluate_mdx_records_match_formula_and_skip_done_tracks(dataset, evaluated):
    out = evaluated["dir"]
    for name in ("track_a", "track_b"):
        rec = json.loads((out / "mdx" / f"{name}.json").read_text())
        for t in TARGETS:
            ref, _ = sf.read(dataset / "root" / "test" / name / f"{t}.wav", dtype="float32")
            est, _ = sf.read(dataset / "est" / name / f"{t}.wav", dtype="float32")
            r, e = ref.astype(np.float64), est.astype(np.float64)
            want = 10 * np.log10((np.sum(r**2) + 1e-7) / (np.sum((r - e) ** 2) + 1e-7))
            assert rec["sdr"][t] == pytest.approx(want, abs=1e-6)
        assert rec["song"] == pytest.approx(np.mean(list(rec["sdr"].values())))
    table = evaluated["table"]
    songs = [json.loads((out / "mdx" / f"{n}.json").read_text())["song"] for n in ("track_a", "track_b")]
    assert table.loc["mean", "MDX_SDR"] == pytest.approx(np.mean(songs))
    # noise at -10.5 dB relative to each source: about 10.5 dB SDR
    assert 8 < table.loc["mean", "MDX_SDR"] < 13
    # already evaluated tracks are skipped: the files stay untouched even with the estimates gone
    mtime = (out / "test" / "track_a.json").stat().st_mtime_ns
    evaluate.evaluate_dir(dataset / "root", dataset / "missing_estimates", out, "noisy", progress=False)
    assert (out / "test" / "track_a.json").stat().st_mtime_ns == mtime


def test_evaluate_names_missing_estimates(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="track_a"):
        evaluate.evaluate_dir(dataset / "root", tmp_path / "nothing", tmp_path / "out", "x", progress=False)


def test_compare_table_ranks_methods_and_marks_oracles(evaluated, tmp_path):
    df = evaluate.compare([evaluated["dir"], *evaluated["oracles"]], tmp_path / "cmp")
    assert list(df.index) == ["IRM2", "noisy", "MIX"]  # IRM2 on disjoint tones/noise beats 10 dB noise
    assert df.loc["IRM2", "oracle"] and not df.loc["noisy", "oracle"]
    assert df.loc["MIX", "mean"] < 0
    md = (tmp_path / "cmp.md").read_text()
    assert "| IRM2 * |" in md and "| noisy |" in md
    assert (tmp_path / "cmp.csv").read_text().startswith("method,vocals,drums,bass,other,mean,MDX")


def test_paired_comparison_differences_wins_and_files(evaluated, tmp_path):
    dirs = [evaluated["dir"], *evaluated["oracles"]]
    df = evaluate.paired(dirs, "noisy", tmp_path / "pair")
    assert list(df.index) == ["MIX", "IRM2"]
    noisy, mix = (evaluate.track_scores(d) for d in (evaluated["dir"], evaluated["oracles"][0]))
    # by hand: mean over tracks of the per-track differences, and songs where noisy is ahead
    assert df.loc["MIX", "vocals"] == pytest.approx((noisy["vocals"] - mix["vocals"]).mean())
    assert df.loc["MIX", "mean"] == pytest.approx((noisy["mean"] - mix["mean"]).mean())
    assert df.loc["MIX", "wins"] == 2 and df.loc["IRM2", "wins"] == 0 and df.loc["MIX", "tracks"] == 2
    assert 0 < df.loc["MIX", "p"] <= 1  # two tracks: the smallest two-sided p is 0.5
    md = (tmp_path / "pair.md").read_text()
    assert "| MIX | 2 |" in md and "noisy ahead on" in md and "| 2/2 |" in md
    with pytest.raises(ValueError, match="reference method 'nope'"):
        evaluate.paired(dirs, "nope")


# ------------------------------------------------------------------------------------------------- oracles


@pytest.fixture(scope="module")
def mixture():
    """Random stereo sources (4, 2, n) and their sum (2, n), 1.5 s."""
    g = torch.Generator().manual_seed(1)
    sources = torch.randn(4, 2, int(1.5 * SR), generator=g) * torch.tensor([1.0, 0.5, 0.3, 0.8])[:, None, None]
    return sources.sum(0), sources


@pytest.mark.parametrize("method", ["MPI-STFT", "MPI-sliCQ"])
def test_mix_phase_oracles_are_exact_with_each_source_phase(method, mixture, slicqt):
    mix, sources = mixture
    if method == "MPI-STFT":
        est = oracles.stft_oracle(method, mix, sources, phase="source")
        oracle = oracles.stft_oracle(method, mix, sources)
    else:
        est = oracles.slicq_oracle(mix, sources, slicqt, phase="source")
        oracle = oracles.slicq_oracle(mix, sources, slicqt)
    assert est.shape == sources.shape
    assert torch.max(torch.abs(est - sources)) < 1e-4 * sources.abs().max()
    # with the mixture's phase (the oracle itself) random sources are far from exact
    assert torch.max(torch.abs(oracle - sources)) > 0.1


@pytest.mark.parametrize("method", ["IRM1", "IRM2", "MPI-STFT", "MPI-sliCQ"])
def test_oracles_when_the_mixture_phase_is_the_sources_phase(method, slicqt):
    # sources that are positive multiples of one signal share the mixture's phase everywhere: the magnitude
    # ratio mask (IRM1) and mix-phase inversion must give them back exactly; the power mask (IRM2) gives
    # c_j^2 / sum_k c_k^2 of the mixture
    g = torch.Generator().manual_seed(2)
    common = torch.randn(2, SR, generator=g)
    gains = torch.tensor([0.7, 0.2, 1.3, 0.45])
    sources = gains[:, None, None] * common
    est = oracles.oracle_estimates(method, sources.sum(0), sources, slicqt)
    want = sources
    if method == "IRM2":
        want = (gains**2 / (gains**2).sum() * gains.sum())[:, None, None] * common
        assert torch.max(torch.abs(est - sources)) > 0.1  # so IRM2 is not IRM1
    assert torch.max(torch.abs(est - want)) < 1e-4 * sources.abs().max()


def test_ratio_masks_sum_to_the_mixture_and_mix_oracle_copies_it(mixture):
    mix, sources = mixture
    for method in ("IRM1", "IRM2"):
        est = oracles.stft_oracle(method, mix, sources)
        assert torch.allclose(est.sum(0), mix, atol=1e-4)
    est = oracles.oracle_estimates("MIX", mix, sources)
    assert torch.equal(est, mix.expand_as(sources))
    with pytest.raises(ValueError, match="unknown oracle"):
        oracles.oracle_estimates("IRM3", mix, sources)


def test_run_oracles_writes_estimates_per_track(dataset, evaluated):
    for m in ("MIX", "IRM2"):
        for name in ("track_a", "track_b"):
            for t in TARGETS:
                info = sf.info(dataset / "oracles" / "estimates" / m / name / f"{t}.wav")
                assert info.frames == SECONDS * SR and info.channels == 2
        assert evaluate.method_info(dataset / "oracles" / "eval" / m)["oracle"] is True


# ------------------------------------------------------------------------------------------------- boxplot


def test_boxplot_writes_png_and_table(evaluated, tmp_path):
    png = tmp_path / "fig" / "box.png"
    assert boxplot.main(["--results", str(evaluated["dir"]), *map(str, evaluated["oracles"]),
                         "--output", str(png), "--level", "frames"]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    md = (tmp_path / "fig" / "box.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ") and "method" not in line]
    assert [line.split("|")[1].strip() for line in lines] == ["IRM2 *", "noisy", "MIX *"]  # by vocals SDR


def test_boxplot_rejects_duplicate_method_names(evaluated):
    with pytest.raises(ValueError, match="used twice"):
        boxplot.load_results([evaluated["dir"], evaluated["oracles"][0], evaluated["dir"]])


def _scores(tracks, oracle=False, frames=6, seed=0):
    """A long frame-score DataFrame as :func:`boxplot.load_results` returns: a model (and an oracle)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    methods = [("model", False)] + ([("IRM2", True)] if oracle else [])
    for method, is_oracle in methods:
        for k in range(tracks):
            for target in TARGETS:
                for metric in evaluate.METRICS:
                    for f in range(frames):
                        rows.append(dict(time=float(f), target=target, metric=metric, track=f"song {k}",
                                         method=method, oracle=is_oracle,
                                         score=rng.normal(8.0 if is_oracle else 4.0, 3.0)))
    return pd.DataFrame(rows)


def _drawn(monkeypatch, df, **kwargs):
    """Plot ``df``; returns (the figure, the keyword arguments of every seaborn.boxplot call)."""
    import seaborn as sns

    calls, figures = [], []
    real = sns.boxplot

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(sns, "boxplot", spy)
    monkeypatch.setattr(boxplot, "save_figure_atomic", lambda fig, path, **kw: figures.append(fig))
    boxplot.plot(df, "unused.png", **kwargs)
    assert len(figures) == 1 and calls
    return figures[0], calls


def _box_edges(fig):
    """Distinct score coordinates of each drawn box outline: 2 for a plain box (quartiles), 5 for a notched one
    (quartiles, notch ends, median)."""
    from matplotlib.patches import PathPatch

    edges = []
    for ax in fig.axes:
        for patch in ax.patches:
            if isinstance(patch, PathPatch):
                xs = patch.get_path().vertices[:, 0]
                edges.append(len(np.unique(np.round(xs, 9))))
    return edges


def test_boxplot_on_three_songs_draws_no_notch_and_no_oracle_title(monkeypatch):
    fig, calls = _drawn(monkeypatch, _scores(tracks=3))
    assert {kw["notch"] for kw in calls} == {False}
    edges = _box_edges(fig)
    assert edges and set(edges) == {2}  # plain boxes: nothing drawn outside the quartiles
    title = fig._suptitle.get_text()
    assert "oracle" not in title.lower()
    assert "1 s frames of 3 tracks" in title  # auto: too few tracks for per-track boxes


def test_boxplot_on_three_songs_at_track_level_draws_no_notch(monkeypatch):
    fig, calls = _drawn(monkeypatch, _scores(tracks=3), level="track")
    assert {kw["notch"] for kw in calls} == {False}
    assert set(_box_edges(fig)) == {2}
    assert "per-track medians of 3 tracks" in fig._suptitle.get_text()


def test_boxplot_on_many_songs_with_an_oracle_is_notched_and_says_so(monkeypatch):
    fig, calls = _drawn(monkeypatch, _scores(tracks=boxplot.MIN_TRACKS, oracle=True))
    assert {kw["notch"] for kw in calls} == {True}
    assert set(_box_edges(fig)) == {5}
    title = fig._suptitle.get_text()
    assert f"per-track medians of {boxplot.MIN_TRACKS} tracks" in title
    assert "oracles in italics" in title and "notches" in title


def test_boxplot_level_auto_switches_at_min_tracks():
    assert boxplot.resolve_level("auto", boxplot.MIN_TRACKS - 1) == "frames"
    assert boxplot.resolve_level("auto", boxplot.MIN_TRACKS) == "track"
    assert boxplot.resolve_level("track", 2) == "track"
    with pytest.raises(ValueError, match="level"):
        boxplot.resolve_level("songs", 5)


def test_boxplot_table_mentions_oracles_only_when_present():
    df = _scores(tracks=2)
    assert "oracle" not in boxplot.sdr_table(df, ["model"]).lower()
    df = _scores(tracks=2, oracle=True)
    assert "* oracle" in boxplot.sdr_table(df, ["IRM2", "model"])


# ------------------------------------------------------------------------------------------------- curves


def _fake_run(folder, arch, valid, meta=True):
    folder.mkdir(parents=True)
    history = [dict(epoch=i + 1, train={"total": v + 1}, valid={"total": v}, lr=1e-3, epoch_seconds=1800.0,
                    examples_seen=32 * (i + 1), best=v == min(valid)) for i, v in enumerate(valid)]
    (folder / "history.json").write_text(json.dumps(history))
    if meta:
        (folder / f"{arch.replace('-', '_')}.json").write_text(json.dumps({"arch": arch}))


def test_curves_png_csv_and_summary(tmp_path):
    _fake_run(tmp_path / "gpu" / "m1", "umx", [3.0, 2.0, 2.5])
    _fake_run(tmp_path / "cpu" / "m1", "umx", [3.1, 2.2])
    _fake_run(tmp_path / "gpu" / "xumx-slicq", "xumx-slicq", [0.5, 0.1], meta=False)  # arch from folder name
    png = tmp_path / "fig" / "curves.png"
    assert curves.main(["--runs", str(tmp_path / "gpu" / "m1"), str(tmp_path / "cpu" / "m1"),
                        str(tmp_path / "gpu" / "xumx-slicq"), "--output", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "fig" / "curves.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 + 2 + 2 and rows[1].startswith("gpu/m1,umx,1,32,")
    md = (tmp_path / "fig" / "curves.md").read_text()
    # per run: epochs, examples, hours, best valid loss and its epoch
    assert "| gpu/m1 | umx | 3 | 96 | 1.500 | 2.000 | 2 |" in md
    assert "| gpu/xumx-slicq | xumx-slicq | 2 | 64 | 1.000 | 0.100 | 2 |" in md


def test_curves_missing_history_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert curves.main(["--runs", str(tmp_path / "empty"), "--output", str(tmp_path / "c.png")]) == 1
    assert "history.json" in capsys.readouterr().err and not (tmp_path / "c.png").exists()


# ------------------------------------------------------------------------------------------------- search


def test_search_draws_are_reproducible_and_in_range():
    a = [search.sample_params(np.random.default_rng(42)) for _ in range(1)]
    rng1, rng2 = np.random.default_rng(42), np.random.default_rng(42)
    d1 = [search.sample_params(rng1) for _ in range(50)]
    d2 = [search.sample_params(rng2) for _ in range(50)]
    assert d1 == d2 and a[0] == d1[0]
    assert {d["scale"] for d in d1} <= set(search.SEARCH_SCALES) and len({d["scale"] for d in d1}) == 4
    assert all(10 <= d["fbins"] <= 300 and 10 <= d["fmin"] <= 130 for d in d1)


def test_search_scores_match_the_oracle_and_write_outputs(dataset, tmp_path):
    clips = search.load_clips(str(dataset / "root"), "test", seconds=1.5)
    assert [c["track"] for c in clips] == ["track_a", "track_b"]
    result = search.run_search(clips, iterations=2, seed=3, max_sllen=40000, progress=False)
    assert len(result["trials"]) == 2
    # the Bark-262 reference equals the MDX SDR of the sliCQ mix-phase oracle computed directly
    c = clips[0]
    est = oracles.slicq_oracle(c["mix"], c["sources"])
    want = evaluate.mdx_sdr(c["sources"][0].numpy(), est[0].numpy())
    assert result["default"]["per_track"]["track_a"]["vocals"] == pytest.approx(want, abs=1e-6)
    assert result["default"]["sllen"] == 18060 and result["default"]["nb_blocks"] == 70
    assert "sdr" in result["stft"] and np.isfinite(result["stft"]["sdr"])
    search.plot(result, str(tmp_path / "s.png"))
    search.write_csv(result, tmp_path / "s.csv")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert "STFT 4096/1024" in search.results_table(result)


def test_search_skips_overlong_slices(dataset):
    clips = search.load_clips(str(dataset / "root"), "test", seconds=0.5, max_tracks=1)
    rec = search.evaluate_params({"scale": "cqlog", "fbins": 300, "fmin": 10.0}, clips, max_sllen=100000)
    assert "skipped" in rec and rec["sllen"] > 100000 and "sdr" not in rec


# ------------------------------------------------------------------------------------------------- speed


def _fake(config, seconds, rss):
    return {"config": config, "separation_s": seconds, "peak_rss_mb": rss, "rtf": seconds / 180}


def test_speed_summary_headline_keys_and_goals():
    results = {"audio_seconds": 180.0, "memory": [{"minutes": 10.0, "config": "slicq-numba", "peak_rss_mb": 1400.0,
                                                   "separation_s": 90.0}],
               "configs": {"slicq-torch": {"runs": [_fake("slicq-torch", s, 1300) for s in (20, 22, 21)]},
                           "slicq-numba": {"runs": [_fake("slicq-numba", s, 1350) for s in (15, 14, 16)]},
                           "slicq-off": {"runs": [_fake("slicq-off", s, 1200) for s in (9, 9, 9)]},
                           "umx": {"runs": [_fake("umx", s, 4000) for s in (32, 30, 31)]},
                           "xumx": {"runs": [_fake("xumx", s, 4000) for s in (33, 33, 34)]}}}
    s = speed.summarise(results)
    assert s["xumx_slicq_path"] == "slicq-numba"  # fastest path WITH Wiener-EM (slicq-off is excluded)
    # headline times are the best of the repeats (least disturbed by other load); medians are kept too
    assert s["xumx_slicq_s"] == 14 and s["umx_s"] == 30 and s["xumx_s"] == 33
    assert s["configs"]["slicq-numba"]["median_s"] == 15
    assert s["peak_rss_mb"] == 1350 and s["ratio_vs_umx"] == pytest.approx(14 / 30)
    assert s["rtf"] == pytest.approx(14 / 180)
    # the issue's goals, each judged only at its song lengths: 180 s judges the UMX ratio, not the RTF
    assert s["goals"] == {"ratio_vs_umx <= 1 at 180 s": True, "peak_rss_10min <= 1500 MB": True}
    assert "UMX (ours)" in speed.speed_table(s)
    results["audio_seconds"] = 60.0
    for rec in results["configs"].values():
        rec["runs"] = [dict(r, separation_s=r["separation_s"] / 3) for r in rec["runs"]]
    s = speed.summarise(results)
    assert s["rtf"] == pytest.approx(14 / 3 / 60)
    assert s["goals"] == {"ratio_vs_umx <= 1 at 60 s": True, "rtf <= 0.085 at 60 s": True,
                          "peak_rss_10min <= 1500 MB": True}
    results["configs"]["slicq-numba"]["runs"] = [dict(r, separation_s=6.0) for r in
                                                 results["configs"]["slicq-numba"]["runs"]]
    assert speed.summarise(results)["goals"]["rtf <= 0.085 at 60 s"] is False


def test_speed_ceiling_summary_uses_the_fastest_run():
    runs = [dict(_fake("slicq-numba", s, 1000), ceiling={"gmac_per_audio_s": 6.0, "achieved_gmacs": g,
                                                          "peak_gmacs": 50.0, "fraction_of_peak": g / 50.0,
                                                          "processed_ratio": 1.1})
            for s, g in ((20, 30.0), (15, 40.0))]
    c = speed.ceiling_summary(runs)
    assert c["achieved_gmacs"] == 40.0 and c["fraction_of_peak"] == pytest.approx(0.8)
    assert speed.ceiling_summary([_fake("umx", 3, 1)]) == {}


def test_speed_end_to_end_tiny(tmp_path, monkeypatch):
    out = tmp_path / "speed"
    assert speed.main(["--seconds", "2", "--repeats", "1", "--configs", "default", "slicq-int8", "umx",
                       "--memory-minutes",
                       "--model", str(tmp_path / "no_model"), "--umx-model", str(tmp_path / "no_model"),
                       "--threads", "1", "--output", str(out)]) == 0
    s = json.loads((out / "speed.json").read_text())
    for key in ("audio_seconds", "xumx_slicq_s", "umx_s", "peak_rss_mb", "ratio_vs_umx"):
        assert key in s
    assert s["audio_seconds"] == 2 and s["xumx_slicq_s"] > 0 and s["peak_rss_mb"] > 100
    assert s["configs"]["umx"]["weights"].startswith("random")
    assert (out / "speed.png").read_bytes()[:4] == b"\x89PNG"
    # the ceiling: GMAC per audio second of the chunk shapes run, achieved GMAC/s, the matmul peak of the run
    rec = s["configs"]["default"]  # load_separator() without options: a full path (Wiener-EM on)
    assert s["xumx_slicq_path"] == "default" and rec["runs"][0]["resolved"]["niter"] >= 1
    assert rec["gmac_per_audio_s"] > 5.0 and 0 < rec["achieved_gmacs"] and rec["peak_gmacs"] > 0
    assert rec["fraction_of_peak"] == pytest.approx(rec["achieved_gmacs"] / rec["peak_gmacs"])
    assert rec["processed_ratio"] > 1.0 and set(rec["stages_s"]) == {"forward_slicq_s", "network_s", "wiener_s",
                                                                      "inverse_slicq_s"}
    assert s["configs"]["umx"]["gmac_per_audio_s"] > 0 and s["configs"]["umx"]["achieved_gmacs"] is None
    assert "of peak" in (out / "speed.md").read_text()
    # slicq-int8 lights up once the separator has backend="onnxruntime-int8"; until then it is skipped with the
    # separator's reason, and the other configurations still run
    from xumx_slicq.separator import NETWORK_BACKENDS

    if "onnxruntime-int8" not in NETWORK_BACKENDS:
        assert [k["config"] for k in s["skipped"]] == ["slicq-int8"]
        assert "onnxruntime-int8" in s["skipped"][0]["reason"]
    else:
        assert "slicq-int8" in s["configs"] or "slicq-int8" in [k["config"] for k in s["skipped"]]



def _child_env():
    import os

    return {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def test_evaluation_workers_start_single_threaded(monkeypatch):
    """Workers inherit one BLAS thread each (set before they start), and the parent's settings come back."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from benchmark.evaluate import single_threaded_children

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with single_threaded_children(), ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        child = pool.submit(_child_env).result()
    assert child == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    import os

    assert os.environ["OPENBLAS_NUM_THREADS"] == "7"
    assert "MKL_NUM_THREADS" not in os.environ


# ------------------------------------------------------------------------------------------------- context


def test_context_benchmark_settings_and_report():
    """Chunked vs unchunked on a small random model: exact (mixture phase) with margin beyond the reach, not with
    too little; processed / real audio grows with the context; MDX SDR against given stems."""
    from benchmark import context
    from xumx_slicq.model import XUMXSliCQ

    assert context.parse_setting("1.02/0.41") == (1.02, 0.41) and context.parse_setting("2") == (2.0, None)
    with pytest.raises(Exception, match="CONTEXT"):
        context.parse_setting("a/b")
    torch.manual_seed(0)
    model = XUMXSliCQ(hidden_channels=(2, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(1, 2, 5 * 44100, generator=gen) * 0.1
    stems = {t: (mix[0].T.numpy() / 4) for t in model.targets}
    song = context.evaluate_song(model, mix, stems, [(1.02, 0.41), (0.2, 0.2)], chunk_seconds=1.5, wiener="off",
                                 niter=0)
    exact, short = song["settings"]
    assert exact["deviation_db"] > 100 > short["deviation_db"]
    assert exact["processed_ratio"] > short["processed_ratio"] > 1.0
    assert exact["margin_s"] == pytest.approx(exact["context_s"] - exact["fade_s"] / 2)
    assert song["unchunked_mdx_sdr"] is not None and exact["mdx_sdr"] == pytest.approx(song["unchunked_mdx_sdr"],
                                                                                        abs=1e-3)
    rows = context.summarise({"a": song})
    assert rows[0]["mdx_sdr_change_db"] == pytest.approx(exact["mdx_sdr"] - song["unchunked_mdx_sdr"])
    assert "processed / real" in context.table(rows)


def test_speed_resolve_models_hidden_channels(tmp_path):
    """``--hidden-channels``: a random xumx-sliCQ of that size is timed even when --model has weights (cost only);
    the baselines still come from their folders (or random when absent)."""
    from xumx_slicq.checkpoint import load_model

    models = speed.resolve_models({"xumx-slicq": "pretrained-model", "umx": str(tmp_path / "none")},
                                  str(tmp_path), hidden_channels=(16, 32))
    model, _ = load_model(models["xumx-slicq"]["dir"], arch="xumx-slicq")
    assert model.hidden_channels == (16, 32) and models["xumx-slicq"]["weights"] == "random (hidden channels [16, 32])"
    assert models["umx"]["weights"].startswith("random (no umx model")
    shipped = speed.resolve_models({"xumx-slicq": "pretrained-model"}, str(tmp_path / "b"))
    assert shipped["xumx-slicq"] == {"dir": "pretrained-model", "weights": "pretrained-model"}


def test_training_ops_sizes_tiny():
    """training-ops with a smaller per-block network as a variant: counted, timed, ratio to the default."""
    from benchmark import training_ops

    out = training_ops.run(batch=1, seconds=0.5, repeats=1, max_padding=[], threads=1, model_only=False,
                           count_batch=1, sizes=[(4, 6)])
    assert set(out["variants"]) == {"per_block", "per_block_4x6"}
    small = out["variants"]["per_block_4x6"]
    assert small["training_step_ops"]["top_level"] > 0 and small["step_s"]["best"] > 0
    assert out["variants"]["per_block"]["step_ratio_to_per_block"] == 1.0 and small["step_ratio_to_per_block"] > 0
