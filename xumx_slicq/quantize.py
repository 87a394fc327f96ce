"""int8 network: static quantization of the exported float32 graph, gated on separation quality.

:func:`build_int8` turns the float32 ONNX export (:mod:`xumx_slicq.onnx_export`) into ``xumx_slicq_int8.onnx``::

    float32 export -> fold constants (ONNX Runtime, basic level: BatchNorm into Conv, weight reshapes)
        -> calibrate on TRAINING audio (chunks -> sliCQ magnitudes -> the graph's inputs)
        -> onnxruntime.quantization.quantize_static (per-channel int8 weights, see DEFAULT_CONFIG)
        -> quality gate: separate the gate sets with the float32 and the int8 network through the same
           pipeline (Separator, Wiener-EM), MDX SDR per song, mean per set
        -> written (atomically, with its sidecar) only if the SDR loss is <= threshold on every set

The sidecar ``xumx_slicq_int8.onnx.json`` carries what :class:`xumx_slicq.onnx_backend.OnnxNetwork` needs
(block table, names, shapes: copied from the float32 sidecar) and the int8 file's identity: ``weights_sha256``
(the weights it was quantized from), ``onnx_sha256`` (the int8 file), ``float32_onnx_sha256``, the gate figures
and verdict, the quantization config and the calibration data. :func:`gate_status` reads them back: the
separator uses an int8 file only when it is *gated* (gate passed, both digests match).

The choices behind :data:`DEFAULT_CONFIG` (what was tried, the ratios) are in docs/export.md.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .audio import mdx_sdr
from .files import atomic_path, write_json
from .onnx_backend import file_digest, read_sidecar, sidecar_path, weights_digest

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

__all__ = [
    "INT8_NAME", "DEFAULT_CONFIG", "DEFAULT_THRESHOLD_DB", "GateError", "fold_constants",
    "calibration_tracks", "CalibrationReader", "quantize_network", "gate_sets", "separate_set", "build_int8",
    "gate_status",
]

#: file name of the gated int8 network, next to the weights
INT8_NAME = "xumx_slicq_int8.onnx"
#: largest accepted loss of mean MDX SDR (float32 minus int8), dB, on every gate set
DEFAULT_THRESHOLD_DB = 0.1
#: format tag of the int8 sidecar
INT8_FORMAT = "xumx-slicq-onnx-int8/1"

#: the quantization config used unless told otherwise (the fastest one that passed the gate, docs/export.md)
DEFAULT_CONFIG: Dict[str, Any] = {
    "quant_format": "QDQ",
    "op_types": ["Conv", "Relu"],
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "calibrate_method": "MinMax",
    "extra_options": {},
}


class GateError(RuntimeError):
    """The int8 network lost more SDR than the gate allows: nothing was written. ``figures`` holds the numbers."""

    def __init__(self, message: str, figures: Dict[str, Any]):
        super().__init__(message)
        self.figures = figures


# ------------------------------------------------------------------------------------------------------------
# Graph preparation and calibration data
# ------------------------------------------------------------------------------------------------------------


def fold_constants(src: PathLike, dst: PathLike) -> None:
    """Write ``src`` with its constants folded: ONNX Runtime's basic offline optimisation (BatchNorm folded into
    the Conv before it, the transposed convolutions' weight reshapes/flips computed), so every convolution
    weight is an initializer the quantizer can quantize. Standard ONNX ops only; same outputs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def calibration_tracks(root: PathLike) -> List[Any]:
    """The training tracks of a calibration root: ``<root>/train/<song>/mixture.wav`` (MUSDB18-HQ layout, every
    track of the train folder, validation ones included: all are training-corpus audio), or ``<root>/<song>/
    mixture.wav`` when ``root`` is itself a split folder named ``train``. Never a test split."""
    from .data import WavTrack, list_tracks

    root = pathlib.Path(root)
    if (root / "train").is_dir():
        return list_tracks(root, "train", valid_fraction=0.0)
    if root.name == "train" and root.is_dir():
        songs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if songs:
            return [WavTrack(p, files=("mixture",)) for p in songs]
    raise FileNotFoundError(f"{root}: no training songs for calibration (expected <root>/train/<song>/mixture.wav "
                            "or a folder named train holding <song>/mixture.wav)")


class CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over training audio.

    Every track's mixture is cut into ``chunk_seconds`` pieces (at most ``chunks_per_track`` per track, evenly
    spread); each piece goes through the sliCQ transform and yields the graph's inputs: ``{mag_<first_bin>:
    float32 (1, nb_channels, nb_bins_b, nb_slices, T_b)}``, learned blocks only.

    Args:
        tracks: objects with ``read("mixture", start, frames) -> (nb_channels, frames)`` and ``nb_frames``
            (:func:`calibration_tracks`).
        model: the ``XUMXSliCQ`` (its transform configuration and learned blocks).
        chunk_seconds, chunks_per_track: calibration pieces.
        transform: ``mags -> mags`` applied to every piece's magnitudes (tests sabotage calibration with it).
    """

    def __init__(self, tracks: Sequence[Any], model: nn.Module, chunk_seconds: float = 6.0,
                 chunks_per_track: int = 5, transform: Optional[Callable[[List[torch.Tensor]], List[torch.Tensor]]]
                 = None):
        from .onnx_export import input_names
        from .transforms import SliCQT

        self.tracks, self.model = list(tracks), model
        self.slicqt = SliCQT(**model.slicq_config)
        self.names = input_names(model)
        self.chunk = int(round(chunk_seconds * self.slicqt.sample_rate))
        self.chunks_per_track = int(chunks_per_track)
        self.transform = transform
        self.plan = []  # (track, start)
        for t in self.tracks:
            n = max(1, min(self.chunks_per_track, t.nb_frames // self.chunk))
            room = max(0, t.nb_frames - self.chunk)
            self.plan += [(t, int(round(room * k / max(n - 1, 1)))) for k in range(n)]
        self.description = (f"{len(self.tracks)} training tracks ({', '.join(t.name for t in self.tracks)}), "
                            f"{len(self.plan)} chunks of {chunk_seconds:g} s")
        self._it: Optional[Iterator[Dict[str, np.ndarray]]] = None

    def __len__(self) -> int:
        return len(self.plan)

    def _items(self) -> Iterator[Dict[str, np.ndarray]]:
        learned = self.model.learned
        for track, start in self.plan:
            audio = torch.from_numpy(track.read("mixture", start, self.chunk))[None]  # (1, nb_channels, n)
            with torch.no_grad():
                mags = [b.abs() for b in self.slicqt(audio)]
            if self.transform is not None:
                mags = self.transform(mags)
            mags = [m for m, learn in zip(mags, learned) if learn]
            yield {n: m.contiguous().numpy().astype(np.float32) for n, m in zip(self.names, mags)}

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._it is None:
            self._it = self._items()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def _ort_enum(module: Any, name: str, value: str) -> Any:
    try:
        return getattr(module, value)
    except AttributeError:
        raise ValueError(f"quantize.py: unknown {name} {value!r}") from None


def quantize_network(float_path: PathLike, out_path: PathLike, reader: Any, config: Optional[Dict[str, Any]] = None
                     ) -> Dict[str, Any]:
    """Static quantization of a folded float32 graph (:func:`fold_constants`) into ``out_path`` (no checks).

    Args:
        float_path: the folded float32 ONNX file.
        out_path: where the quantized graph goes.
        reader: a :class:`CalibrationReader` (any ``get_next``/``rewind`` reader works).
        config: keys of :data:`DEFAULT_CONFIG` (missing ones take its values): ``quant_format`` QDQ or QOperator,
            ``op_types`` to quantize, ``activation_type`` / ``weight_type`` (QUInt8, QInt8), ``per_channel``,
            ``reduce_range``, ``calibrate_method`` (MinMax, Entropy, Percentile), ``extra_options``.
    Returns:
        the full config used, with ``quantize_s``.
    """
    import onnxruntime.quantization as q

    cfg = {**DEFAULT_CONFIG, **(config or {})}
    # (not CalibMaxIntermediateOutputs: onnxruntime 1.31 drops the collected ranges when it is set)
    extra = dict(cfg.get("extra_options") or {})
    t0 = time.perf_counter()
    q.quantize_static(
        str(float_path), str(out_path), _Rewinding(reader),
        quant_format=_ort_enum(q.QuantFormat, "quant_format", cfg["quant_format"]),
        op_types_to_quantize=list(cfg["op_types"]),
        per_channel=bool(cfg["per_channel"]), reduce_range=bool(cfg["reduce_range"]),
        activation_type=_ort_enum(q.QuantType, "activation_type", cfg["activation_type"]),
        weight_type=_ort_enum(q.QuantType, "weight_type", cfg["weight_type"]),
        calibrate_method=_ort_enum(q.CalibrationMethod, "calibrate_method", cfg["calibrate_method"]),
        extra_options=extra,
    )
    return {**cfg, "quantize_s": time.perf_counter() - t0}


class _Rewinding:
    """Wraps a reader so that the quantizer always starts from its first item (``rewind`` on first use)."""

    def __init__(self, reader: Any):
        self.reader, self.started = reader, False

    def get_next(self):
        if not self.started:
            self.started = True
            if hasattr(self.reader, "rewind"):
                self.reader.rewind()
        return self.reader.get_next()

    def rewind(self):
        if hasattr(self.reader, "rewind"):
            self.reader.rewind()


# ------------------------------------------------------------------------------------------------------------
# The quality gate
# ------------------------------------------------------------------------------------------------------------


def gate_sets(roots: Sequence[PathLike]) -> Dict[str, List[pathlib.Path]]:
    """``{root: [song folders]}``: every ``<root>/<song>/`` holding ``mixture.wav`` and the four stems."""
    sets = {}
    for root in roots:
        root = pathlib.Path(root)
        songs = sorted(p for p in root.glob("*") if p.is_dir() and (p / "mixture.wav").is_file())
        if not songs:
            raise FileNotFoundError(f"{root}: no <song>/mixture.wav for the quality gate")
        sets[str(root)] = songs
    return sets


def separate_set(separator: nn.Module, songs: Sequence[PathLike], log: Callable[[str], None] = lambda m: None
                 ) -> List[Dict[str, Any]]:
    """Separate every song folder with ``separator`` and score it.

    Returns one ``{"song": name, "sdr": {target: MDX SDR}, "mean": mean over the targets}`` per song (the
    separator's targets, each against ``<song>/<target>.wav``).
    """
    from .data import WavTrack

    rows = []
    for k, folder in enumerate(songs, 1):
        folder = pathlib.Path(folder)
        track = WavTrack(folder, files=("mixture", *separator.targets))
        mix = torch.from_numpy(track.read("mixture"))[None]  # (1, nb_channels, nb_timesteps)
        est = separator(mix)[0].numpy()  # (nb_targets, nb_channels, nb_timesteps)
        sdr = {t: mdx_sdr(track.read(t), est[j]) for j, t in enumerate(separator.targets)}
        rows.append({"song": folder.name, "sdr": sdr, "mean": float(np.mean(list(sdr.values())))})
        log(f"  {folder.parent.name}/{folder.name} ({k}/{len(songs)}): {rows[-1]['mean']:.3f} dB")
    return rows


def _gate_separator(model: nn.Module, onnx_path: PathLike, wiener: str, threads: Optional[int]) -> nn.Module:
    from .separator import Separator

    return Separator(model, niter=1, wiener=wiener, backend="onnxruntime", onnx_path=onnx_path,
                     onnx_options={"threads": threads, "device": "cpu"})


def run_gate(model: nn.Module, float_path: PathLike, int8_path: PathLike, roots: Sequence[PathLike],
             threshold: float = DEFAULT_THRESHOLD_DB, wiener: str = "numba", threads: Optional[int] = None,
             log: Callable[[str], None] = lambda m: None) -> Dict[str, Any]:
    """Separate every gate set with both networks (same Separator, Wiener-EM 1 iteration) and compare.

    Returns ``{"threshold_db", "passed", "sets": {root: {"songs", "float32_mean_sdr", "int8_mean_sdr", "loss_db",
    "passed", "per_song": [...]}}, "pipeline"}``; ``loss_db`` = float32 minus int8 mean MDX SDR.
    """
    sets = gate_sets(roots)
    seps = {"float32": _gate_separator(model, float_path, wiener, threads),
            "int8": _gate_separator(model, int8_path, wiener, threads)}
    out: Dict[str, Any] = {"threshold_db": float(threshold), "sets": {},
                           "pipeline": f"Separator(niter=1, wiener={wiener!r}, chunk 30 s, context 3 s), "
                                       "MDX SDR per target, mean over targets per song, mean over songs per set"}
    for root, songs in sets.items():
        res: Dict[str, Any] = {"songs": len(songs)}
        for kind, sep in seps.items():
            log(f"gate: separating {len(songs)} songs of {root} with the {kind} network")
            res[kind] = separate_set(sep, songs, log)
        f, q = (float(np.mean([r["mean"] for r in res[k]])) for k in ("float32", "int8"))
        entry = {"songs": len(songs), "float32_mean_sdr": f, "int8_mean_sdr": q, "loss_db": f - q,
                 "passed": bool(f - q <= threshold),
                 "per_song": [{"song": a["song"], "float32": a["mean"], "int8": b["mean"]}
                              for a, b in zip(res["float32"], res["int8"])]}
        out["sets"][root] = entry
        log(f"gate: {root}: float32 {f:.3f} dB, int8 {q:.3f} dB, loss {f - q:+.3f} dB "
            f"({'pass' if entry['passed'] else 'FAIL'}, threshold {threshold:g} dB)")
    out["passed"] = all(s["passed"] for s in out["sets"].values())
    return out


def _gate_summary(gate: Dict[str, Any]) -> str:
    return "; ".join(f"{root}: float32 {s['float32_mean_sdr']:.3f} dB, int8 {s['int8_mean_sdr']:.3f} dB, loss "
                     f"{s['loss_db']:+.3f} dB" for root, s in gate["sets"].items())


def build_int8(
    model: nn.Module,
    output_dir: PathLike,
    float_path: PathLike,
    calibration_root: PathLike = "data/calib",
    gate_roots: Sequence[PathLike] = ("data/gpu/test", "data/test"),
    config: Optional[Dict[str, Any]] = None,
    threshold: float = DEFAULT_THRESHOLD_DB,
    chunk_seconds: float = 6.0,
    chunks_per_track: int = 5,
    wiener: str = "numba",
    threads: Optional[int] = None,
    log: Callable[[str], None] = lambda m: None,
    calibration_transform: Optional[Callable[[List[torch.Tensor]], List[torch.Tensor]]] = None,
) -> Dict[str, Any]:
    """Quantize, gate and write ``<output_dir>/xumx_slicq_int8.onnx`` + its sidecar (see the module docstring).

    Args:
        model: the ``XUMXSliCQ`` whose float32 export ``float_path`` is (checked by digest).
        output_dir: where the int8 file goes (next to the weights to be used by the separator).
        float_path: the parity-checked float32 export of ``model`` (:func:`xumx_slicq.backends.onnx_for_model`).
        calibration_root: training audio (:func:`calibration_tracks`); never a test split.
        gate_roots: song folders to gate on (each ``<root>/<song>/{mixture,<targets>}.wav``).
        config: quantization config (:func:`quantize_network`; default :data:`DEFAULT_CONFIG`).
        threshold: largest accepted loss of mean MDX SDR in dB, on every gate set.
        chunk_seconds, chunks_per_track: calibration pieces (:class:`CalibrationReader`).
        wiener: Wiener-EM backend of the gate's separations (1 iteration).
        threads: ONNX Runtime threads (default torch's).
        log: progress lines.
        calibration_transform: applied to the calibration magnitudes (tests break the quantization with it).
    Returns:
        the sidecar content.
    Raises:
        GateError: the loss exceeds ``threshold`` on a set; nothing is written (the figures are in the message
        and in ``.figures``).
    """
    float_path = pathlib.Path(float_path)
    side = read_sidecar(float_path)
    digest = weights_digest(model)
    if not side or side.get("weights_sha256") != digest or side.get("onnx_sha256") != file_digest(float_path):
        raise ValueError(f"{float_path}: not a checked float32 export of these weights (export it first with "
                         "`python -m export --model DIR --output DIR`)")
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    tracks = calibration_tracks(calibration_root)
    reader = CalibrationReader(tracks, model, chunk_seconds, chunks_per_track, calibration_transform)
    final = pathlib.Path(output_dir) / INT8_NAME
    import tempfile

    with tempfile.TemporaryDirectory(prefix="xumx_int8_") as work, atomic_path(final) as tmp:
        folded = pathlib.Path(work) / "folded.onnx"
        log(f"int8: folding constants of {float_path}")
        fold_constants(float_path, folded)
        log(f"int8: calibrating on {reader.description} from {calibration_root}, then quantizing "
            f"({cfg['quant_format']}, {'+'.join(cfg['op_types'])}, {cfg['activation_type']}/{cfg['weight_type']})")
        used = quantize_network(folded, tmp, reader, cfg)
        keep = ("format", "opset", "ir_version", "targets", "nb_channels", "min_slices", "inputs", "outputs",
                "dynamic_axes", "blocks", "model_config")
        meta: Dict[str, Any] = {k: side[k] for k in keep if k in side}
        meta.update({"format": INT8_FORMAT, "weights_sha256": digest, "float32_onnx_sha256": side["onnx_sha256"]})
        import onnxruntime as ort

        meta["onnxruntime"] = ort.__version__
        meta["quantization"] = {k: v for k, v in used.items() if k != "quantize_s"}
        meta["quantize_s"] = used["quantize_s"]
        meta["calibration"] = {"root": str(calibration_root), "description": reader.description,
                               "chunk_seconds": chunk_seconds, "chunks_per_track": chunks_per_track,
                               "transform": None if calibration_transform is None else repr(calibration_transform)}
        tmp_side = sidecar_path(tmp)
        try:
            tmp_side.write_text(json.dumps(meta))  # the gate's OnnxNetwork reads it
            gate = run_gate(model, float_path, tmp, gate_roots, threshold, wiener, threads, log)
        finally:
            tmp_side.unlink(missing_ok=True)
        meta["gate"] = gate
        if not gate["passed"]:
            raise GateError(f"{final}: refused by the quality gate (mean MDX SDR loss above {threshold:g} dB on "
                            f"{', '.join(r for r, s in gate['sets'].items() if not s['passed'])}): "
                            f"{_gate_summary(gate)}; nothing written", gate)
        meta["onnx_sha256"] = file_digest(tmp)
        meta["onnx_bytes"] = os.path.getsize(tmp)
    write_json(sidecar_path(final), meta)
    log(f"int8: wrote {final} ({meta['onnx_bytes'] / 2**20:.1f} MiB) and its sidecar; gate passed: "
        f"{_gate_summary(gate)}")
    return meta


def gate_status(path: PathLike, model: nn.Module) -> Tuple[bool, str]:
    """Whether the int8 file ``path`` may be used with ``model``: ``(True, "gated")`` or ``(False, reason)``.

    Gated means: the file and its sidecar exist, the sidecar is an int8 one whose gate passed, its
    ``weights_sha256`` is ``model``'s and its ``onnx_sha256`` the file's.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return False, f"{path}: no such file"
    meta = read_sidecar(path)
    if meta is None:
        return False, f"{path}: missing or unreadable sidecar {sidecar_path(path).name}"
    if meta.get("format") != INT8_FORMAT:
        return False, f"{sidecar_path(path)}: not an int8 sidecar (format {meta.get('format')!r})"
    gate = meta.get("gate") or {}
    if gate.get("passed") is not True:
        return False, f"{sidecar_path(path)}: the quality gate did not pass"
    if meta.get("weights_sha256") != weights_digest(model):
        return False, f"{sidecar_path(path)}: quantized from other weights (digest mismatch)"
    if meta.get("onnx_sha256") != file_digest(path):
        return False, f"{path}: file digest differs from its sidecar's (modified or corrupt)"
    return True, "gated"
