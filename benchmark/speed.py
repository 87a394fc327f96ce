"""Separation time and peak memory: xumx-sliCQ (each Wiener / backend path) vs our UMX and X-UMX.

    python -m benchmark speed --seconds 180 --repeats 3 --output benchmark/results/speed

Every measurement is its own subprocess (peak RSS ``ru_maxrss`` is that run's alone) that loads the model,
warms it up on one second of silence (not timed: numba compilation, first-call allocations, ONNX sessions),
then separates one song file to file with :meth:`xumx_slicq.separator.Separator.separate_file` (30 s chunks,
16-bit WAV out). Repeats are interleaved over the configurations so slow drifts of a busy machine spread
evenly; the headline figure of a configuration is its best repeat (the one least disturbed by other processes),
the median is stored too. The song is made by :func:`benchmark.separator_speed.make_song` (the demo songs,
repeated).

Configurations (``--configs``): ``default`` (``load_separator()`` with no options: what a user of the library
gets), ``slicq-torch``, ``slicq-numba`` (Wiener-EM backends, niter 1), ``slicq-off`` (mixture phase, no EM),
``slicq-onnx`` / ``slicq-onnx-numba`` (ONNX Runtime network; the ONNX export happens on first use, outside the
timing, and is cached per machine), ``slicq-int8`` / ``slicq-int8-numba`` (the int8 network,
``backend="onnxruntime-int8"``), ``umx`` and ``xumx`` (niter 1). A configuration the separator rejects (e.g.
a backend this version does not have) is skipped with the reason as a note.

The ceiling: every run also records where its time went (:func:`xumx_slicq.flops.stage_report`: forward sliCQ,
network, Wiener-EM, inverse, file I/O and chunking, the chunk context's share), the network's GMAC per audio
second for the chunk shapes it ran (context included), the achieved GMAC/s (GMAC / network seconds) and the
machine's practical float32 peak measured in the same process right after the run (a 2048 x 2048 matmul at the
same thread count, best of 5), so every figure reads as a fraction of the limit.

Goals (the issue's): xumx-sliCQ's fastest full path <= 1.0 x UMX's time on 60 s and 180 s songs, real-time
factor <= 0.085 on 60 s, peak RSS <= 1.5 GB on a 10-minute song; a goal is judged only by a run of its length
(``--seconds 60`` and ``--seconds 180`` into two output folders). Models come from
``--model`` / ``--umx-model`` / ``--xumx-model`` (default ``pretrained-model/``); an architecture without saved
weights there runs with random weights of the same architecture (same cost), saved to a temporary folder first.

Memory: peak RSS of ``--memory-config`` (default: the fastest full xumx-sliCQ path measured) on songs of
``--memory-minutes`` (3 10 20). ``--merge`` keeps the other entries of an existing ``speed.json`` so a long
benchmark can be taken in short runs.

Writes ``<output>/speed.json`` (``audio_seconds``, ``xumx_slicq_s`` = best-of-repeats time of the fastest xumx-sliCQ
path with Wiener-EM, ``umx_s``, ``xumx_s``, ``peak_rss_mb`` of that path, ratios, real-time factors, goals,
per configuration ``gmac_per_audio_s``, ``achieved_gmacs``, ``peak_gmacs``, ``fraction_of_peak``,
``processed_ratio``, ``stages_s``, every repeat with the 1-minute load average at its end and its ``ceiling``
record) and ``<output>/speed.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from benchmark.common import markdown_table, save_figure_atomic
from benchmark.separator_speed import make_song, time_file_separation
from xumx_slicq import files

#: name -> (architecture, Wiener path, network backend, niter, label); None: the library's default
CONFIGS: Dict[str, tuple] = {
    "default": ("xumx-slicq", None, None, None, "xumx-sliCQ, the library's defaults (load_separator())"),
    "slicq-torch": ("xumx-slicq", "torch", "torch", 1, "xumx-sliCQ, Wiener-EM torch"),
    "slicq-numba": ("xumx-slicq", "numba", "torch", 1, "xumx-sliCQ, Wiener-EM numba"),
    "slicq-off": ("xumx-slicq", "off", "torch", 0, "xumx-sliCQ, mixture phase (no EM)"),
    "slicq-onnx": ("xumx-slicq", "torch", "onnxruntime", 1, "xumx-sliCQ ONNX Runtime, Wiener-EM torch"),
    "slicq-onnx-numba": ("xumx-slicq", "numba", "onnxruntime", 1, "xumx-sliCQ ONNX Runtime, Wiener-EM numba"),
    "slicq-int8": ("xumx-slicq", "torch", "onnxruntime-int8", 1, "xumx-sliCQ int8 ONNX Runtime, Wiener-EM torch"),
    "slicq-int8-numba": ("xumx-slicq", "numba", "onnxruntime-int8", 1,
                         "xumx-sliCQ int8 ONNX Runtime, Wiener-EM numba"),
    "umx": ("umx", "torch", "torch", 1, "UMX (ours), niter 1"),
    "xumx": ("xumx", "torch", "torch", 1, "X-UMX (ours), niter 1"),
}
#: the issue's goals: a limit and the song lengths (seconds) it applies to (None: any run that measures it)
GOALS = {"ratio_vs_umx": (1.0, (60.0, 180.0)), "rtf": (0.085, (60.0,)), "peak_rss_10min_mb": (1500.0, None)}


# --------------------------------------------------------------------------------------------------------------
# One measurement (child process)
# --------------------------------------------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> int:
    """Load, warm up, time one file-to-file separation; print one JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from xumx_slicq.separator import load_separator

    arch, wiener, backend, niter, _ = CONFIGS[args.config]
    if args.config == "default":  # exactly what a user gets: no options at all
        options = {}
    else:
        options = dict(wiener=wiener, niter=niter, chunk_seconds=args.chunk_seconds)
        if backend != "torch":
            options["backend"] = backend
    t0 = time.perf_counter()
    separator = load_separator(args.model, arch=arch, **options)  # an unknown backend: ValueError -> skipped
    setup = time.perf_counter() - t0
    row = time_file_separation(separator, args.input)  # 1 s warm-up, not timed
    print(json.dumps({"config": args.config, "audio_seconds": row["audio_seconds"],
                      "separation_s": row["separation_s"], "rtf": row["rtf"], "setup_s": setup,
                      "warmup_s": row["warmup_s"], "peak_rss_mb": row["peak_rss_mb"], "threads": row["threads"],
                      "load_average_1m": os.getloadavg()[0], "ceiling": row["ceiling"],
                      "resolved": {"backend": separator.backend, "wiener": separator.wiener,
                                   "niter": separator.niter, "chunk_seconds": separator.segment / 44100,
                                   "context_seconds": separator.context / 44100}}))
    return 0


