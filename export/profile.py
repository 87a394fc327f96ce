"""Stage-by-stage profile of separation: PyTorch vs ONNX Runtime network, torch vs numba Wiener-EM.

On one piece of audio (a file, or N seconds of the demo songs concatenated and looped), in one process and with
the same thread count for torch, numba and ONNX Runtime:

* forward sliCQ, network (torch / onnxruntime), Wiener-EM (torch / numba; the numba first call - compilation or
  on-disk cache load - reported separately), inverse sliCQ: one warm-up call, then ``repeats`` timed calls
  (:func:`xumx_slicq.timing.time_calls`); the best wall time and its process CPU time (steadier on a shared
  machine) are kept;
* parity: onnxruntime vs torch masks, numba vs torch Wiener-EM output (max abs difference / max abs value);
* optional ONNX Runtime tuning variants (optimisation level, IO binding, parallel execution);
* every full path (network x Wiener backend) file to file through :class:`xumx_slicq.separator.Separator`, each in
  its own subprocess so its peak RSS is its own: wall time, real-time factor, peak memory.

``python -m export --model DIR --output DIR --profile`` prints a table and writes ``<output>/profile.json``,
``<output>/profile.txt`` and ``<output>/profile.png`` (:func:`stage_figure`: one stacked bar of stage times per
path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from xumx_slicq.files import atomic_path
from xumx_slicq.timing import time_calls

SR = 44100
PATHS = (("torch", "torch"), ("torch", "numba"), ("onnxruntime", "torch"), ("onnxruntime", "numba"))
#: full paths tried after PATHS and skipped with a note when the separator rejects them (the int8 network)
OPTIONAL_PATHS = (("onnxruntime-int8", "torch"), ("onnxruntime-int8", "numba"))
#: rows of the per-stage table of a full path: (label, key of xumx_slicq.flops.stage_report's "stages")
STAGE_ROWS = (("forward sliCQ", "forward_slicq_s"), ("network", "network_s"), ("Wiener-EM", "wiener_s"),
              ("inverse sliCQ", "inverse_slicq_s"))
FIGURE_NAME = "profile.png"
# (stage label, colour) of the bars' segments, in separation order
STAGE_STYLE = (("forward sliCQ", "#4c72b0"), ("network", "#dd8452"), ("Wiener-EM", "#55a868"),
               ("inverse sliCQ", "#8172b3"))


def hardware(threads: int) -> Dict[str, Any]:
    """CPU model, cores, memory, threads and library versions."""
    import numba
    import numpy as np
    import onnxruntime as ort
    import torch

    from xumx_slicq.backends import machine_fingerprint

    info = machine_fingerprint()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = None
    info.update({"platform": platform.platform(), "memory_gib": mem, "threads": threads,
                 "numba_threading_layer": numba.config.THREADING_LAYER, "numpy": np.__version__,
                 "onnxruntime_providers": ort.get_available_providers(), "python": platform.python_version(),
                 "torch_build": torch.__config__.parallel_info().splitlines()[:3],
                 "load_average": list(os.getloadavg())})
    return info


def read_audio(path: Optional[str], seconds: float, root: str = "data/test"):
    """``(1, 2, nb_timesteps)`` float32 audio and its description: ``seconds`` of ``path`` (all of it when
    ``seconds`` <= 0), or of the demo songs in ``root`` (:func:`xumx_slicq.audio.demo_audio`: concatenated,
    looped)."""
    import numpy as np
    import soundfile as sf
    import torch

    if path is None:
        from xumx_slicq.audio import DEMO_RATE, demo_audio

        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: demo songs folder missing; pass --audio FILE")
        data, desc = demo_audio(seconds, root)
        rate, desc = DEMO_RATE, f"{seconds:g} s: {desc}"
    else:
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}: cannot read audio: {exc}") from exc
        if seconds > 0:
            data = data[: int(seconds * rate)]
        desc = f"{path} ({len(data) / rate:.1f} s)"
    if rate != SR:
        raise ValueError(f"{path or root}: expected 44.1 kHz audio, got {rate} Hz")
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    return torch.from_numpy(np.ascontiguousarray(data.T))[None], desc  # (1, 2, nb_timesteps)


def _full_path_child(argv: Sequence[str]) -> int:
    """One full path in a fresh process: ``--model-dir --input --backend --wiener --niter --threads --onnx``."""
    p = argparse.ArgumentParser()
    for name in ("--model-dir", "--input", "--backend", "--wiener", "--onnx"):
        p.add_argument(name, required=True)
    p.add_argument("--niter", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args(argv)
    import numba
    import torch

    torch.set_num_threads(a.threads)
    numba.set_num_threads(a.threads)
    import soundfile as sf

    from xumx_slicq import flops
    from xumx_slicq.separator import load_separator

    t0 = time.perf_counter()
    try:
        sep = load_separator(a.model_dir, backend=a.backend, wiener=a.wiener, niter=a.niter,
                             onnx_path=a.onnx if a.backend == "onnxruntime" else None,
                             onnx_options={"threads": a.threads})
    except Exception as exc:  # noqa: BLE001 - an optional path this version or model lacks is a note, not a failure
        if a.backend not in {b for b, _ in OPTIONAL_PATHS}:
            raise
        print(json.dumps({"backend": a.backend, "wiener": a.wiener, "skipped": f"{type(exc).__name__}: {exc}"}))
        return 0
    sep.separate_segment(torch.zeros(1, 2, SR))  # numba compile / cache load, ONNX Runtime first run
    setup = time.perf_counter() - t0
    sep.reset_stats()
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        sep.separate_file(a.input, out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = sf.info(a.input)
    peak = flops.matmul_peak_gmacs(a.threads)  # the same process and thread count, right after the run
    provider = getattr(sep.network, "provider", None)
    print(json.dumps({"backend": a.backend, "wiener": a.wiener, "provider": provider, "separation_s": wall,
                      "cpu_s": cpu, "rtf": wall / info.duration, "setup_s": setup, "audio_seconds": info.duration,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "chunk_seconds": sep.segment / SR, "context_seconds": sep.context / SR,
                      "ceiling": {**flops.stage_report(sep.model, sep.stats, info.frames, wall, peak["gmacs"]),
                                  "peak": peak}}))
    return 0


def full_paths(model_dir: str, wav: str, onnx_path: str, niter: int, threads: int,
               paths: Sequence = PATHS + OPTIONAL_PATHS) -> List[Dict[str, Any]]:
    """Run every ``(network backend, Wiener backend)`` path file to file, one subprocess each. A path whose
    backend the separator rejects comes back as ``{"backend", "wiener", "skipped": reason}``."""
    from tqdm import tqdm

    rows = []
    for backend, wiener in tqdm(paths, desc="full paths", unit="path"):
        cmd = [sys.executable, "-m", "export.profile", "--child", "--model-dir", model_dir, "--input", wav,
               "--backend", backend, "--wiener", wiener, "--niter", str(niter), "--threads", str(threads),
               "--onnx", onnx_path]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"export/profile.py: full path {backend}+{wiener} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        if "skipped" in row:
            print(f"full path {backend} + {wiener} skipped: {row['skipped']}", flush=True)
        rows.append(row)
    return rows


def profile(model, model_dir: str, onnx_path: str, audio, audio_desc: str, niter: int = 1, threads: int = 2,
            repeats: int = 2, tuning: bool = False, run_full_paths: bool = True) -> Dict[str, Any]:
    """Profile every stage (see the module docstring); returns the report (``profile.json`` content)."""
    import numba
    import soundfile as sf
    import torch

    from xumx_slicq import flops
    from xumx_slicq.filtering import wiener_blocks
    from xumx_slicq.onnx_backend import OnnxNetwork
    from xumx_slicq.onnx_export import relative_error
    from xumx_slicq.transforms import SliCQT

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    slicqt = SliCQT(**model.slicq_config)
    length = audio.shape[-1]
    seconds = length / SR
    report: Dict[str, Any] = {"audio_seconds": seconds, "audio": audio_desc, "threads": threads, "niter": niter,
                              "repeats": repeats, "hardware": hardware(threads),
                              "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", "default (__pycache__)")}
    stages: Dict[str, Dict[str, Any]] = {}
    print(f"profiling {audio_desc}: {seconds:.1f} s, {threads} threads, niter {niter}", flush=True)
    peak = flops.matmul_peak_gmacs(threads)
    print(f"float32 matmul peak at {threads} threads: {peak['gmacs']:.1f} GMAC/s", flush=True)
    with torch.no_grad():
        t = time_calls(lambda: slicqt(audio), repeats)
        mix = t.result
        stages["forward_slicq"] = t.record()
        mags = [b.abs() for b in mix]
        report["nb_slices"] = int(mags[0].shape[3])

        t = time_calls(lambda: model(mags), repeats)
        est_torch = t.result
        stages["network_torch"] = t.record()
        masks_torch = model.masks(mags)

        t0 = time.perf_counter()
        net = OnnxNetwork(onnx_path, device="cpu", threads=threads)
        session_s = time.perf_counter() - t0
        t = time_calls(lambda: net(mags), repeats)
        stages["network_onnxruntime"] = t.record()
        masks_ort = net.masks(mags)
        keep = [i for i, learn in enumerate(model.learned) if learn]
        parity_ort = relative_error([masks_ort[i] for i in keep], [masks_torch[i] for i in keep])
        parity_ort_est = relative_error([t.result[i] for i in keep], [est_torch[i] for i in keep])

        variants: Dict[str, Any] = {}
        if tuning:
            for name, opts in (("optimization=extended", {"optimization": "extended"}),
                               ("optimization=basic", {"optimization": "basic"}),
                               ("io_binding=False", {"io_binding": False}),
                               ("parallel execution", {"parallel": True})):
                v = OnnxNetwork(onnx_path, device="cpu", threads=threads, **opts)
                variants[name] = time_calls(lambda: v(mags), repeats).record()
                print(f"  onnxruntime {name}: {variants[name]['best_s']:.3f} s", flush=True)
                del v

        opts = dict(iterations=niter)
        t = time_calls(lambda: wiener_blocks(est_torch, mix, backend="torch", **opts), repeats)
        out_torch = t.result
        stages["wiener_torch"] = t.record()
        t = time_calls(lambda: wiener_blocks(est_torch, mix, backend="numba", **opts), repeats)
        stages["wiener_numba"] = t.record()
        parity_numba = relative_error([torch.view_as_real(o) for o in t.result],
                                      [torch.view_as_real(o) for o in out_torch])

        t = time_calls(lambda: slicqt.inverse(out_torch, length), repeats)
        stages["inverse_slicq"] = t.record()

    report["stages"] = stages
    tn, to = stages["network_torch"]["best_s"], stages["network_onnxruntime"]["best_s"]
    wt, wn = stages["wiener_torch"]["best_s"], stages["wiener_numba"]["best_s"]
    report["network"] = {"torch_s": tn, "onnxruntime_s": to, "ratio": to / tn,
                         "torch_cpu_s": stages["network_torch"]["best_cpu_s"],
                         "onnxruntime_cpu_s": stages["network_onnxruntime"]["best_cpu_s"],
                         "onnxruntime_session_s": session_s, "onnxruntime_provider": net.provider,
                         "onnxruntime_settings": {"optimization": net.optimization, "io_binding": net.io_binding,
                                                  "parallel": net.parallel}, "goal_ratio": 0.7,
                         "tuning_variants": {k: {"best_s": v["best_s"], "best_cpu_s": v["best_cpu_s"]}
                                             for k, v in variants.items()}}
    report["wiener"] = {"torch_s": wt, "numba_s": wn, "ratio": wn / wt,
                        "torch_cpu_s": stages["wiener_torch"]["best_cpu_s"],
                        "numba_cpu_s": stages["wiener_numba"]["best_cpu_s"],
                        "numba_first_call_s": stages["wiener_numba"]["first_call_s"],
                        "numba_compile_s": max(0.0, stages["wiener_numba"]["first_call_s"] - wn),
                        "goal_ratio": 0.5, "iterations": niter}
    macs = flops.network_macs(model, length)  # the stages ran the audio as one piece
    report["ceiling"] = {
        "network_gmac": macs / 1e9, "gmac_per_audio_s": macs / 1e9 / seconds, "peak_gmacs": peak["gmacs"],
        "peak": peak, "receptive_field": {k: v for k, v in flops.receptive_field(model).items() if k != "blocks"},
        "achieved_gmacs": {b: macs / 1e9 / stages[f"network_{b}"]["best_s"] for b in ("torch", "onnxruntime")}}
    report["ceiling"]["fraction_of_peak"] = {b: g / peak["gmacs"]
                                             for b, g in report["ceiling"]["achieved_gmacs"].items()}
    report["parity"] = {"onnxruntime": parity_ort, "onnxruntime_estimates": parity_ort_est,
                        "numba": parity_numba,
                        "definition": "max |candidate - torch| / max |torch| (masks; Wiener-EM complex output)"}
    if run_full_paths:
        with tempfile.TemporaryDirectory() as tmp:
            wav = os.path.join(tmp, "mixture.wav")
            sf.write(wav, audio[0].numpy().T, SR, subtype="FLOAT")
            report["full_paths"] = full_paths(model_dir, wav, str(onnx_path), niter, threads)
    report["load_average_at_end"] = list(os.getloadavg())
    return report


def format_table(report: Dict[str, Any]) -> str:
    """The profile as a plain-text table."""
    st = report["stages"]
    sec = report["audio_seconds"]

    def row(name: str, key: str, note: str = "") -> str:
        t = st[key]
        return f"{name:<34} {t['best_s']:9.3f} {t['best_cpu_s']:9.3f} {t['best_s'] / sec:8.4f}  {note}"

    hw = report["hardware"]
    lines = [
        f"xumx-sliCQ separation profile: {report['audio']}",
        f"{sec:.1f} s of audio, {report['nb_slices']} slices, {report['threads']} threads (torch, numba, "
        f"onnxruntime), niter {report['niter']}, best of {report['repeats']} after a warm-up",
        f"CPU {hw['cpu']} ({hw['cores']} cores), onnxruntime {hw['onnxruntime']} "
        f"({report['network']['onnxruntime_provider']}), torch {hw['torch']}, numba {hw['numba']}",
        "",
        f"{'stage':<34} {'wall s':>9} {'cpu s':>9} {'RTF':>8}  note",
        row("forward sliCQ", "forward_slicq"),
        row("network, PyTorch", "network_torch"),
        row("network, ONNX Runtime", "network_onnxruntime",
            f"{report['network']['ratio']:.2f}x PyTorch (goal <= 0.7), parity {report['parity']['onnxruntime']:.1e}"),
        row("Wiener-EM, torch", "wiener_torch"),
        row("Wiener-EM, numba (block kernel)", "wiener_numba",
            f"{report['wiener']['ratio']:.2f}x torch (goal <= 0.5), parity {report['parity']['numba']:.1e}, "
            f"first call {report['wiener']['numba_first_call_s']:.2f} s"),
        row("inverse sliCQ", "inverse_slicq"),
    ]
    for name, v in report["network"].get("tuning_variants", {}).items():
        lines.append(f"{'  onnxruntime ' + name:<34} {v['best_s']:9.3f} {v['best_cpu_s']:9.3f} "
                     f"{v['best_s'] / sec:8.4f}  tuning variant")
    ceil = report.get("ceiling")
    if ceil:
        lines += ["", f"ceiling: the network is {ceil['gmac_per_audio_s']:.2f} GMAC per audio second on this piece; "
                      f"float32 matmul peak {ceil['peak_gmacs']:.1f} GMAC/s at {report['threads']} threads"]
        for b, g in ceil["achieved_gmacs"].items():
            lines.append(f"  network {b:<12} {g:7.1f} GMAC/s = {ceil['fraction_of_peak'][b]:.0%} of the peak")
    if report.get("full_paths"):
        lines += ["", f"{'full path (file to file)':<34} {'wall s':>9} {'cpu s':>9} {'RTF':>8}  peak RSS"]
        for r in report["full_paths"]:
            name = f"network {r['backend']} + Wiener {r['wiener']}"
            if "skipped" in r:
                lines.append(f"{name:<34} skipped: {r['skipped']}")
                continue
            lines.append(f"{name:<34} {r['separation_s']:9.2f} "
                         f"{r['cpu_s']:9.2f} {r['rtf']:8.4f}  {r['peak_rss_mb']:.0f} MB (setup {r['setup_s']:.1f} s)")
        lines += ["", stage_table(report)]
    return "\n".join(lines)


def stage_rows(path: Dict[str, Any]) -> List[Tuple[str, Optional[float]]]:
    """``[(stage, seconds), ...]`` of one full path's file-to-file run: forward sliCQ, network, Wiener-EM,
    inverse, file I/O and chunking (the rest of the wall time), then the chunk context's share of the stages."""
    c = path["ceiling"]
    rows: List[Tuple[str, Optional[float]]] = [(label, c["stages"].get(key)) for label, key in STAGE_ROWS]
    rows.append(("file I/O (read + write) and chunking", c.get("io_and_other_s")))
    rows.append(("  of the stages: chunk context", c.get("context_s")))
    return rows


