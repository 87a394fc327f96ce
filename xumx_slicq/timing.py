"""Wall-clock and CPU timing of a call: the project's one timing helper (backend choice, profiles, benchmarks),
and :func:`heartbeat`, which keeps long waits from being silent."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List

__all__ = ["Timing", "time_calls", "heartbeat"]


@dataclass
class Timing:
    """Seconds of each call of :func:`time_calls`: the first (warm-up) call apart, then the timed repeats."""

    first_s: float
    first_cpu_s: float
    wall_s: List[float] = field(default_factory=list)
    cpu_s: List[float] = field(default_factory=list)
    result: Any = None  # what the last call returned

    @property
    def best_s(self) -> float:
        """Fastest timed repeat (the first call when there were none)."""
        return min(self.wall_s) if self.wall_s else self.first_s

    @property
    def best_cpu_s(self) -> float:
        """Process CPU seconds of the fastest timed repeat."""
        if not self.wall_s:
            return self.first_cpu_s
        return self.cpu_s[self.wall_s.index(min(self.wall_s))]

    def record(self) -> Dict[str, Any]:
        """JSON-friendly dict (without the result)."""
        return {"first_call_s": self.first_s, "first_call_cpu_s": self.first_cpu_s, "wall_s": list(self.wall_s),
                "cpu_s": list(self.cpu_s), "best_s": self.best_s, "best_cpu_s": self.best_cpu_s}


def _one(fn: Callable[[], Any]):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def time_calls(fn: Callable[[], Any], repeats: int = 2) -> Timing:
    """Call ``fn`` once apart (compilation, allocation, caches), then ``repeats`` more times, timing each."""
    if repeats < 0:
        raise ValueError(f"repeats must be >= 0, got {repeats}")
    first, first_cpu, result = _one(fn)
    timing = Timing(first, first_cpu, result=result)
    for _ in range(repeats):
        wall, cpu, timing.result = _one(fn)
        timing.wall_s.append(wall)
        timing.cpu_s.append(cpu)
    return timing


@contextlib.contextmanager
def heartbeat(log: Callable[[str], None], message: Callable[[float], str], every: float = 5.0) -> Iterator[None]:
    """While the block runs, call ``log(message(elapsed_seconds))`` every ``every`` seconds (from a daemon thread).

    A long stage (model loading, backend measurement, calibration, a song) is then never silent for longer than
    ``every`` seconds. ``every <= 0`` disables it.
    """
    if every <= 0:
        yield
        return
    stop = threading.Event()
    t0 = time.monotonic()

    def beat() -> None:
        while not stop.wait(every):
            try:
                log(message(time.monotonic() - t0))
            except Exception:  # noqa: BLE001 - a progress line must never break the work it reports on
                pass

    thread = threading.Thread(target=beat, name="xumx-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
