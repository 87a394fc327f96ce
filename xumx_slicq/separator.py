"""Inference: mixture waveform in, one waveform per target out, for songs of any length in bounded memory.

Data flows one way::

    audio -> SliCQT -> |.| -> model (estimates) -> Wiener-EM (or mixture phase) -> SliCQT.inverse -> stems

Long songs go through :func:`chunked_apply`, the one place that knows about chunks: segments of
``chunk_seconds`` with ``context_seconds`` of extra input on each side, aligned to the sliCQ slice grid, and
linear cross-fades of ``context_seconds`` centred on the segment boundaries. Memory depends on the chunk
length, not on the song: :meth:`Separator.separate_file` streams from and to disk, so even its output never
sits in memory whole.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from . import files
from .budget import CHUNK_SECONDS, CONTEXT_SECONDS, FADE_SECONDS  # noqa: F401 - re-exported defaults
from .audio import resample
from .filtering import wiener_blocks
from .transforms import SliCQT, mix_phase

PathLike = Union[str, os.PathLike]
SAMPLE_RATE = 44100
WIENER_BACKENDS = ("torch", "numba", "off", "auto")
NETWORK_BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8", "auto")
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Chunking (the only place that knows about segments, context and cross-fades)
# --------------------------------------------------------------------------------------------------------------


def chunk_plan(length: int, segment: int, fade: int) -> List[Tuple[int, int]]:
    """Output ranges ``[(start, stop), ...]`` of consecutive segments covering ``[0, length)``.

    Segments are ``segment`` samples long; a last segment shorter than ``fade`` is merged into the previous one
    so every boundary has room for its cross-fade.
    """
    if length <= 0:
        return []
    if segment < max(fade, 1):
        raise ValueError(f"segment ({segment} samples) must be at least the cross-fade ({fade} samples)")
    starts = list(range(0, length, segment))
    if len(starts) > 1 and length - starts[-1] < fade:
        starts.pop()
    return [(a, starts[i + 1] if i + 1 < len(starts) else length) for i, a in enumerate(starts)]


def chunked_apply(
    process: Callable[[Tensor], Tensor],
    read: Callable[[int, int], Tensor],
    length: int,
    segment: int,
    context: int,
    fade: int,
) -> Iterator[Tuple[int, int, Tensor]]:
    """Apply ``process`` segment by segment with context and cross-fades; yield finished output in order.

    Args:
        process: maps input ``(..., nb_channels, n)`` to output ``(..., nb_targets, nb_channels, n)`` of the same
            number of samples ``n``.
        read: ``read(start, stop)`` returns input samples ``[start, stop)`` as ``(..., nb_channels, stop - start)``,
            zeros outside ``[0, length)``.
        length: samples of the whole signal.
        segment: output samples per segment.
        context: extra input samples on both sides of a segment (must be >= fade / 2 + the model's reach).
        fade: length of the linear cross-fade centred on every boundary between two segments.

    Yields:
        ``(start, stop, output)`` with ``output`` ``(..., nb_targets, nb_channels, stop - start)``; the pieces
        tile ``[0, length)`` in order. Cross-fade weights of neighbouring segments sum to one, so if ``process`` is
        exact away from its input's edges, the result equals processing the whole signal at once.
    """
    if context < fade // 2:
        raise ValueError(f"context ({context}) must be at least half the cross-fade ({fade})")
    half = fade // 2
    fade = 2 * half
    plan = chunk_plan(length, segment, fade)
    ramp: Optional[Tensor] = None
    carry: Optional[Tensor] = None  # weighted output of the previous segment over [a - half, a + half)
    for i, (a, b) in enumerate(plan):
        first, last = i == 0, i == len(plan) - 1
        y = process(read(a - context, b + context))  # covers [a - context, b + context)
        u0 = a if first else a - half
        u1 = b if last else b + half
        piece = y[..., u0 - (a - context) : u1 - (a - context)]
        if fade and (not first or not last):
            if ramp is None or ramp.dtype != piece.dtype or ramp.device != piece.device:
                # linear ramp 0 -> 1 sampled at the centre of each sample: up + down sums to one
                ramp = (torch.arange(fade, dtype=piece.dtype, device=piece.device) + 0.5) / fade
            piece = piece.clone()
            if not first:
                piece[..., :fade] *= ramp
                piece[..., :fade] += carry
            if not last:
                piece[..., -fade:] *= 1 - ramp
        if last:
            yield u0, u1, piece
        else:
            yield u0, b - half, piece[..., : b - half - u0]
            carry = piece[..., b - half - u0 :]


def _tensor_reader(x: Tensor) -> Callable[[int, int], Tensor]:
    """``read(start, stop)`` over a tensor ``(..., nb_timesteps)``, zero-padded outside it."""
    length = x.shape[-1]

    def read(start: int, stop: int) -> Tensor:
        lo, hi = max(start, 0), min(stop, length)
        part = x[..., lo:hi] if hi > lo else x[..., :0]
        return torch.nn.functional.pad(part, (lo - start, stop - start - (hi - lo) - (lo - start)))

    return read


# --------------------------------------------------------------------------------------------------------------
# Backend choice lives in backends.py (ONNX file, per-machine cache, measurement)
# --------------------------------------------------------------------------------------------------------------

from . import backends  # noqa: E402


# --------------------------------------------------------------------------------------------------------------
# The separator
# --------------------------------------------------------------------------------------------------------------


def _hop_multiple(seconds: float, hop: int, minimum: int = 1) -> int:
    return max(minimum, int(round(seconds * SAMPLE_RATE / hop))) * hop


def fade_samples(context: int, segment: int, fade_seconds: Optional[float] = None) -> int:
    """The cross-fade in samples (even): ``fade_seconds`` (None: the context), never longer than a segment or
    twice the context (``chunked_apply`` needs ``context >= fade / 2``)."""
    fade = context if fade_seconds is None else int(round(fade_seconds * SAMPLE_RATE))
    if fade < 0:
        raise ValueError(f"fade_seconds must be >= 0, got {fade_seconds}")
    return 2 * (min(fade, segment, 2 * context) // 2)


class Separator(nn.Module):
    """Chunked, bounded-memory separation with a trained model.

    Args:
        model: an ``XUMXSliCQ`` (sliCQ magnitudes in, estimates out) or a UMX / X-UMX baseline.
        niter: Wiener-EM iterations (0: the estimates take the mixture's phase, or soft masks with ``softmask``).
        softmask: initialise Wiener-EM from ratio masks instead of magnitudes x mixture phase.
        residual: add a ``residual`` target (mixture minus the others).
        wiener: ``"torch"``, ``"numba"`` (the block kernels of :mod:`xumx_slicq.wiener_numba`), ``"off"`` (same
            as ``niter=0``) or ``"auto"`` (the faster of torch and numba on this machine for the size of each piece,
            a chunk with its context or a shorter song: measured once per machine and size, cached;
            :meth:`wiener_for`).
        chunk_seconds: output seconds per segment (memory grows with it, not with the song).
        context_seconds: extra input on each side of a segment (rounded to the slice hop).
        fade_seconds: length of the cross-fade centred on every segment boundary (None: ``context_seconds``); at
            most twice the context. Output more than ``context - fade / 2`` from a chunk's input edge is exact
            without Wiener-EM once that margin covers the path's reach (docs/wiener.md, "Chunks").
        device: where to run (default: the model's device).
        backend: network backend: ``"torch"``, ``"onnxruntime"`` (the float32 exported graph, CUDA provider when
            available, see :mod:`xumx_slicq.onnx_backend`), ``"onnxruntime-int8"`` (the gated int8 graph next to
            the weights, :mod:`xumx_slicq.quantize`) or ``"auto"`` (default: the fastest of torch and whichever
            ONNX files exist - float32 next to the weights or cached, int8 only when gated - measured once per
            machine and cached in ``~/.cache/xumx_slicq/backend_choice.json``; torch without measuring when
            there is no ONNX file, as auto never exports). ONNX backends: xumx-sliCQ only.
        onnx_path: the float32 ONNX file for ``onnxruntime``/``auto`` (default: ``model_dir``'s if it matches the
            weights, else the cached one; ``onnxruntime`` exports it into the cache on first use).
        model_dir: where the model came from (looked in for ``xumx_slicq.onnx`` and ``xumx_slicq_int8.onnx``).
        onnx_options: :class:`~xumx_slicq.onnx_backend.OnnxNetwork` options (``threads``, ``optimization``,
            ``io_binding``, ``parallel``, ``memory_arena``, ``device``).
        int8_path: the int8 file for ``onnxruntime-int8``/``auto`` (default ``<model_dir>/xumx_slicq_int8.onnx``);
            used only when gated (:func:`xumx_slicq.quantize.gate_status`).

    Attributes ``backend`` and ``wiener`` hold the resolved choices (never ``"auto"``; ``wiener`` is the choice
    for a whole chunk, ``wiener_auto`` says whether shorter pieces choose again); ``backend_timings`` the
    measurements behind an ``"auto"`` choice.

    ``forward`` maps ``(nb_samples, nb_channels, nb_timesteps)`` at 44.1 kHz (1 or 2 channels) to
    ``(nb_samples, nb_targets, nb_channels, nb_timesteps)``, exactly the input length.
    """

    def __init__(
        self,
        model: nn.Module,
        niter: int = 1,
        softmask: bool = False,
        residual: bool = False,
        wiener: str = "torch",
        chunk_seconds: float = CHUNK_SECONDS,
        context_seconds: float = CONTEXT_SECONDS,
        fade_seconds: Optional[float] = FADE_SECONDS,
        device: Optional[Union[str, torch.device]] = None,
        backend: str = "auto",
        onnx_path: Optional[PathLike] = None,
        model_dir: Optional[PathLike] = None,
        onnx_options: Optional[Dict[str, Any]] = None,
        int8_path: Optional[PathLike] = None,
    ):
        super().__init__()
        if wiener not in WIENER_BACKENDS:
            raise ValueError(f"wiener must be one of {', '.join(WIENER_BACKENDS)}, got {wiener!r}")
        if backend not in NETWORK_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(NETWORK_BACKENDS)}, got {backend!r}")
        if niter < 0:
            raise ValueError(f"niter must be >= 0, got {niter}")
        self.model = model.eval()
        self.niter = 0 if wiener == "off" else int(niter)
        self.wiener = wiener if self.niter > 0 else "off"
        self.softmask, self.residual = bool(softmask), bool(residual)
        self.is_slicq = hasattr(model, "slicq_config")
        self.network: Optional[Callable[[List[Tensor]], List[Tensor]]] = None  # None: the torch model
        self.backend_timings: Optional[Dict[str, Any]] = None
        if backend != "torch" and not self.is_slicq:
            if backend != "auto":
                raise ValueError(f"backend={backend!r} exists for xumx-sliCQ only, not {type(model).__name__}")
            backend = "torch"  # auto: the baselines have one backend
        if self.wiener == "auto" and not self.is_slicq:
            self.wiener = "torch"
        self.backend = backend
        if self.is_slicq:
            self.slicqt = SliCQT(**model.slicq_config)
            hop = self.slicqt.sllen // 2  # segments aligned to the slice grid keep slices identical
        else:
            self.slicqt = None
            hop = 1024  # STFT hop of the baselines
        self.segment = _hop_multiple(chunk_seconds, hop)
        self.context = _hop_multiple(context_seconds, hop)
        self.fade = fade_samples(self.context, self.segment, fade_seconds)
        self.wiener_auto = self.wiener == "auto"  # chosen per problem size (wiener_for), measured once per machine
        self._wiener_by_size: Dict[float, Dict[str, Any]] = {}
        if backend != "torch" or self.wiener_auto:
            self._resolve_backends(onnx_path, int8_path, model_dir, dict(onnx_options or {}), device)
        self.nb_channels = int(getattr(model, "nb_channels", 2))
        self.reset_stats()
        if device is not None:
            self.to(device)

    def reset_stats(self) -> None:
        """Zero :attr:`stats`: seconds spent per stage (``forward_slicq_s``, ``network_s``, ``wiener_s``,
        ``inverse_slicq_s``; xumx-sliCQ only) and the input length of every segment run (``segment_samples``,
        context included), accumulated by :meth:`separate_segment` for the speed reports
        (:func:`xumx_slicq.flops.stage_report`)."""
        self.stats: Dict[str, Any] = {"forward_slicq_s": 0.0, "network_s": 0.0, "wiener_s": 0.0,
                                      "inverse_slicq_s": 0.0, "segment_samples": []}

    def _resolve_backends(self, onnx_path, int8_path, model_dir, onnx_options: Dict[str, Any], device) -> None:
        """Load the ONNX network and/or measure what ``"auto"`` should pick (cached per machine)."""
        from .onnx_backend import OnnxNetwork

        if "device" not in onnx_options:  # follow the separator's device: CUDA provider only for a GPU run
            dev = torch.device(device) if device is not None else self.device
            onnx_options["device"] = "cuda" if dev.type == "cuda" else "cpu"
        paths: Dict[str, pathlib.Path] = {}  # candidate network backend -> its ONNX file
        if self.backend in ("onnxruntime", "auto"):
            path = None
            try:
                # auto never exports (minutes of setup): it uses a shipped or cached ONNX file if there is one
                path = pathlib.Path(onnx_path) if onnx_path is not None else backends.onnx_for_model(
                    self.model, model_dir, export=self.backend == "onnxruntime")
            except Exception as exc:  # noqa: BLE001 - auto falls back, an explicit request fails loudly
                if self.backend == "onnxruntime":
                    raise
                log.warning("backend='auto': no float32 ONNX network (%s)", exc)
            if path is not None:
                paths["onnxruntime"] = path
            elif self.backend == "auto":
                log.info("backend='auto': no float32 xumx_slicq.onnx for these weights (write one next to them "
                         "with `python -m export --model DIR --output DIR`)")
        if self.backend in ("onnxruntime-int8", "auto"):
            path, reason = backends.int8_for_model(self.model, model_dir, int8_path)
            if path is not None:
                paths["onnxruntime-int8"] = path
            elif self.backend == "onnxruntime-int8":
                raise ValueError(f"backend='onnxruntime-int8' needs a gated int8 network: {reason} (build it with "
                                 "`python -m export --model DIR --output DIR --int8`)")
            elif int8_path is not None or reason != "absent":
                log.warning("backend='auto': int8 network ignored: %s", reason)
        if self.backend == "auto" and not paths:
            self.backend = "torch"  # nothing to choose from: no measurement
            log.info("backend='auto': no ONNX network for these weights; the network runs in torch")
        if self.backend == "auto":  # the network alone: Wiener-EM is chosen per size below
            choice = backends.choose_backends(self.model, paths, onnx_options=onnx_options)
            self.backend_timings = {"network": choice["network"], "best": {"network": choice["best"]["network"]}}
            self.backend = choice["best"]["network"]
        if self.wiener_auto:
            # the choice for a whole chunk with its context; shorter pieces (short songs, a last chunk) get theirs
            # when they come (wiener_for)
            self.wiener = self.wiener_for(self.segment + 2 * self.context)
            timings = self.backend_timings or {"best": {}}
            timings["wiener"] = self._wiener_by_size[backends.wiener_bucket(self.segment + 2 * self.context)][
                "timings"]
            timings["best"]["wiener"] = self.wiener
            timings["wiener_by_size"] = self._wiener_by_size
            self.backend_timings = timings
        if self.backend in paths:
            self.network = OnnxNetwork(paths[self.backend], **onnx_options)

    def wiener_for(self, nb_samples_audio: int) -> str:
        """The Wiener-EM backend for a piece of ``nb_samples_audio`` input samples: ``self.wiener`` unless it was
        ``"auto"``, then the faster of torch and numba for that size on this machine
        (:func:`xumx_slicq.backends.choose_wiener`: measured once per machine and 5 s size bucket, cached)."""
        if not self.wiener_auto:
            return self.wiener
        bucket = backends.wiener_bucket(nb_samples_audio)
        if bucket not in self._wiener_by_size:
            self._wiener_by_size[bucket] = backends.choose_wiener(self.model, nb_samples_audio, self.niter,
                                                                  self.softmask, self.residual)
        return self._wiener_by_size[bucket]["best"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def targets(self) -> List[str]:
        """Names of the output targets, in output order."""
        return list(self.model.targets) + (["residual"] if self.residual else [])

    # ----------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def separate_segment(self, x: Tensor) -> Tensor:
        """Separate one piece in one go: ``(nb_samples, nb_channels, n)`` -> ``(nb_samples, nb_targets,
        nb_channels, n)``. Memory grows with ``n``: use :meth:`forward` for whole songs."""
        x = x.to(self.device)
        stats = self.stats
        stats["segment_samples"].append(int(x.shape[-1]))
        if not self.is_slicq:
            return self.model.separate(x, niter=self.niter, softmask=self.softmask, residual=self.residual)
        t0 = time.perf_counter()
        mix = self.slicqt(x)  # blocks (nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)
        t1 = time.perf_counter()
        network = self.model if self.network is None else self.network
        estimates = network([b.abs() for b in mix])  # (nb_samples, nb_targets, nb_channels, ...)
        t2 = time.perf_counter()
        if self.wiener == "off" and not (self.softmask or self.residual):
            out = [mix_phase(e, m) for e, m in zip(estimates, mix)]
        else:  # "off" with softmask or residual: the initial estimate of the torch backend (niter 0)
            backend = "torch" if self.wiener == "off" else self.wiener_for(x.shape[-1])
            out = wiener_blocks(estimates, mix, backend=backend, iterations=self.niter, softmask=self.softmask,
                                residual=self.residual)
        t3 = time.perf_counter()
        y = self.slicqt.inverse(out, x.shape[-1])
        t4 = time.perf_counter()
        for key, seconds in (("forward_slicq_s", t1 - t0), ("network_s", t2 - t1), ("wiener_s", t3 - t2),
                             ("inverse_slicq_s", t4 - t3)):
            stats[key] += seconds
        return y

    def _prepare(self, x: Tensor) -> Tuple[Tensor, int]:
        if x.dim() != 3:
            raise ValueError(f"expected audio (nb_samples, nb_channels, nb_timesteps), got {tuple(x.shape)}")
        channels = x.shape[1]
        if channels == 1 and self.nb_channels == 2:
            x = x.expand(-1, 2, -1)  # mono: duplicate to stereo, average back at the end
        elif channels != self.nb_channels:
            raise ValueError(f"the model separates {self.nb_channels}-channel audio; got {channels} channels")
        return x.float(), channels

    def forward(self, x: Tensor) -> Tensor:
        """Separate whole songs.

        Args:
            x: mixture ``(nb_samples, nb_channels, nb_timesteps)`` at 44.1 kHz, mono or stereo.
        Returns:
            ``(nb_samples, nb_targets, nb_channels, nb_timesteps)`` float32 on the CPU, same length and channels.
        """
        x, channels = self._prepare(x)
        length = x.shape[-1]
        out = torch.zeros(x.shape[0], len(self.targets), x.shape[1], length)
        for start, stop, piece in chunked_apply(self.separate_segment, _tensor_reader(x), length,
                                                self.segment, self.context, self.fade):
            out[..., start:stop] = piece.cpu()
        if channels == 1 and x.shape[1] == 2:
            out = out.mean(dim=2, keepdim=True)
        return out

    # ----------------------------------------------------------------------------------------------------------
    def separate_file(self, mixture_path: PathLike, output_dir: PathLike, subtype: str = "PCM_16") -> Dict[str, pathlib.Path]:
        """Stream a 44.1 kHz file through the separator into ``output_dir/<target>.wav`` (same length, channels).

        Reads segment by segment and writes every stem to a temporary file renamed at the end, so memory stays
        flat in song length and a crash never leaves a partial stem behind. Files at other rates are resampled
        in memory first (not streamed).
        """
        import soundfile as sf

        mixture_path, output_dir = pathlib.Path(mixture_path), pathlib.Path(output_dir)
        try:
            info = sf.info(str(mixture_path))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{mixture_path}: cannot read audio: {exc}") from exc
        if info.frames == 0:
            raise ValueError(f"{mixture_path}: holds no samples")
        if info.channels not in (1, 2):
            raise ValueError(f"{mixture_path}: {info.channels} channels; expected mono or stereo")
        output_dir.mkdir(parents=True, exist_ok=True)
        finals = {t: output_dir / f"{t}.wav" for t in self.targets}
        temps: Dict[str, pathlib.Path] = {}
        writers = {}
        try:
            for t, final in finals.items():
                temps[t] = files.temp_path(final)
                writers[t] = sf.SoundFile(str(temps[t]), "w", samplerate=info.samplerate, channels=info.channels,
                                          subtype=subtype, format="WAV")
            if info.samplerate == SAMPLE_RATE:
                self._stream(mixture_path, info, writers)
            else:
                audio, _ = sf.read(str(mixture_path), dtype="float32", always_2d=True)
                stems = separate_array(self, audio, info.samplerate)
                for t in self.targets:
                    writers[t].write(stems[t])
            for w in writers.values():
                w.close()
            for t, final in finals.items():
                files.commit(temps[t], final)
        finally:
            for w in writers.values():
                if not w.closed:
                    w.close()
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
        return finals

    def _stream(self, path: pathlib.Path, info, writers) -> None:
        import soundfile as sf

        length = info.frames
        with sf.SoundFile(str(path)) as f:

            def read(start: int, stop: int) -> Tensor:
                lo, hi = max(start, 0), min(stop, length)
                f.seek(lo)
                data = f.read(hi - lo, dtype="float32", always_2d=True)  # (n, nb_channels)
                block = np.zeros((stop - start, info.channels), dtype=np.float32)
                block[lo - start : lo - start + len(data)] = data
                x = torch.from_numpy(block.T.copy())[None]  # (1, nb_channels, n)
                return self._prepare(x)[0]

            for _, _, piece in chunked_apply(self.separate_segment, read, length, self.segment, self.context,
                                             self.fade):
                piece = piece[0].cpu()  # (nb_targets, nb_channels, n)
                if info.channels == 1:
                    piece = piece.mean(dim=1, keepdim=True)
                for j, t in enumerate(self.targets):
                    writers[t].write(piece[j].T.numpy())  # (n, nb_channels)


# --------------------------------------------------------------------------------------------------------------
# Loading and the numpy-facing API
# --------------------------------------------------------------------------------------------------------------


def load_separator(model_dir: Optional[PathLike] = None, arch: Optional[str] = None, backend: str = "auto",
                   **options) -> Separator:
    """Rebuild a :class:`Separator` from a saved model folder (default: the shipped ``pretrained-model/``).

    Args:
        model_dir: the model folder (``xumx_slicq.json`` + ``.pth``; ``xumx_slicq.onnx`` is used by the
            ``onnxruntime`` backend when it matches the weights, ``xumx_slicq_int8.onnx`` by ``onnxruntime-int8``
            when gated).
        arch: which model of the folder (default: xumx-slicq first).
        backend: ``"auto"`` (default), ``"torch"``, ``"onnxruntime"`` or ``"onnxruntime-int8"`` (see
            :class:`Separator`).
        options: other :class:`Separator` arguments (``niter``, ``wiener``, ``chunk_seconds``, ``device``, ...).
    """
    from .checkpoint import default_model_dir, load_model

    device = options.pop("device", None) or "cpu"
    model, _ = load_model(model_dir, arch=arch, device=device)
    options.setdefault("model_dir", default_model_dir() if model_dir is None else model_dir)
    return Separator(model, device=device, backend=backend, **options)


def separate_array(separator: Separator, audio: np.ndarray, rate: int) -> Dict[str, np.ndarray]:
    """Separate a numpy array laid out as soundfile returns it.

    Args:
        audio: ``(nb_timesteps, nb_channels)`` or 1-D (mono), any rate.
        rate: its sampling rate.
    Returns:
        ``{target: array}``, each in the input's layout, length and rate.
    """
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2) or audio.size == 0:
        raise ValueError(f"audio must be a non-empty (nb_timesteps, nb_channels) or 1-D array, got {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"audio must be floating point (as soundfile returns it), got {audio.dtype}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite values")
    mono_1d = audio.ndim == 1
    x = audio[:, None] if mono_1d else audio
    length = x.shape[0]
    x44 = resample(x.astype(np.float32), rate, SAMPLE_RATE)
    tensor = torch.from_numpy(np.ascontiguousarray(x44.T))[None]  # (1, nb_channels, nb_timesteps)
    out = separator(tensor)[0].numpy()  # (nb_targets, nb_channels, nb_timesteps)
    stems = {}
    for j, target in enumerate(separator.targets):
        y = resample(out[j].T, SAMPLE_RATE, rate)  # (nb_timesteps, nb_channels)
        if y.shape[0] < length:
            y = np.pad(y, ((0, length - y.shape[0]), (0, 0)))
        y = y[:length].astype(audio.dtype if audio.dtype in (np.float32, np.float64) else np.float32)
        stems[target] = y[:, 0] if mono_1d else y
    return stems


def separate(audio: np.ndarray, rate: int, model_dir: Optional[PathLike] = None, **options) -> Dict[str, np.ndarray]:
    """Separate ``audio`` (``(nb_timesteps, nb_channels)`` or 1-D, any rate) into ``{target: array}``.

    ``model_dir=None`` uses the shipped model; ``options`` go to :class:`Separator`.
    """
    return separate_array(load_separator(model_dir, **options), audio, rate)
