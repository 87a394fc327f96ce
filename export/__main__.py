"""``python -m export``: ONNX export of the xumx-sliCQ network, and a profile of PyTorch vs ONNX Runtime vs numba.

Export (default)::

    python -m export --model pretrained-model --output out/onnx

traces the network (learned blocks' sliCQ magnitudes in, every target's masks out, dynamic number of slices)
with torch's dynamo exporter, checks it with ``onnx.checker``, runs it in ONNX Runtime on demo audio at two
lengths and writes ``<output>/xumx_slicq.onnx`` + ``xumx_slicq.onnx.json`` only if every output is within
``--tolerance`` (1e-4, relative to the largest value) of PyTorch's.

Profile::

    python -m export --model pretrained-model --output out/onnx --profile --seconds 60

reuses ``<onnx-dir>/xumx_slicq.onnx`` when it was exported from the same weights (else exports it), times every
stage of separation (forward sliCQ, network torch vs onnxruntime, Wiener-EM torch vs numba, inverse) and every
full path, prints a table and writes ``<output>/profile.json``, ``<output>/profile.txt`` and a stage-time figure
``<output>/profile.png`` (one stacked bar per path: forward sliCQ, network, Wiener-EM, inverse).

The ceiling: the profile measures the machine's float32 matmul peak at the same thread count and reports the
network's GMAC per audio second and its achieved GMAC/s as a fraction of it; every full path (file to file,
chunked as a user runs it) gets a per-stage table: forward sliCQ, network, Wiener-EM, inverse, file I/O and
chunking, the chunk context's share, processed / real audio. A song file::

    python -m export --model pretrained-model --profile --audio song.wav --seconds 0 --threads 2

int8 (a gated, quantized network next to the weights)::

    python -m export --model pretrained-model --output pretrained-model --int8

uses the float32 export of the weights (``<model>/xumx_slicq.onnx`` when current, else the per-machine cache,
exported there first), folds its constants, calibrates on training audio (``--calibration``, default
data/calib: its train split), quantizes it (``xumx_slicq.quantize.DEFAULT_CONFIG`` unless ``--quant-config``)
and runs the quality gate: every ``--gate-root`` set is separated with the float32 and the int8 network
(Wiener-EM 1 iteration) and scored (MDX SDR, mean over songs). ``<output>/xumx_slicq_int8.onnx`` + its
``.json`` sidecar are written only if the loss is at most ``--gate-threshold`` dB on every set; otherwise the
command prints the figures and exits with status 1. Takes several minutes on the default model.

``--model random`` uses the default architecture with random weights (seed 0): same cost as a trained model.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile


PROFILE_OUTPUT = "out/profile"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="model folder (default: the shipped pretrained-model/), or 'random' for the default "
                        "architecture with random weights")
    p.add_argument("--output", default=None,
                   help="output folder: the ONNX file + sidecar (required for an export), or the profile "
                        f"(default with --profile: {PROFILE_OUTPUT})")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (18)")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                   help="torch.onnx exporter: dynamo (torch.export + onnxscript, default) or the legacy torchscript")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted max|onnxruntime - torch| / max|torch| (1e-4); above it nothing is written")
    p.add_argument("--parity-seconds", type=float, nargs="+", default=[7.0, 2.5],
                   help="lengths of demo audio for the parity check, one check each (7 2.5)")
    p.add_argument("--audio-root", default="data/test", help="demo songs folder, <root>/*/mixture.wav (data/test)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for torch, numba and onnxruntime (default: torch's default)")
    p.add_argument("--fused", action="store_true",
                   help="export the fused network (buckets of grouped convolutions, xumx_slicq.fused) instead of "
                        "one graph per block; the parity check still compares with the per-block model (default off)")
    g = p.add_argument_group("profile")
    g.add_argument("--profile", action="store_true", help="profile separation instead of only exporting")
    g.add_argument("--audio", default=None, help="audio file to profile on (default: --seconds of the demo songs)")
    g.add_argument("--seconds", type=float, default=60.0,
                   help="seconds of audio to profile on (60; with --audio, 0 takes the whole file)")
    g.add_argument("--niter", type=int, default=1, help="Wiener-EM iterations (1)")
    g.add_argument("--repeats", type=int, default=2, help="timed repeats per stage after one warm-up (2)")
    g.add_argument("--onnx-dir", default=None,
                   help="where the profile finds or writes the ONNX file (default: --output)")
    g.add_argument("--tuning", action="store_true",
                   help="also time ONNX Runtime variants (optimisation levels, no IO binding, parallel execution)")
    g.add_argument("--full-paths", action=argparse.BooleanOptionalAction, default=True,
                   help="time every full path file to file in subprocesses (RTF, peak RSS; default on)")
    g.add_argument("--only-full-paths", action="store_true",
                   help="run only the full paths and add them to an existing <output>/profile.json (splits a long "
                        "profile into two shorter runs)")
    g.add_argument("--fresh-numba-cache", action="store_true",
                   help="empty numba cache, so the numba first call measures a cold compile")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true",
                   help="build the gated int8 network <output>/xumx_slicq_int8.onnx instead of the float32 export")
    q.add_argument("--calibration", default="data/calib",
                   help="calibration audio: a MUSDB18-HQ-layout root (its train split) or a folder named train "
                        "(default data/calib); never a test split")
    q.add_argument("--calib-seconds", type=float, default=6.0, help="calibration chunk length in seconds (6)")
    q.add_argument("--calib-chunks", type=int, default=5, help="calibration chunks per training track (5)")
    q.add_argument("--gate-root", nargs="+", default=["data/gpu/test", "data/test"],
                   help="song sets of the quality gate, <root>/<song>/{mixture,<targets>}.wav "
                        "(default data/gpu/test data/test)")
    q.add_argument("--gate-threshold", type=float, default=0.1,
                   help="largest accepted mean MDX SDR loss (float32 minus int8) in dB on every set (0.1)")
    q.add_argument("--gate-wiener", choices=("torch", "numba"), default="numba",
                   help="Wiener-EM backend of the gate's separations, 1 iteration (numba)")
    q.add_argument("--quant-config", default=None,
                   help="JSON object overriding keys of xumx_slicq.quantize.DEFAULT_CONFIG, e.g. "
                        "'{\"quant_format\": \"QOperator\"}' (default: none)")
    return p


def _int8(args, model, model_dir: str, export_opts, threads: int) -> int:
    """``--int8``: float32 export (found or made), quantization, gate; 0 written, 1 refused, 2 bad input."""
    from xumx_slicq.backends import onnx_for_model
    from xumx_slicq.quantize import GateError, build_int8

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        config = json.loads(args.quant_config) if args.quant_config else None
    except json.JSONDecodeError as exc:
        print(f"error: --quant-config is not JSON: {exc}", file=sys.stderr)
        return 2
    if config is not None and not isinstance(config, dict):
        print("error: --quant-config must be a JSON object", file=sys.stderr)
        return 2
    log(f"int8: finding or exporting the float32 network of {model_dir} (an export takes minutes)")
    float_path = onnx_for_model(model, model_dir, export=True, **export_opts)
    log(f"int8: float32 network {float_path}")
    try:
        meta = build_int8(model, args.output, float_path, args.calibration, args.gate_root, config,
                          args.gate_threshold, args.calib_seconds, args.calib_chunks, args.gate_wiener, threads,
                          log)
    except GateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for root, s in meta["gate"]["sets"].items():
        print(f"gate {root}: float32 {s['float32_mean_sdr']:.3f} dB, int8 {s['int8_mean_sdr']:.3f} dB, "
              f"loss {s['loss_db']:+.3f} dB over {s['songs']} songs")
    return 0


def _load(model_arg, tmp: str):
    """``(model, model_dir)``; a random model is saved into ``tmp`` so subprocesses can load it."""
    import torch

    from xumx_slicq.checkpoint import load_model, save_model
    from xumx_slicq.model import XUMXSliCQ

    if model_arg == "random":
        torch.manual_seed(0)
        model = XUMXSliCQ().eval()
        save_model(model, tmp, "xumx-slicq", note="random weights (seed 0) for profiling")
        return model, tmp
    model, _ = load_model(model_arg, arch="xumx-slicq")
    from xumx_slicq.checkpoint import DEFAULT_MODEL_DIR

    return model, str(DEFAULT_MODEL_DIR if model_arg is None else model_arg)


def _add_full_paths(out: pathlib.Path, model_dir: str, onnx_path: str, audio, niter: int, threads: int) -> int:
    """``--only-full-paths``: time the full paths on ``audio`` and merge them into ``<out>/profile.json``."""
    import soundfile as sf

    from export.profile import FIGURE_NAME, SR, format_table, full_paths, save_stage_figure
    from xumx_slicq.files import write_json, write_text

    path = out / "profile.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {path}: --only-full-paths needs the stage profile first ({exc})", file=sys.stderr)
        return 2
    if abs(report["audio_seconds"] - audio.shape[-1] / SR) > 1e-3 or report["threads"] != threads:
        print(f"error: {path} was measured on {report['audio_seconds']:.1f} s with {report['threads']} threads; "
              "use the same --seconds/--audio and --threads", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "mixture.wav")
        sf.write(wav, audio[0].numpy().T, SR, subtype="FLOAT")
        report["full_paths"] = full_paths(model_dir, wav, onnx_path, niter, threads)
    report["full_paths_load_average_at_end"] = list(os.getloadavg())
    table = format_table(report)
    print(table)
    write_json(path, report)
    write_text(out / "profile.txt", table + "\n")
    save_stage_figure(report, out / FIGURE_NAME)
    print(f"wrote {path}, {out / 'profile.txt'} and {out / FIGURE_NAME}")
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.output is None:
        if not args.profile:
            parser.error("--output is required for an export (the folder of xumx_slicq.onnx)")
        args.output = PROFILE_OUTPUT
    if args.fresh_numba_cache:  # before numba is imported anywhere
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="export_numba_")
    if args.threads is not None and args.threads < 1 or args.repeats < 1 or args.niter < 0:
        print("error: --threads and --repeats must be >= 1, --niter >= 0", file=sys.stderr)
        return 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from xumx_slicq.onnx_export import ParityError, export_model, load_or_export

    out = pathlib.Path(args.output)
    export_opts = dict(parity_seconds=args.parity_seconds, tolerance=args.tolerance, opset=args.opset,
                       dynamo=args.exporter == "dynamo", audio_root=args.audio_root, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model, model_dir = _load(args.model, tmp)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            if args.fused:
                model.set_fused(True)
            if args.int8:
                return _int8(args, model, model_dir, export_opts, threads)
            if not args.profile:
                meta = export_model(model, out, **export_opts)
                print(f"wrote {out / 'xumx_slicq.onnx'} ({meta['onnx_bytes'] / 2**20:.1f} MiB, opset {meta['opset']}, "
                      f"{meta['exporter']} exporter, {len(meta['inputs']['names'])} inputs, export "
                      f"{meta['export_s']:.1f} s)")
                for r in meta["parity"]["runs"]:
                    print(f"parity on {r['seconds']:g} s ({r['nb_slices']} slices): masks {r['masks']:.2e}, "
                          f"estimates {r['estimates']:.2e} (tolerance {args.tolerance:g})")
                print(f"wrote {out / 'xumx_slicq.onnx.json'}")
                return 0
            onnx_path, meta = load_or_export(model, args.onnx_dir or out, **export_opts)
            print(f"ONNX: {onnx_path} (parity {meta['parity']['max_relative']:.2e})", flush=True)
            from export.profile import format_table, profile, read_audio

            audio, desc = read_audio(args.audio, args.seconds, args.audio_root)
            if args.only_full_paths:
                return _add_full_paths(out, model_dir, str(onnx_path), audio, args.niter, threads)
            report = profile(model, model_dir, str(onnx_path), audio, desc, niter=args.niter, threads=threads,
                             repeats=args.repeats, tuning=args.tuning, run_full_paths=args.full_paths)
        except ParityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    report["model"] = "random (default architecture, seed 0)" if args.model == "random" else model_dir
    report["onnx"] = {"path": str(onnx_path), "exporter": meta.get("exporter"), "opset": meta.get("opset"),
                      "export_parity": meta["parity"]["max_relative"]}
    report["command"] = "python -m export " + " ".join(sys.argv[1:] if argv is None else argv)
    table = format_table(report)
    print(table)
    from export.profile import FIGURE_NAME, save_stage_figure
    from xumx_slicq.files import write_json, write_text

    write_json(out / "profile.json", report)
    write_text(out / "profile.txt", table + "\n")
    save_stage_figure(report, out / FIGURE_NAME)
    print(f"wrote {out / 'profile.json'}, {out / 'profile.txt'} and {out / FIGURE_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
