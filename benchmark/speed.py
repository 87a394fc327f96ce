"""Separation time and peak memory: xumx-sliCQ (each Wiener / backend path) vs our UMX and X-UMX.

    python -m benchmark speed --seconds 180 --repeats 3 --output benchmark/results/speed

Every measurement is its own subprocess (peak RSS ``ru_maxrss`` is that run's alone) that loads the model,
warms it up on one second of silence (not timed: numba compilation, first-call allocations, ONNX sessions),
then separates one song file to file with :meth:`xumx_slicq.separator.Separator.separate_file` (30 s chunks,
16-bit WAV out). Repeats are interleaved over the configurations so slow drifts of a busy machine spread
evenly; the headline figure of a configuration is its best repeat (the one least disturbed by other processes),
the median is stored too. The song is made by :func:`benchmark.separator_speed.make_song` (the demo songs,
repeated).

Configurations (``--configs``): ``slicq-torch``, ``slicq-numba`` (Wiener-EM backends, niter 1),
``slicq-off`` (mixture phase, no EM), ``slicq-onnx`` / ``slicq-onnx-numba`` (ONNX Runtime network, when the
separator offers ``backend="onnxruntime"``; skipped with a note otherwise; the ONNX export happens on first use,
outside the timing, and is cached per machine), ``umx`` and ``xumx`` (niter 1). Models come from
``--model`` / ``--umx-model`` / ``--xumx-model`` (default ``pretrained-model/``); an architecture without saved
weights there runs with random weights of the same architecture (same cost), saved to a temporary folder first.

Memory: peak RSS of ``--memory-config`` (default: the fastest full xumx-sliCQ path measured) on songs of
``--memory-minutes`` (3 10 20). ``--merge`` keeps the other entries of an existing ``speed.json`` so a long
benchmark can be taken in short runs.

Writes ``<output>/speed.json`` (``audio_seconds``, ``xumx_slicq_s`` = best-of-repeats time of the fastest xumx-sliCQ
path with Wiener-EM, ``umx_s``, ``xumx_s``, ``peak_rss_mb`` of that path, ratios, real-time factors, goals,
every repeat with the 1-minute load average at its end) and ``<output>/speed.png``.
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

#: name -> (architecture, Wiener path, network backend, niter, label)
CONFIGS: Dict[str, tuple] = {
    "slicq-torch": ("xumx-slicq", "torch", "torch", 1, "xumx-sliCQ, Wiener-EM torch"),
    "slicq-numba": ("xumx-slicq", "numba", "torch", 1, "xumx-sliCQ, Wiener-EM numba"),
    "slicq-off": ("xumx-slicq", "off", "torch", 0, "xumx-sliCQ, mixture phase (no EM)"),
    "slicq-onnx": ("xumx-slicq", "torch", "onnxruntime", 1, "xumx-sliCQ ONNX Runtime, Wiener-EM torch"),
    "slicq-onnx-numba": ("xumx-slicq", "numba", "onnxruntime", 1, "xumx-sliCQ ONNX Runtime, Wiener-EM numba"),
    "umx": ("umx", "torch", "torch", 1, "UMX (ours), niter 1"),
    "xumx": ("xumx", "torch", "torch", 1, "X-UMX (ours), niter 1"),
}
GOALS = {"ratio_vs_umx": 0.5, "rtf": 0.15, "peak_rss_10min_mb": 1500.0}


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
    options = dict(wiener=wiener, niter=niter, chunk_seconds=args.chunk_seconds)
    if backend != "torch":
        options["backend"] = backend
    t0 = time.perf_counter()
    separator = load_separator(args.model, arch=arch, **options)
    setup = time.perf_counter() - t0
    row = time_file_separation(separator, args.input)  # 1 s warm-up, not timed
    print(json.dumps({"config": args.config, "audio_seconds": row["audio_seconds"],
                      "separation_s": row["separation_s"], "rtf": row["rtf"], "setup_s": setup,
                      "warmup_s": row["warmup_s"], "peak_rss_mb": row["peak_rss_mb"], "threads": row["threads"],
                      "load_average_1m": os.getloadavg()[0]}))
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


def resolve_models(requested: Dict[str, Optional[str]], tmp: str) -> Dict[str, Dict]:
    """Per architecture, a folder holding its model: the requested one when it has that architecture, else
    a randomly initialised model (seed 0) saved into ``tmp``. Returns ``{arch: {"dir", "weights"}}``."""
    import torch

    from xumx_slicq.checkpoint import DEFAULT_MODEL_DIR, build_model, find_model, save_model

    out = {}
    for arch, folder in requested.items():
        folder = folder or str(DEFAULT_MODEL_DIR)
        try:
            find_model(folder, arch)
            out[arch] = {"dir": folder, "weights": folder}
        except FileNotFoundError:
            torch.manual_seed(0)
            path = os.path.join(tmp, arch)
            save_model(build_model(arch), path, arch)
            out[arch] = {"dir": path, "weights": f"random (no {arch} model in {folder})"}
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
    full = {n: r for n, r in configs.items() if CONFIGS[n][0] == "xumx-slicq" and CONFIGS[n][3] >= 1}
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
    if "xumx_slicq_s" in out and "umx_s" in out:
        out["ratio_vs_umx"] = out["xumx_slicq_s"] / out["umx_s"]
        goals["ratio_vs_umx <= 0.5"] = out["ratio_vs_umx"] <= GOALS["ratio_vs_umx"]
    if "xumx_s" in out and "xumx_slicq_s" in out:
        out["ratio_vs_xumx"] = out["xumx_slicq_s"] / out["xumx_s"]
    if "rtf" in out:
        goals["rtf <= 0.15"] = out["rtf"] <= GOALS["rtf"]
    ten = [m for m in results.get("memory", []) if abs(m["minutes"] - 10) < 1e-6]
    if ten:
        out["peak_rss_10min_mb"] = ten[0]["peak_rss_mb"]
        goals["peak_rss_10min <= 1500 MB"] = ten[0]["peak_rss_mb"] <= GOALS["peak_rss_10min_mb"]
    out["goals"] = goals
    return out


def speed_table(summary: Dict) -> str:
    """Markdown table of the speed runs and the memory runs."""
    rows = []
    umx = summary.get("umx_s")
    for name, rec in sorted(summary["configs"].items(), key=lambda kv: kv[1]["min_s"]):
        loads = [r["load_average_1m"] for r in rec["runs"] if "load_average_1m" in r]
        rows.append([CONFIGS[name][4], rec["min_s"], rec["median_s"], f"{rec['min_s']:.1f}–{rec['max_s']:.1f}",
                     rec["rtf"], rec["min_s"] / umx if umx else float("nan"), rec["peak_rss_mb"],
                     f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–"])
    text = markdown_table(["path", "best s", "median s", "range s", "RTF (best)", "× UMX (best)", "peak RSS MB",
                           "load avg (1 min)"], rows)
    mem = summary.get("memory", [])
    if mem:
        text += "\n" + markdown_table(["song minutes", "path", "peak RSS MB", "seconds"],
                                      [[m["minutes"], CONFIGS[m["config"]][4], m["peak_rss_mb"], m["separation_s"]]
                                       for m in sorted(mem, key=lambda m: m["minutes"])], floatfmt=".0f")
    for s in summary.get("skipped", []):
        text += f"\nSkipped {s['config']}: {s['reason']}\n"
    return text


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
        ax.axvline(GOALS["ratio_vs_umx"] * summary["configs"]["umx"]["min_s"], ls="--", color="#d62728", lw=1,
                   label="goal: 0.5 x UMX")
        ax.legend(fontsize=8, loc="lower right")
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["max_s"] for _, r in items) * 1.6)
    ax.set_xlabel(f"seconds to separate a {summary['audio_seconds']:.0f} s song (bar: best of "
                  f"{len(items[0][1]['runs'])}, whisker: up to the slowest)")
    ax.set_title(f"separation time, {summary.get('cores', '?')} cores")
    if mem:
        ax2 = axes[0, 1]
        ax2.plot([m["minutes"] for m in mem], [m["peak_rss_mb"] for m in mem], "o-", color="#1f77b4")
        ax2.axhline(GOALS["peak_rss_10min_mb"], ls="--", color="#d62728", lw=1, label="goal at 10 min")
        ax2.set_xlabel("song minutes")
        ax2.set_ylabel("peak RSS (MB)")
        ax2.set_ylim(0, max(GOALS["peak_rss_10min_mb"], max(m["peak_rss_mb"] for m in mem)) * 1.15)
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
        models = resolve_models({"xumx-slicq": args.model, "umx": args.umx_model, "xumx": args.xumx_model}, tmp)
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
