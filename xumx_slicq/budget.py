"""The per-song time budget: separation paths, their measured cost, and the watchdog that picks one per chunk.

A *path* is one way of computing a chunk, from best to cheapest::

    Wiener-EM with N iterations (numba or torch) -> ... -> 1 iteration -> no Wiener-EM (mixture phase)
    -> mixture / 4 (no model at all: always valid, costs only I/O)

:class:`CostModel` holds each path's measured cost in seconds per second of *input* processed (a chunk plus its
context on both sides); it is seeded by a calibration run at setup, then updated after every chunk (it rises at
once when a chunk is slower than expected and falls back slowly). Paths never measured are estimated from the
measured ones (Wiener-EM cost grows linearly with the iterations).

:func:`choose_path` (the watchdog's decision) is asked before every chunk which path to use, given the time
left before the soft deadline (budget minus a safety margin): the best path for this chunk such that the rest
of the song still fits on the cheapest model path; when even that cannot cover the song, the cheapest model
path for as many chunks as fit with the rest as mixture / 4; otherwise mixture / 4. A hard deadline (watched by
the engine while a chunk computes) covers a chunk that takes far longer than predicted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

#: chunking defaults of every entry point (Separator, Engine, xumx-slicq, python -m submission, predict.py): chunk
#: length, context on each side (rounded to the slice hop), cross-fade (None: the context). Here, in a module
#: without heavy imports, so command lines can show them in --help quickly; docs/wiener.md "Chunks" says why.
CHUNK_SECONDS = 30.0
CONTEXT_SECONDS = 1.0
FADE_SECONDS: Optional[float] = 0.4

#: environment variable injecting artificial per-chunk delays (tests; see :func:`parse_delays`)
DELAY_ENV = "XUMX_SUBMISSION_DELAY"


@dataclass(frozen=True)
class Path:
    """One way of separating a chunk.

    ``kind`` is ``"model"`` (the network, then Wiener-EM with ``niter`` iterations on ``wiener`` or mixture
    phase when ``niter`` is 0) or ``"mix4"`` (every stem is mixture / 4).
    """

    kind: str
    niter: int = 0
    wiener: str = "off"

    @property
    def name(self) -> str:
        """Short label used in logs and summary.json (e.g. ``wiener-numba-1``, ``no-wiener``, ``mixture/4``)."""
        if self.kind == "mix4":
            return "mixture/4"
        return "no-wiener" if self.niter == 0 else f"wiener-{self.wiener}-{self.niter}"

    @property
    def quality(self) -> int:
        """Rank used to order paths (higher is better): Wiener iterations, then no Wiener, then mixture/4."""
        return -1 if self.kind == "mix4" else self.niter


MIX4 = Path("mix4")


def build_ladder(niter: int, wiener: str) -> List[Path]:
    """Paths from best to cheapest for the requested ``niter`` and ``wiener`` (``torch``/``numba``/``auto``/``off``).

    ``auto`` offers numba and torch at each iteration count (the cheaper measured one is used).
    """
    if wiener not in ("torch", "numba", "auto", "off"):
        raise ValueError(f"wiener must be torch, numba, auto or off; got {wiener!r}")
    backends = ["numba", "torch"] if wiener == "auto" else [wiener]
    paths = []
    if wiener != "off":
        for k in range(int(niter), 0, -1):
            paths += [Path("model", k, b) for b in backends]
    return paths + [Path("model", 0, "off"), MIX4]


class CostModel:
    """Seconds per second of processed input, per path: measured, updated, and extrapolated."""

    def __init__(self, io_rate: float = 0.01):
        self.rates: Dict[Path, float] = {}
        self.io_rate = float(io_rate)  # seconds per second of output audio for reading + writing (mixture/4)

    def update(self, path: Path, seconds: float, audio_seconds: float) -> None:
        """Record that ``path`` took ``seconds`` for ``audio_seconds`` of input: rise at once, fall slowly."""
        if audio_seconds <= 0:
            return
        observed = seconds / audio_seconds
        if path.kind == "mix4":
            self.io_rate = observed if observed > self.io_rate else 0.5 * (self.io_rate + observed)
            return
        old = self.rates.get(path)
        self.rates[path] = observed if old is None or observed > old else 0.5 * (old + observed)

    def rate(self, path: Path) -> Optional[float]:
        """Seconds per input second for ``path`` (None when nothing is known about any model path)."""
        if path.kind == "mix4":
            return self.io_rate
        if path in self.rates:
            return self.rates[path]
        # extrapolate: cost = base + niter * per_iteration, from measured paths of the same Wiener backend
        same = {p.niter: r for p, r in self.rates.items() if p.kind == "model" and p.wiener in (path.wiener, "off")}
        other = {p.niter: r for p, r in self.rates.items() if p.kind == "model"}
        for known in (same, other):
            if not known:
                continue
            base = known.get(0)
            iters = [(n, r) for n, r in known.items() if n > 0]
            if base is not None and iters:
                n, r = max(iters)
                per_iter = max((r - base) / n, 0.0)
                return base + per_iter * path.niter
            if base is not None:
                # no Wiener measurement yet: assume one iteration costs as much as the network (pessimistic)
                return base * (1 + path.niter)
            n, r = max(iters)
            return r * max(path.niter, 1) / n  # pessimistic: the network counted in each iteration
        return None

    def predict(self, path: Path, audio_seconds: float) -> float:
        """Predicted seconds for ``audio_seconds`` of input on ``path``.

        0 while nothing at all has been measured (no calibration): the first chunk then runs on the best path
        and calibrates the model; the hard deadline covers it if it is far too slow.
        """
        r = self.rate(path)
        return 0.0 if r is None else r * audio_seconds


def choose_path(ladder: Sequence[Path], costs: CostModel, remaining: Sequence[float], time_left: float,
                broken: Sequence[Path] = ()) -> Path:
    """The path for the next chunk.

    If the whole rest of the song fits on the cheapest model path, the best path for *this* chunk such that the
    chunks after it still fit on the cheapest one (so Wiener-EM is used as long as possible, then dropped);
    otherwise the cheapest model path for this chunk if the rest fits as mixture/4 (the network matters far
    more than Wiener-EM, so cover as many chunks with it as possible); otherwise mixture/4.

    Args:
        ladder: paths from best to cheapest (ends with :data:`MIX4`).
        costs: the cost model.
        remaining: input seconds of the next chunk and of every chunk after it.
        time_left: seconds until the soft deadline.
        broken: paths that failed on this machine (skipped).
    """
    usable = [p for p in ladder if p not in broken and p.kind == "model"]
    if not usable or not remaining:
        return MIX4
    first, rest = float(remaining[0]), float(sum(remaining[1:]))
    # best first; among equal quality the cheaper measured one
    ranked = sorted(usable, key=lambda p: (-p.quality, costs.predict(p, 1.0)))
    cheapest = min(usable, key=lambda p: (costs.predict(p, 1.0), -p.quality))
    if costs.predict(cheapest, first + rest) <= time_left:
        for p in ranked:
            if costs.predict(p, first) + costs.predict(cheapest, rest) <= time_left:
                return p
        return cheapest
    if costs.predict(cheapest, first) + costs.predict(MIX4, rest) <= time_left:
        return cheapest
    return MIX4


def song_budget(duration: float, factor: float = 1.57, seconds: Optional[float] = None, floor: float = 5.0) -> float:
    """Per-song time limit: ``seconds`` when given, else ``max(factor * duration, floor)``."""
    if seconds is not None:
        return float(seconds)
    return max(float(factor) * float(duration), float(floor))


def parse_delays(text: Optional[str] = None) -> Dict[str, float]:
    """Artificial per-chunk delays from ``XUMX_SUBMISSION_DELAY`` (tests of the watchdog).

    Format ``kind=seconds[,kind=seconds...]`` with kind ``wiener`` (paths with Wiener-EM), ``model`` (every
    model path) or ``all`` (every path, mixture/4 included); a bare number means ``wiener``.
    """
    text = os.environ.get(DELAY_ENV, "") if text is None else text
    delays: Dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, value = item.rpartition("=")
        kind = kind or "wiener"
        if kind not in ("wiener", "model", "all"):
            raise ValueError(f"{DELAY_ENV}: unknown kind {kind!r} in {text!r} (wiener, model or all)")
        delays[kind] = float(value)
    return delays


def delay_for(path: Path, delays: Dict[str, float]) -> float:
    """Seconds of artificial delay for one chunk on ``path``."""
    d = delays.get("all", 0.0)
    if path.kind == "model":
        d += delays.get("model", 0.0)
        if path.niter > 0:
            d += delays.get("wiener", 0.0)
    return d
