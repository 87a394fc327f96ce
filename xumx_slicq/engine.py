"""The separation engine: one loaded model, its separation paths, and time-budgeted separation of one song.

:meth:`Engine.separate` is what the ``xumx-slicq`` command (:mod:`xumx_slicq.cli`), the MDX batch runner
(``python -m submission``) and ``predict.py`` call. It
streams the mixture through :func:`xumx_slicq.separator.chunked_apply` with ``Separator.separate_segment`` of
the path the watchdog picks for each chunk (see :mod:`xumx_slicq.budget`), on a worker thread, while the calling
thread writes finished pieces and watches a hard deadline: if a chunk runs so late that the song would overrun,
the rest of the song is written as mixture / 4 at once, so four valid stems always exist before the limit.
With an infinite budget (quality first, ``--no-budget``) every chunk takes the best path and there is no deadline.

Nothing is silent: model loading, backend measurement, calibration and every song report progress through
``log`` at least every ``heartbeat`` seconds, and a song any chunk of which took a cheaper path than the best one
(or fell to mixture / 4) is reported as *degraded*: ``SongResult.degraded``, ``degraded_chunks`` (which chunks,
which path, why) and a warning.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from .separator import SAMPLE_RATE, chunk_plan, chunked_apply, fade_samples
from . import timing

from .audio_io import MixtureReader, StemWriter, probe
from .budget import CHUNK_SECONDS, CONTEXT_SECONDS, FADE_SECONDS, MIX4, CostModel, Path, build_ladder, choose_path, delay_for, parse_delays

#: the four stems of the challenge, in file order
STEMS = ("bass", "drums", "other", "vocals")
#: a chunk should take at most this fraction of the song's budget, so the watchdog gets several decisions
GRANULARITY = 0.34
#: the hard deadline sits this fraction of the budget before the limit (room for the emergency fill)
HARD_MARGIN = 0.04
#: at most this many seconds pass without a progress line during setup and separation
HEARTBEAT = 5.0
#: finished pieces the worker may hold ahead of the writer (bounds memory when chunks are cheaper than writing)
PIECES_AHEAD = 2


def _summarise_paths(names: List[str]) -> str:
    """``["a", "a", "b"]`` -> ``"a x2, b x1"`` (order of first use); one name alone stays bare."""
    counts: Dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} x{c}" for n, c in counts.items())


def describe_degradation(song, result: "SongResult") -> str:
    """One line naming the song, the degraded chunks (time ranges), their paths and the first reason."""
    parts = [f"chunk {c['chunk']} ({c['start_s']:.1f}-{c['end_s']:.1f} s) {c['path']}" for c in result.degraded_chunks]
    seconds = sum(c["end_s"] - c["start_s"] for c in result.degraded_chunks)
    return (f"{song}: DEGRADED: {seconds:.1f} s of {result.duration:.1f} s separated below the best path "
            f"{result.best_path}: {'; '.join(parts)} (why: {result.degraded_chunks[0]['reason']})")


@dataclass
class SongResult:
    """What happened to one song (the fields of its summary.json record)."""

    duration: float = 0.0
    budget: float = 0.0
    time: float = 0.0
    path: str = ""
    chunks: List[str] = field(default_factory=list)
    chunk_seconds: float = 0.0
    emergency: bool = False
    warnings: List[str] = field(default_factory=list)
    best_path: str = ""
    degraded_chunks: List[Dict] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        """Whether any part of the song took a cheaper path than the best one (or mixture / 4)."""
        return bool(self.degraded_chunks)

    def record(self) -> Dict:
        """JSON-friendly dict (an infinite budget, quality first, is ``null``)."""
        finite = math.isfinite(self.budget)
        return {
            "duration_s": round(self.duration, 3), "budget_s": round(self.budget, 3) if finite else None,
            "time_s": round(self.time, 3), "within_budget": self.time <= self.budget, "path": self.path,
            "best_path": self.best_path, "chunks": self.chunks, "chunk_seconds": round(self.chunk_seconds, 3),
            "emergency": self.emergency, "degraded": self.degraded, "degraded_chunks": self.degraded_chunks,
            "warnings": self.warnings,
        }


def _load_variant(model_dir, arch, backend: str, niter: int, wiener: str, device: str, log: Callable):
    """``load_separator`` for one path; returns ``(separator, backend used)``.

    If a backend other than ``torch`` fails to load (no ONNX Runtime, no or a broken ONNX file), the torch
    network is used instead, with a warning.
    """
    from xumx_slicq.separator import load_separator

    options = dict(niter=niter, wiener=wiener, device=device)
    if backend != "torch":
        try:
            sep = load_separator(model_dir, arch, backend=backend, **options)
            return sep, str(sep.backend)
        except FileNotFoundError:
            raise  # no model at all: not a backend problem
        except Exception as exc:  # noqa: BLE001 - any ONNX failure: fall back to torch, never stop
            log(f"warning: backend {backend} failed to load ({type(exc).__name__}: {exc}); using torch")
    return load_separator(model_dir, arch, **options), "torch"


class Engine:
    """A loaded model with its separation paths and cost model.

    Args:
        model_dir: saved model folder (None: the shipped ``pretrained-model/``).
        arch: architecture to pick in that folder (None: the preferred one present).
        backend: ``torch``, ``onnxruntime``, ``onnxruntime-int8`` or ``auto`` (passed to ``load_separator``; torch
            when it fails to load).
        niter: most Wiener-EM iterations to use.
        wiener: ``auto`` (numba or torch, whichever measures cheaper), ``numba``, ``torch`` or ``off``.
        device: torch device.
        chunk_seconds: longest chunk; shorter ones are used when a chunk would take too much of a song's budget.
        context_seconds: extra input on each side of a chunk.
        fade_seconds: cross-fade centred on every chunk boundary (None: the context).
        safety: fraction of each budget kept in reserve by the watchdog.
        subtype: soundfile subtype of the stems.
        calibrate: time the paths on 8 s of noise now, so the first song is planned from measurements.
        progress: show a progress bar over the chunks of long songs.
        log: where messages go (one string per call).
        heartbeat: longest silence in seconds while loading, measuring, calibrating or separating (0: none).
        output_format: container of the stems (``WAV`` or ``FLAC``).
    """

    def __init__(self, model_dir=None, arch: Optional[str] = None, backend: str = "auto", niter: int = 1,
                 wiener: str = "auto", device: str = "cpu", chunk_seconds: float = CHUNK_SECONDS,
                 context_seconds: float = CONTEXT_SECONDS, safety: float = 0.15, subtype: str = "FLOAT",
                 calibrate: bool = True, progress: bool = False, log: Optional[Callable[[str], None]] = None,
                 heartbeat: float = HEARTBEAT, output_format: str = "WAV",
                 fade_seconds: Optional[float] = FADE_SECONDS):
        self.log = log or (lambda msg: print(msg, flush=True))
        self.heartbeat, self.output_format = float(heartbeat), output_format
        if not 0 <= safety < 1:
            raise ValueError(f"safety must be in [0, 1), got {safety}")
        self.ladder = build_ladder(niter, wiener)
        self.safety, self.subtype, self.progress = float(safety), subtype, progress
        self.delays = parse_delays()
        self.costs = CostModel()
        self.broken: set = set()
        self._compute = threading.Lock()
        self.variants: Dict[Path, object] = {}
        self.backend = backend
        self._model_dir, self._arch, self._device = model_dir, arch, device
        models = [p for p in self.ladder if p.kind == "model"]
        self.log(f"loading the model from {model_dir or 'the shipped model folder'} ({len(models)} path(s): "
                 f"{', '.join(p.name for p in models)}; network backend {backend})")
        state = {"path": ""}

        def loading(elapsed: float) -> str:
            return (f"  still loading {state['path']} ({elapsed:.0f} s; the first run on a machine measures the "
                    f"backends, later runs reuse the cached choice)")

        with timing.heartbeat(self.log, loading, self.heartbeat):
            for p in models:
                state["path"] = p.name
                # the first variant resolves the backend (auto measures once); the others reuse the choice
                sep, self.backend = _load_variant(model_dir, arch, self.backend, p.niter, p.wiener, device,
                                                  self.log)
                self.variants[p] = sep
        first = next(iter(self.variants.values()))
        self.order = list(first.targets)  # output order of separate_segment
        missing = [s for s in STEMS if s not in self.order]
        if missing:
            raise ValueError(f"the model's targets {self.order} lack {missing}: cannot write the challenge's stems")
        slicqt = getattr(first, "slicqt", None)
        self.hop = slicqt.sllen // 2 if slicqt is not None else 1024  # chunks aligned to the slice grid
        self.max_chunk = self._hop_multiple(chunk_seconds)
        self.context = self._hop_multiple(context_seconds)
        self.fade_seconds = fade_seconds
        if calibrate:
            self.calibrate()

    def _fallback_to_torch(self, failure: BaseException) -> bool:
        """Reload every path on the torch network after the ONNX one failed mid-song; True if it worked."""
        self.log(f"warning: network backend {self.backend} failed ({type(failure).__name__}: {failure}); "
                 f"switching to torch")
        try:
            with self._compute:
                variants = {p: _load_variant(self._model_dir, self._arch, "torch", p.niter, p.wiener, self._device,
                                             self.log)[0] for p in self.variants}
        except Exception as exc:  # noqa: BLE001 - then the failing paths are dropped one by one instead
            self.log(f"warning: cannot load the torch network either ({type(exc).__name__}: {exc})")
            return False
        self.variants, self.backend = variants, "torch"
        return True

    def _hop_multiple(self, seconds: float) -> int:
        return max(1, int(round(seconds * SAMPLE_RATE / self.hop))) * self.hop

    # ----------------------------------------------------------------------------------------------------------
    def _run_path(self, path: Path, x: Tensor) -> Tensor:
        """Separate ``x`` ``(1, 2, n)`` on ``path`` -> ``(1, nb_targets, 2, n)`` on the CPU (targets in
        ``self.order``; on the CPU so that chunks of a GPU path and of mixture/4 cross-fade together)."""
        if path.kind == "mix4":
            y = (x / 4).unsqueeze(1).expand(-1, len(self.order), -1, -1)  # (1, 2, n) -> (1, nb_targets, 2, n)
        else:
            y = self.variants[path].separate_segment(x).cpu()
        extra = delay_for(path, self.delays)
        if extra > 0:
            time.sleep(extra)
        return y

    def calibrate(self, seconds: float = 8.0) -> Dict[str, float]:
        """Time the paths on ``seconds`` of noise (after a warm-up that compiles numba); seeds the cost model.

        Measures the network without Wiener-EM and every Wiener backend at its highest iteration count; the
        other paths are extrapolated. Returns ``{path name: seconds per input second}``.
        """
        gen = torch.Generator().manual_seed(0)
        n = int(seconds * SAMPLE_RATE)
        x = 0.1 * torch.randn(1, 2, n, generator=gen)
        measured: Dict[str, float] = {}
        todo = [p for p in self.ladder if p.kind == "model"]
        tops: Dict[str, Path] = {}
        for p in todo:
            if p.niter == 0 or p.wiener not in tops:
                tops[p.wiener if p.niter else "off"] = p
        for k, p in enumerate(tops.values(), 1):
            self.log(f"calibrating path {k}/{len(tops)} ({p.name}) on {seconds:g} s of noise")
            try:
                beat = lambda s, p=p: f"  still calibrating {p.name} ({s:.0f} s)"  # noqa: E731
                with timing.heartbeat(self.log, beat, self.heartbeat):
                    self.variants[p].separate_segment(x[..., : SAMPLE_RATE // 2])  # warm-up (numba compiles here)
                    t = time.perf_counter()
                    self.variants[p].separate_segment(x)
                    dt = time.perf_counter() - t
            except Exception as exc:  # noqa: BLE001 - a path that fails here is never used
                self.log(f"warning: path {p.name} failed during calibration ({type(exc).__name__}: {exc}); "
                         f"it will not be used")
                self.broken.add(p)
                continue
            self.costs.update(p, dt, seconds)
            measured[p.name] = dt / seconds
        # I/O cost of mixture/4: a few seconds written to a temporary folder next to nothing else
        t = time.perf_counter()
        block = np.ascontiguousarray((x[0] / 4).T.numpy())  # (n, 2)
        import io

        import soundfile as sf

        for _ in STEMS:
            buf = io.BytesIO()
            sf.write(buf, block, SAMPLE_RATE, subtype="FLOAT", format="WAV")
        self.costs.io_rate = max(2 * (time.perf_counter() - t) / seconds, 0.002)
        measured["mixture/4"] = self.costs.io_rate
        self.log(f"calibration (network backend {self.backend}; s per s of input): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in measured.items()))
        return measured

    # ----------------------------------------------------------------------------------------------------------
    def choose_chunk(self, length: int, budget: float) -> int:
        """Longest chunk (a multiple of the slice hop) whose predicted time on the best usable path stays below
        :data:`GRANULARITY` x ``budget``; the shortest candidate when none does."""
        if not math.isfinite(budget):
            return self.max_chunk  # quality first: no deadline to plan for
        best = choose_path(self.ladder, self.costs, [1.0], float("inf"), self.broken)
        candidates = sorted({self.max_chunk} | {self._hop_multiple(s) for s in (20.0, 15.0, 10.0, 5.0)
                                                if self._hop_multiple(s) < self.max_chunk}, reverse=True)
        if self.costs.rate(best) is None:
            return candidates[-1]  # nothing measured yet: a short first chunk calibrates quickly
        for c in candidates:
            one = min(c, length) + 2 * self.context
            if self.costs.predict(best, one / SAMPLE_RATE) <= GRANULARITY * budget:
                return c
        return candidates[-1]

    def separate(self, mixture: os.PathLike, finals: Mapping[str, os.PathLike], budget: float,
                 start: Optional[float] = None, info=None) -> SongResult:
        """Separate ``mixture`` into ``finals`` within ``budget`` s (``math.inf``: quality first, no deadline).

        ``finals`` maps stems to paths: targets of the model (some of :data:`STEMS`) and ``no_<target>`` for the
        sum of every other target (two-stem output). ``start`` is the ``time.monotonic()`` the budget counts
        from (default: now). Raises :class:`~xumx_slicq.audio_io.InputError` /
        :class:`~xumx_slicq.audio_io.OutputError`; on any error no temporary file is left and no final file is
        touched.
        """
        t0 = time.monotonic() if start is None else start
        info = info or probe(mixture)
        result = SongResult(duration=info.duration, budget=float(budget), warnings=list(info.warnings))
        for w in info.warnings:
            self.log(f"warning: {w}")
        reader = MixtureReader(info)
        length = reader.length
        try:
            writer = StemWriter(finals, info.frames, info.rate, self.subtype, self.output_format)
        except BaseException:
            reader.close()
            raise
        segment = self.choose_chunk(length, budget)
        fade = fade_samples(self.context, segment, self.fade_seconds)  # as the Separator
        plan = chunk_plan(length, segment, fade)
        inputs = [(b - a + 2 * self.context) / SAMPLE_RATE for a, b in plan]  # input seconds of every chunk
        result.chunk_seconds = segment / SAMPLE_RATE
        resampling = info.rate != SAMPLE_RATE
        reserve = 0.2 + length / SAMPLE_RATE * (0.03 if resampling else 0.002)  # closing, resampling, renames
        soft_deadline = t0 + budget * (1 - self.safety) - reserve
        hard_deadline = t0 + budget * (1 - HARD_MARGIN) - reserve
        costs = self.costs  # this song's cost model, even if the engine's is replaced meanwhile
        mono = info.channels == 1
        best = max(p.quality for p in self.ladder if p.kind == "model") if self.variants else MIX4.quality
        result.best_path = next((p.name for p in self.ladder if p.quality == best), MIX4.name)
        state = {"index": 0, "path": ""}
        why: Dict[int, str] = {}  # chunk index -> why it left the best path
        cancel = threading.Event()
        pieces: "queue.Queue" = queue.Queue(maxsize=PIECES_AHEAD)

        def hand_over(item) -> bool:
            """Queue ``item`` for the writing thread, waiting while it is behind; False once it gave up."""
            while not cancel.is_set():
                try:
                    pieces.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def process(x: Tensor) -> Tensor:
            i = state["index"]
            state["index"] += 1
            time_left = soft_deadline - time.monotonic()
            path = choose_path(self.ladder, costs, inputs[i:], time_left, self.broken)
            if path.quality < best:
                usable = self._best_usable()
                if usable.quality < best:
                    why[i] = "the better paths failed earlier: " + ", ".join(
                        p.name for p in self.ladder if p in self.broken)
                else:
                    rest = sum(inputs[i:])
                    why[i] = (f"time budget: {max(time_left, 0.0):.1f} s left for {rest:.1f} s of input "
                              f"(best path predicted {costs.predict(usable, rest):.1f} s)")
            while True:
                state["path"] = path.name
                # one model chunk at a time per engine: a chunk abandoned by an earlier song may still be computing,
                # and numba's workqueue layer must never run two parallel kernels at once
                with self._compute if path.kind == "model" else contextlib.nullcontext():
                    t = time.perf_counter()
                    try:
                        y, failure = self._run_path(path, x), None
                    except Exception as exc:  # noqa: BLE001 - degrade to the next path rather than fail the song
                        y, failure = None, exc
                    elapsed = time.perf_counter() - t
                if failure is not None:
                    if path.kind == "mix4":
                        raise failure
                    if self.backend != "torch" and self._fallback_to_torch(failure):
                        continue  # same path again, on the torch network
                    self.log(f"warning: path {path.name} failed ({type(failure).__name__}: {failure}); "
                             f"falling back to a cheaper path")
                    self.broken.add(path)
                    later = self.ladder[self.ladder.index(path) + 1:]
                    path = next(p for p in later if p not in self.broken)
                    why[i] = f"path failed: {type(failure).__name__}: {failure}"
                    continue
                if path.kind == "model":  # mixture/4 costs I/O: measured where the pieces are written
                    costs.update(path, elapsed, x.shape[-1] / SAMPLE_RATE)  # also when abandoned: it was slow
                if not cancel.is_set():  # an abandoned chunk's output is discarded: not part of the song
                    result.chunks.append(path.name)
                    if path.quality < best:
                        a, b = plan[i]
                        result.degraded_chunks.append({
                            "chunk": i, "start_s": round(a / SAMPLE_RATE, 3), "end_s": round(b / SAMPLE_RATE, 3),
                            "path": path.name, "reason": why.get(i) or "a path of the same quality failed"})
                return y

        def work() -> None:
            try:
                for a, b, piece in chunked_apply(process, reader.read, length, segment, self.context, fade):
                    data = piece[0].cpu().numpy()  # (nb_targets, 2, n)
                    if mono:  # a mono song gives identical channels: the average of the two estimates
                        data = np.repeat(data.mean(axis=1, keepdims=True), 2, axis=1)
                    if not hand_over(("piece", a, b, data)):
                        return
                hand_over(("end",))
            except BaseException as exc:  # noqa: BLE001 - hand every failure to the writing thread
                hand_over(("error", exc))
            finally:
                reader.close()

        bar = None
        if self.progress and len(plan) > 3:
            from tqdm import tqdm

            bar = tqdm(total=len(plan), desc="chunks", unit="chunk", leave=False)

        def beat(elapsed: float) -> str:
            k = min(state["index"], len(plan))
            return f"  {info.path.name}: chunk {k}/{len(plan)} on {state['path'] or '-'} ({elapsed:.0f} s)"

        worker = threading.Thread(target=work, name="xumx-separate", daemon=True)
        pos = 0  # samples written (44.1 kHz)
        try:
            with timing.heartbeat(self.log, beat, self.heartbeat if bar is None else 0.0):
                worker.start()
                while True:
                    if math.isfinite(hard_deadline):
                        emergency_cost = costs.predict(MIX4, (length - pos) / SAMPLE_RATE) * 1.5 + 0.1
                        wait = hard_deadline - emergency_cost - time.monotonic()
                    else:
                        wait = None  # quality first: wait for every chunk
                    try:
                        if wait is None:
                            item = pieces.get()
                        else:
                            item = pieces.get(timeout=max(wait, 0.0)) if wait > 0 else pieces.get_nowait()
                    except queue.Empty:
                        cancel.set()
                        result.emergency = True
                        self.log(f"warning: {info.path}: chunk running past the hard deadline; writing the last "
                                 f"{(length - pos) / SAMPLE_RATE:.1f} s as mixture/4")
                        self._fill_mix4(info, writer, pos, length)
                        result.chunks.append("mixture/4 (emergency)")
                        result.degraded_chunks.append({
                            "chunk": sum(1 for _, b in plan if b <= pos), "start_s": round(pos / SAMPLE_RATE, 3),
                            "end_s": round(length / SAMPLE_RATE, 3), "path": "mixture/4 (emergency)",
                            "reason": f"hard deadline: a chunk on {state['path']} was still running "
                                      f"{time.monotonic() - t0:.1f} s into a {budget:.1f} s budget"})
                        break
                    if item[0] == "error":
                        raise item[1]
                    if item[0] == "end":
                        break
                    _, a, b, data = item
                    t = time.perf_counter()
                    writer.write(data, self.order)
                    costs.update(MIX4, time.perf_counter() - t, (b - a) / SAMPLE_RATE)  # the real I/O rate
                    pos = b
                    if bar is not None:
                        bar.n = min(state["index"], len(plan))
                        bar.refresh()
                writer.commit()
        except BaseException:
            cancel.set()
            writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        result.time = time.monotonic() - t0
        result.path = _summarise_paths(result.chunks)
        if reader.nonfinite:
            msg = f"{info.path}: NaN/Inf samples replaced by 0 ({reader.nonfinite} values read)"
            result.warnings.append(msg)
            self.log(f"warning: {msg}")
        if result.degraded:
            msg = describe_degradation(info.path, result)
            result.warnings.append(msg)
            self.log(f"warning: {msg}")
        return result

    def _best_usable(self) -> Path:
        """The best path not marked broken (mixture/4 when none is left)."""
        return next((p for p in self.ladder if p.kind == "model" and p not in self.broken), MIX4)

    def _fill_mix4(self, info, writer: StemWriter, start: int, length: int) -> None:
        """Write mixture / 4 for samples ``[start, length)`` (44.1 kHz) with a fresh reader."""
        block = 10 * SAMPLE_RATE
        with MixtureReader(info) as reader:
            for a in range(start, length, block):
                b = min(a + block, length)
                x = reader.read(a, b)  # (1, 2, n)
                y = (x / 4).unsqueeze(1).expand(-1, len(self.order), -1, -1)  # (1, nb_targets, 2, n)
                writer.write(y[0].numpy(), self.order)