def measure(config: str, song: str, model_dir: str, chunk_seconds: float = 30.0,
            threads: Optional[int] = None, wrap: Sequence[str] = ()) -> Dict:
    """Run one measurement in a fresh subprocess; returns its JSON record (raises with stderr on failure).

    ``wrap`` prefixes the command (e.g. ``["/work/runs/quiet.sh"]`` to pause other work during each run)."""
    cmd = [*wrap, sys.executable, "-m", "benchmark.speed", "--child", "--config", config, "--input", song,
           "--model", model_dir, "--chunk-seconds", str(chunk_seconds)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise RuntimeError(tail)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def resolve_models(requested: Dict[str, Optional[str]], tmp: str,
                   hidden_channels: Optional[Sequence[int]] = None) -> Dict[str, Dict]:
    """Per architecture, a folder holding its model: the requested one when it has that architecture, else
    a randomly initialised model (seed 0) saved into ``tmp``. ``hidden_channels``: time a random xumx-sliCQ of
    that size instead (cost only: the weights do not change the time). Returns ``{arch: {"dir", "weights"}}``."""
    import torch

    from xumx_slicq.checkpoint import DEFAULT_MODEL_DIR, build_model, find_model, save_model

    out = {}
    for arch, folder in requested.items():
        folder = folder or str(DEFAULT_MODEL_DIR)
        config = None
        if arch == "xumx-slicq" and hidden_channels:
            config = {"hidden_channels": [int(h) for h in hidden_channels]}
        if config is None:
            try:
                find_model(folder, arch)
                out[arch] = {"dir": folder, "weights": folder}
                continue
            except FileNotFoundError:
                pass
        torch.manual_seed(0)
        path = os.path.join(tmp, arch)
        save_model(build_model(arch, config), path, arch)
        why = f"hidden channels {config['hidden_channels']}" if config else f"no {arch} model in {folder}"
        out[arch] = {"dir": path, "weights": f"random ({why})"}
    return out


# --------------------------------------------------------------------------------------------------------------
# Summary, figure
# --------------------------------------------------------------------------------------------------------------


def summarise(results: Dict) -> Dict:
    """Add the headline keys (``xumx_slicq_s``, ``umx_s``, ``xumx_s``, ``peak_rss_mb``, ratios, goals)."""
    configs = results["configs"]
    for rec in configs.values():
        times = [r["separation_s"] for r in rec["runs"]]
        rec["median_s"], rec["min_s"], rec["max_s"] = statistics.median(times), min(times), max(times)
        rec["rtf"] = rec["min_s"] / results["audio_seconds"]  # best of the repeats: least disturbed by load
        rec["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rec["runs"])
        rec.update(ceiling_summary(rec["runs"]))
    full = {n: r for n, r in configs.items() if CONFIGS[n][0] == "xumx-slicq" and _niter(n, r) >= 1}
    out = dict(results)
    if full:
        best = min(full, key=lambda n: full[n]["min_s"])
        out["xumx_slicq_path"] = best
        out["xumx_slicq_s"] = full[best]["min_s"]
        out["peak_rss_mb"] = full[best]["peak_rss_mb"]
        out["rtf"] = full[best]["rtf"]
    for key, name in (("umx_s", "umx"), ("xumx_s", "xumx")):
        if name in configs:
            out[key] = configs[name]["min_s"]
    goals = {}
    seconds = results.get("audio_seconds")

    def applies(name: str) -> bool:
        lengths = GOALS[name][1]
        return lengths is None or any(abs(seconds - s) < 1e-6 for s in lengths)

    if "xumx_slicq_s" in out and "umx_s" in out:
        out["ratio_vs_umx"] = out["xumx_slicq_s"] / out["umx_s"]
        if applies("ratio_vs_umx"):
            goals[f"ratio_vs_umx <= {GOALS['ratio_vs_umx'][0]:g} at {seconds:g} s"] = \
                out["ratio_vs_umx"] <= GOALS["ratio_vs_umx"][0]
    if "xumx_s" in out and "xumx_slicq_s" in out:
        out["ratio_vs_xumx"] = out["xumx_slicq_s"] / out["xumx_s"]
    if "rtf" in out and applies("rtf"):
        goals[f"rtf <= {GOALS['rtf'][0]:g} at {seconds:g} s"] = out["rtf"] <= GOALS["rtf"][0]
    ten = [m for m in results.get("memory", []) if abs(m["minutes"] - 10) < 1e-6]
    if ten:
        out["peak_rss_10min_mb"] = ten[0]["peak_rss_mb"]
        goals[f"peak_rss_10min <= {GOALS['peak_rss_10min_mb'][0]:g} MB"] = \
            ten[0]["peak_rss_mb"] <= GOALS["peak_rss_10min_mb"][0]
    out["goals"] = goals
    out["goal_lengths_s"] = {k: v[1] for k, v in GOALS.items()}
    return out


def _niter(name: str, rec: Dict) -> int:
    """Wiener-EM iterations of a configuration (the resolved ones for ``default``)."""
    if CONFIGS[name][3] is not None:
        return CONFIGS[name][3]
    resolved = [r.get("resolved", {}).get("niter") for r in rec.get("runs", [])]
    return next((n for n in resolved if n is not None), 1)


def ceiling_summary(runs: List[Dict]) -> Dict:
    """The compute-ceiling figures of a configuration's fastest run (its ``ceiling`` record): network GMAC per
    audio second for the chunk shapes run, achieved GMAC/s, the matmul peak of that run and the fraction of it,
    processed / real audio (chunk context), stage seconds. Empty when the runs have none (older records)."""
    with_ceiling = [r for r in runs if r.get("ceiling")]
    if not with_ceiling:
        return {}
    best = min(with_ceiling, key=lambda r: r["separation_s"])
    c = best["ceiling"]
    return {"gmac_per_audio_s": c.get("gmac_per_audio_s"), "achieved_gmacs": c.get("achieved_gmacs"),
            "peak_gmacs": c.get("peak_gmacs"), "fraction_of_peak": c.get("fraction_of_peak"),
            "processed_ratio": c.get("processed_ratio"), "stages_s": c.get("stages"),
            "context_s": c.get("context_s"), "io_and_other_s": c.get("io_and_other_s")}


def speed_table(summary: Dict) -> str:
    """Markdown table of the speed runs and the memory runs."""
    rows = []
    umx = summary.get("umx_s")
    for name, rec in sorted(summary["configs"].items(), key=lambda kv: kv[1]["min_s"]):
        loads = [r["load_average_1m"] for r in rec["runs"] if "load_average_1m" in r]
        rows.append([CONFIGS[name][4], rec["min_s"], rec["median_s"], f"{rec['min_s']:.1f}–{rec['max_s']:.1f}",
                     rec["rtf"], rec["min_s"] / umx if umx else float("nan"), rec["peak_rss_mb"],
                     _fmt(rec.get("gmac_per_audio_s"), ".2f"), _fmt(rec.get("achieved_gmacs"), ".1f"),
                     _fmt(rec.get("peak_gmacs"), ".1f"), _fmt(rec.get("fraction_of_peak"), ".0%"),
                     f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–"])
    text = markdown_table(["path", "best s", "median s", "range s", "RTF (best)", "× UMX (best)", "peak RSS MB",
                           "network GMAC / audio s", "achieved GMAC/s", "matmul peak GMAC/s", "of peak",
                           "load avg (1 min)"], rows)
    text += ("\nGMAC per audio second counts the chunk shapes run (context included); achieved GMAC/s = network "
             "GMAC / network seconds (xumx-sliCQ; the baselines' network time is not split out); the peak is a "
             "float32 2048x2048 matmul at the same thread count, best of 5, in the same process right after "
             "the run.\n")
    mem = summary.get("memory", [])
    if mem:
        text += "\n" + markdown_table(["song minutes", "path", "peak RSS MB", "seconds"],
                                      [[m["minutes"], CONFIGS[m["config"]][4], m["peak_rss_mb"], m["separation_s"]]
                                       for m in sorted(mem, key=lambda m: m["minutes"])], floatfmt=".0f")
    for s in summary.get("skipped", []):
        text += f"\nSkipped {s['config']}: {s['reason']}\n"
    return text


def _fmt(value: Optional[float], spec: str) -> str:
    return "–" if value is None else format(value, spec)


def plot(summary: Dict, path: str) -> None:
    """Bar chart: median separation time per path (min–max whiskers, RTF labels), and peak RSS vs song length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(summary["configs"].items(), key=lambda kv: kv[1]["min_s"])
    mem = sorted(summary.get("memory", []), key=lambda m: m["minutes"])
    fig, axes = plt.subplots(1, 2 if mem else 1, figsize=(12 if mem else 7.5, 0.55 * len(items) + 1.8),
                             gridspec_kw={"width_ratios": [2, 1]} if mem else None, squeeze=False)
    ax = axes[0, 0]
    labels = [CONFIGS[n][4] for n, _ in items]
    med = [r["min_s"] for _, r in items]
    err = [[0.0 for _ in items], [r["max_s"] - r["min_s"] for _, r in items]]
    colours = ["#1f77b4" if CONFIGS[n][0] == "xumx-slicq" else "#7f7f7f" for n, _ in items]
    ax.barh(labels, med, xerr=err, color=colours, capsize=3)
    for i, (_, r) in enumerate(items):
        ax.text(r["max_s"], i, f"  {r['min_s']:.1f} s, RTF {r['rtf']:.3f}, {r['peak_rss_mb']:.0f} MB",
                va="center", fontsize=8)
    if "umx" in summary["configs"]:
        ax.axvline(GOALS["ratio_vs_umx"][0] * summary["configs"]["umx"]["min_s"], ls="--", color="#d62728", lw=1,
                   label=f"goal: {GOALS['ratio_vs_umx'][0]:g} x UMX")
        ax.legend(fontsize=8, loc="lower right")
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["max_s"] for _, r in items) * 1.6)
    ax.set_xlabel(f"seconds to separate a {summary['audio_seconds']:.0f} s song (bar: best of "
                  f"{len(items[0][1]['runs'])}, whisker: up to the slowest)")
    ax.set_title(f"separation time, {summary.get('cores', '?')} cores")
    if mem:
        ax2 = axes[0, 1]
        ax2.plot([m["minutes"] for m in mem], [m["peak_rss_mb"] for m in mem], "o-", color="#1f77b4")
        ax2.axhline(GOALS["peak_rss_10min_mb"][0], ls="--", color="#d62728", lw=1, label="goal at 10 min")
        ax2.set_xlabel("song minutes")
        ax2.set_ylabel("peak RSS (MB)")
        ax2.set_ylim(0, max(GOALS["peak_rss_10min_mb"][0], max(m["peak_rss_mb"] for m in mem)) * 1.15)
        ax2.set_title(f"peak memory, {CONFIGS[mem[0]['config']][4]}", fontsize=9)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110, bbox_inches="tight")


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="song length of the speed runs (180)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                        help="configurations to time (default: all; none: memory runs only, with --merge)")
    parser.add_argument("--memory-minutes", type=float, nargs="*", default=[3.0, 10.0, 20.0],
                        help="song lengths of the peak-memory runs (default 3 10 20; none: skip)")
    parser.add_argument("--memory-config", choices=list(CONFIGS),
                        help="configuration of the memory runs (default: fastest full xumx-sliCQ path)")
    parser.add_argument("--model", help="xumx-sliCQ model folder (default pretrained-model/)")
    parser.add_argument("--hidden-channels", type=int, nargs=2, metavar=("H1", "H2"),
                        help="time a random-weight xumx-sliCQ with these hidden widths instead of --model (the cost "
                             "of an architecture before it is trained; default: the --model folder's)")
    parser.add_argument("--umx-model", help="UMX model folder (default pretrained-model/)")
    parser.add_argument("--xumx-model", help="X-UMX model folder (default pretrained-model/)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="separator chunk length (30)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's)")
    parser.add_argument("--wrap", help="command prefix of every timed run, e.g. /work/runs/quiet.sh "
                        "(not used for the memory runs)")
    parser.add_argument("--merge", action="store_true", help="keep other entries of an existing speed.json")
    parser.add_argument("--note", default="", help="free text stored in speed.json (e.g. how the machine was)")
    parser.add_argument("--output", default="benchmark/results/speed",
                        help="output folder (default %(default)s)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    from tqdm import tqdm

    out_dir = pathlib.Path(args.output)
    out_json = out_dir / "speed.json"
    results: Dict = {"configs": {}, "memory": [], "skipped": []}
    if args.merge and out_json.is_file():
        old = json.loads(out_json.read_text())
        if abs(old.get("audio_seconds", args.seconds) - args.seconds) < 1e-6:
            results["configs"] = {k: v for k, v in old.get("configs", {}).items() if k not in args.configs}
            redo = set(args.memory_minutes or [])  # lengths measured again now
            results["memory"] = [m for m in old.get("memory", []) if m["minutes"] not in redo]
            results["skipped"] = [s for s in old.get("skipped", []) if s["config"] not in args.configs]
            results["notes"] = old.get("notes", [])
    results.setdefault("notes", [])
    if args.note:
        results["notes"].append(args.note)
    with tempfile.TemporaryDirectory() as tmp:
        models = resolve_models({"xumx-slicq": args.model, "umx": args.umx_model, "xumx": args.xumx_model}, tmp,
                                args.hidden_channels)
        song = os.path.join(tmp, "song.wav")
        make_song(song, args.seconds / 60)
        runs: Dict[str, List[Dict]] = {c: [] for c in args.configs}
        failed: Dict[str, str] = {}
        bar = tqdm(total=len(args.configs) * args.repeats, desc="speed", unit="run")
        for repeat in range(args.repeats):
            for config in args.configs:
                bar.update()
                if config in failed:
                    continue
                try:
                    rec = measure(config, song, models[CONFIGS[config][0]]["dir"], args.chunk_seconds, args.threads,
                                  args.wrap.split() if args.wrap else ())
                except RuntimeError as exc:
                    failed[config] = str(exc)
                    tqdm.write(f"{config}: skipped ({exc})")
                    continue
                runs[config].append(rec)
                tqdm.write(f"{config:<12} repeat {repeat + 1}: {rec['separation_s']:7.1f} s  RTF {rec['rtf']:.3f}  "
                           f"peak RSS {rec['peak_rss_mb']:.0f} MB")
        bar.close()
        for config, recs in runs.items():
            if recs:
                arch = CONFIGS[config][0]
                results["configs"][config] = {"label": CONFIGS[config][4], "arch": arch,
                                              "wiener": CONFIGS[config][1], "backend": CONFIGS[config][2],
                                              "niter": CONFIGS[config][3], "weights": models[arch]["weights"],
                                              "runs": recs}
        results["skipped"] += [{"config": c, "reason": r} for c, r in failed.items()]
        results["audio_seconds"] = args.seconds
        summary = summarise(results)
        mem_config = args.memory_config or summary.get("xumx_slicq_path")
        if args.memory_minutes and mem_config is None:
            print("memory runs skipped: no xumx-sliCQ path measured (give --memory-config)", file=sys.stderr)
        elif args.memory_minutes:
            for minutes in tqdm(args.memory_minutes, desc="memory", unit="song"):
                if abs(minutes * 60 - args.seconds) < 1e-6 and mem_config in results["configs"]:
                    rec = max(results["configs"][mem_config]["runs"], key=lambda r: r["peak_rss_mb"])
                else:
                    path = os.path.join(tmp, f"song_{minutes:g}.wav")
                    make_song(path, minutes)
                    rec = measure(mem_config, path, models[CONFIGS[mem_config][0]]["dir"], args.chunk_seconds,
                                  args.threads)
                    os.unlink(path)
                results["memory"].append({"minutes": minutes, "config": mem_config, "peak_rss_mb": rec["peak_rss_mb"],
                                          "separation_s": rec["separation_s"]})
                tqdm.write(f"memory {minutes:g} min ({mem_config}): peak RSS {rec['peak_rss_mb']:.0f} MB")
    results.update({"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": next((r["threads"] for c in results["configs"].values() for r in c["runs"]), None),
                    "chunk_seconds": args.chunk_seconds, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "command": "python -m benchmark speed " + " ".join(argv if argv is not None else sys.argv[1:])})
    summary = summarise(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    files.write_json(out_json, summary)
    table = speed_table(summary)
    files.write_text(out_dir / "speed.md", table)
    if summary["configs"]:
        plot(summary, str(out_dir / "speed.png"))
    print(table)
    for key in ("xumx_slicq_s", "umx_s", "xumx_s", "ratio_vs_umx", "rtf", "peak_rss_mb", "goals"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    print(f"wrote {out_json}, speed.md, speed.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