def stage_table(report: Dict[str, Any]) -> str:
    """Where the time goes, per full path (file to file, 30 s chunks with context): seconds and share of each
    stage, processed / real audio, the network's GMAC per audio second (chunk shapes run), achieved GMAC/s and
    fraction of the run's matmul peak."""
    paths = [r for r in report.get("full_paths") or [] if "ceiling" in r]
    if not paths:
        return ""
    names = [f"{r['backend']}+{r['wiener']}" for r in paths]
    width = max(14, *(len(n) for n in names))
    head = f"{'where the time goes (s, file to file)':<40}" + "".join(f" {n:>{width}}" for n in names)
    lines = [head]
    for i, (label, _) in enumerate(stage_rows(paths[0])):
        cells = []
        for r in paths:
            v = stage_rows(r)[i][1]
            text = "-" if v is None else f"{v:.2f} ({v / r['separation_s']:.0%})"
            cells.append(f" {text:>{width}}")
        lines.append(f"{label:<40}" + "".join(cells))
    extra = (("total", lambda r: f"{r['separation_s']:.2f}"),
             ("processed / real audio", lambda r: f"{r['ceiling']['processed_ratio']:.3f}"),
             ("network GMAC / audio s", lambda r: f"{r['ceiling']['gmac_per_audio_s']:.2f}"),
             ("network achieved GMAC/s", lambda r: f"{r['ceiling']['achieved_gmacs']:.1f}"),
             ("matmul peak GMAC/s (same run)", lambda r: f"{r['ceiling']['peak_gmacs']:.1f}"),
             ("network: fraction of the peak", lambda r: f"{r['ceiling']['fraction_of_peak']:.0%}"))
    for label, fmt in extra:
        lines.append(f"{label:<40}" + "".join(f" {fmt(r):>{width}}" for r in paths))
    return "\n".join(lines)


