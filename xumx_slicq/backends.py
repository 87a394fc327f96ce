"""Which backends run a separation: the ONNX file of a model, the per-machine cache, the measurement behind
``backend="auto"`` / ``wiener="auto"``.

* :func:`onnx_for_model`: an ONNX export of exactly these weights (next to them, or in the per-machine cache);
* :func:`int8_for_model`: the gated int8 network next to the weights (:mod:`xumx_slicq.quantize`), or why not;
* :func:`measure_backends`: time the network (torch vs the ONNX Runtime graphs: float32, int8) on noise;
* :func:`choose_backends`: the fastest, measured once per machine, architecture and candidates, cached in
  ``<cache_dir>/backend_choice.json``;
* :func:`choose_wiener`: the faster Wiener-EM backend for a problem size (the separator's chunk with context, or
  a shorter song), measured once per machine and size bucket, cached in ``<cache_dir>/wiener_choice.json``.

:class:`xumx_slicq.separator.Separator` calls these when asked for ``"auto"`` or ``"onnxruntime"``; nothing here
separates audio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pathlib
import platform
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numba
import torch
from torch import nn

from .files import write_json
from .filtering import wiener_blocks
from .onnx_backend import ONNX_NAME, OnnxNetwork, cuda_driver_present, is_current, weights_digest
from .onnx_export import load_or_export
from .timing import time_calls
from .transforms import SliCQT

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)


def cache_dir() -> pathlib.Path:
    """Per-user cache folder: ``$XUMX_SLICQ_CACHE`` or ``~/.cache/xumx_slicq``."""
    return pathlib.Path(os.environ.get("XUMX_SLICQ_CACHE") or pathlib.Path.home() / ".cache" / "xumx_slicq")


def onnx_for_model(model: nn.Module, model_dir: Optional[PathLike] = None, export: bool = True,
                   **export_options: Any) -> Optional[pathlib.Path]:
    """An ONNX file exported (and parity-checked) from exactly ``model``'s weights.

    Uses ``<model_dir>/xumx_slicq.onnx`` when its sidecar matches the weights; otherwise the per-machine cache
    ``<cache_dir>/onnx/<weights digest>/xumx_slicq.onnx``, exported on first use (``python -m export``'s
    checks: onnx.checker, parity with PyTorch <= 1e-4) unless ``export`` is False (then None when absent).
    Exporting the default model takes minutes: ship the file next to the weights.
    """
    if model_dir is not None:
        candidate = pathlib.Path(model_dir) / ONNX_NAME
        if is_current(candidate, model):
            return candidate
    folder = cache_dir() / "onnx" / weights_digest(model)[:20]
    if not export:
        return folder / ONNX_NAME if is_current(folder / ONNX_NAME, model) else None
    log.info("exporting the network to ONNX in %s (first use on this machine)", folder)
    path, _ = load_or_export(model, folder, **export_options)
    return path


def int8_for_model(model: nn.Module, model_dir: Optional[PathLike] = None, int8_path: Optional[PathLike] = None
                   ) -> Tuple[Optional[pathlib.Path], str]:
    """The gated int8 network of ``model``: ``int8_path``, else ``<model_dir>/xumx_slicq_int8.onnx``.

    Returns ``(path, "gated")`` when the file's sidecar says the quality gate passed and its digests match the
    weights and the file (:func:`xumx_slicq.quantize.gate_status`); ``(None, reason)`` otherwise, ``reason``
    ``"absent"`` when there is no file to look at.
    """
    from .quantize import INT8_NAME, gate_status

    if int8_path is None:
        if model_dir is None or not (pathlib.Path(model_dir) / INT8_NAME).exists():
            return None, "absent"
        int8_path = pathlib.Path(model_dir) / INT8_NAME
    ok, reason = gate_status(int8_path, model)
    return (pathlib.Path(int8_path), reason) if ok else (None, reason)


def _onnx_candidates(onnx_path: Union[None, PathLike, Mapping[str, PathLike]]) -> Dict[str, PathLike]:
    """``{network backend: ONNX file}`` from one float32 file (``"onnxruntime"``) or a mapping."""
    if onnx_path is None:
        return {}
    if isinstance(onnx_path, Mapping):
        return dict(onnx_path)
    return {"onnxruntime": onnx_path}


def machine_fingerprint() -> Dict[str, Any]:
    """What makes timings comparable: host, CPU model, cores, threads, library versions, GPU driver."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "numba_threads": numba.get_num_threads(), "torch": torch.__version__, "onnxruntime": ort_version,
            "numba": numba.__version__, "cuda_driver": cuda_driver_present()}