def path_stages(report: Dict[str, Any]) -> List[Tuple[str, List[Tuple[str, float]]]]:
    """``[(path label, [(stage label, best wall s), ...]), ...]`` for every path of :data:`PATHS`: forward sliCQ,
    the path's network, its Wiener-EM and inverse sliCQ, from ``report["stages"]``."""
    st = report["stages"]
    rows = []
    for backend, wiener in PATHS:
        stages = [("forward sliCQ", st["forward_slicq"]["best_s"]),
                  ("network", st[f"network_{backend}"]["best_s"]),
                  ("Wiener-EM", st[f"wiener_{wiener}"]["best_s"]),
                  ("inverse sliCQ", st["inverse_slicq"]["best_s"])]
        rows.append((f"network {backend} + Wiener {wiener}", stages))
    return rows


def stage_figure(report: Dict[str, Any]):
    """A matplotlib figure of :func:`path_stages`: one horizontal bar per path, stacked by stage (best wall times),
    its sum and real-time factor at its end, and the path's file-to-file time as a black mark when the report has
    the full paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = path_stages(report)
    colours = dict(STAGE_STYLE)
    sec = report["audio_seconds"]
    full = {(r["backend"], r["wiener"]): r["separation_s"] for r in report.get("full_paths") or []
            if "skipped" not in r}
    fig, ax = plt.subplots(figsize=(8.0, 1.0 + 0.55 * len(rows)))
    labels = []
    for y, (label, stages) in enumerate(rows):
        left = 0.0
        for stage, seconds in stages:
            ax.barh(y, seconds, left=left, color=colours[stage], edgecolor="white", linewidth=0.5,
                    label=stage if y == 0 else None)
            left += seconds
        labels.append(label)
        whole = full.get(PATHS[y])
        if whole is not None:
            ax.plot([whole, whole], [y - 0.4, y + 0.4], color="black", linewidth=1.5,
                    label=None if len(ax.lines) else "file to file (full path)")
        note = f" stages {left:.2f} s (RTF {left / sec:.3f})"
        if whole is not None:
            note += f"; file to file {whole:.2f} s"
        ax.annotate(note, (max(left, whole or 0.0), y), va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds (best of the timed calls)")
    right = max([sum(s for _, s in stages) for _, stages in rows] + list(full.values()))
    ax.set_xlim(0, right * 1.6)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, frameon=False, ncol=5)
    ax.set_title(f"separation stages on {sec:.1f} s of audio, {report['threads']} thread(s), niter "
                 f"{report['niter']}", fontsize=10)
    fig.tight_layout()
    return fig


def save_stage_figure(report: Dict[str, Any], path) -> str:
    """Write :func:`stage_figure` to ``path`` (PNG) atomically and close it; returns ``path``."""
    import matplotlib.pyplot as plt

    fig = stage_figure(report)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return str(path)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_full_path_child(sys.argv[2:]))
    print("usage: python -m export --model DIR --output DIR --profile", file=sys.stderr)
    sys.exit(2)