def _choice_key(model: nn.Module, options: Dict[str, Any]) -> str:
    """Cache key: machine fingerprint + architecture (not weights: they do not change the cost) + options."""
    text = json.dumps({"machine": machine_fingerprint(), "config": model.get_config(), **options}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cached(name: str, key: str, refresh: bool, measure: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``<cache_dir>/<name>[key]``, or ``measure()`` stamped with the machine and time and stored there (a cache
    that cannot be read starts empty; one that cannot be written only costs a warning)."""
    path = cache_dir() / name
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    if not refresh and key in cache:
        return cache[key]
    found = measure()
    found["machine"] = machine_fingerprint()
    found["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    cache[key] = found
    try:
        write_json(path, cache)
    except OSError as exc:  # a read-only home must not stop separation
        log.warning("cannot cache the backend choice in %s: %s", path, exc)
    return found


def measure_backends(model: nn.Module, onnx_path: Union[None, PathLike, Mapping[str, PathLike]],
                     seconds: float = 12.0, onnx_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Time the network: torch vs each ONNX file, on ``seconds`` of audio.

    ``onnx_path``: one float32 file (timed as ``"onnxruntime"``) or ``{backend: file}`` (``"onnxruntime"``,
    ``"onnxruntime-int8"``); None: torch only. Each figure is the best wall time of 2 calls after a warm-up call
    (:func:`xumx_slicq.timing.time_calls`). Wiener-EM is chosen apart, per problem size (:func:`choose_wiener`).
    Returns ``{"network": {backend: s}, "best": {"network": backend}, "seconds": seconds}``.
    """
    slicqt = SliCQT(**model.slicq_config)
    gen = torch.Generator().manual_seed(0)
    n = int(seconds * slicqt.sample_rate)
    # pink-ish noise at a music-like level: the cost does not depend on the content
    x = torch.cumsum(torch.randn(1, model.nb_channels, n, generator=gen), -1)
    x = 0.1 * (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-6)
    with torch.no_grad():
        mags = [b.abs() for b in slicqt(x)]
        network: Dict[str, float] = {"torch": time_calls(lambda: model(mags)).best_s}
        for name, path in _onnx_candidates(onnx_path).items():
            net = OnnxNetwork(path, **(onnx_options or {}))
            network[name] = time_calls(lambda net=net: net(mags)).best_s
    return {"network": network, "best": {"network": min(network, key=network.get)}, "seconds": seconds}


def choose_backends(model: nn.Module, onnx_path: Union[None, PathLike, Mapping[str, PathLike]],
                    refresh: bool = False, onnx_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The measured fastest network backend for this machine (:func:`measure_backends`' result), cached in
    ``<cache_dir>/backend_choice.json`` (keyed by machine fingerprint, architecture, the candidate network
    backends and the ONNX options). The first measurement is logged (WARNING, so it shows without any logging
    setup) before it starts: it takes seconds to a minute."""
    networks = sorted(_onnx_candidates(onnx_path))
    key = _choice_key(model, {"onnx": networks, "onnx_options": dict(onnx_options or {})})

    def measure() -> Dict[str, Any]:
        log.warning("measuring the network backends %s once on this machine (12 s of noise, a few seconds to a "
                    "minute; the choice is cached in %s)", ["torch", *networks], cache_dir() / "backend_choice.json")
        found = measure_backends(model, onnx_path, onnx_options=onnx_options)
        log.warning("backend='auto': network %s (measured, s: %s)", found["best"]["network"], found["network"])
        return found

    return _cached("backend_choice.json", key, refresh, measure)


# --------------------------------------------------------------------------------------------------------------
# Wiener-EM: torch or numba, chosen per problem size
# --------------------------------------------------------------------------------------------------------------

#: Wiener-EM choices are measured per size bucket of this many seconds of input (a chunk with its context)
WIENER_BUCKET_S = 5.0


def wiener_bucket(nb_samples_audio: int, sample_rate: int = 44100) -> float:
    """The size bucket (seconds of input, a multiple of :data:`WIENER_BUCKET_S`) a Wiener-EM problem of
    ``nb_samples_audio`` samples is measured and cached under."""
    return WIENER_BUCKET_S * max(1, math.ceil(nb_samples_audio / sample_rate / WIENER_BUCKET_S - 1e-9))


def measure_wiener(model: nn.Module, seconds: float, niter: int, softmask: bool = False, residual: bool = False,
                   candidates: Sequence[str] = ("torch", "numba"), repeats: int = 2) -> Dict[str, float]:
    """Best wall seconds of :func:`~xumx_slicq.filtering.wiener_blocks` per backend on ``seconds`` of noise
    through the model's transform, after a first call apart (numba's compilation or cache load). The estimates are
    the mixture magnitudes split into random shares per target: the cost does not depend on the content, so the
    network is not run."""
    slicqt = SliCQT(**model.slicq_config)
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, model.nb_channels, int(seconds * slicqt.sample_rate), generator=gen)
    with torch.no_grad():
        mix = slicqt(x)  # blocks (1, nb_channels, nb_bins_b, nb_slices, T_b)
        shares = torch.rand(1, model.nb_targets, 1, 1, 1, 1, generator=gen)
        est = [m.abs().unsqueeze(1) * shares for m in mix]  # (1, nb_targets, nb_channels, nb_bins_b, S, T_b)
        opts = dict(iterations=niter, softmask=softmask, residual=residual)
        return {w: time_calls(lambda w=w: wiener_blocks(est, mix, backend=w, **opts), repeats).best_s
                for w in candidates}


def choose_wiener(model: nn.Module, nb_samples_audio: int, niter: int, softmask: bool = False,
                  residual: bool = False, candidates: Sequence[str] = ("torch", "numba"), refresh: bool = False
                  ) -> Dict[str, Any]:
    """The faster Wiener-EM backend for problems of ``nb_samples_audio`` input samples on this machine.

    Measured (:func:`measure_wiener`) at the size bucket's length (:func:`wiener_bucket`) once per machine,
    transform, channels, targets, options and bucket, and cached in ``<cache_dir>/wiener_choice.json``: which
    backend wins depends on the problem size and on the machine (docs/wiener.md). Returns ``{"best": backend,
    "timings": {backend: s}, "bucket_seconds": ..., "machine": ..., "measured_at": ...}``.
    """
    bucket = wiener_bucket(nb_samples_audio, int(model.slicq_config.get("sample_rate", 44100)))
    options = {"niter": niter, "softmask": softmask, "residual": residual, "candidates": list(candidates),
               "bucket_seconds": bucket}
    text = json.dumps({"machine": machine_fingerprint(), "slicq": model.slicq_config, "channels": model.nb_channels,
                       "targets": model.nb_targets, **options}, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:24]

    def measure() -> Dict[str, Any]:
        timings = measure_wiener(model, bucket, niter, softmask, residual, candidates)
        log.info("wiener='auto' for %g s inputs: %s (measured: %s)", bucket, min(timings, key=timings.get), timings)
        return {"best": min(timings, key=timings.get), "timings": timings, "bucket_seconds": bucket}

    return _cached("wiener_choice.json", key, refresh, measure)
