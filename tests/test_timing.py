"""xumx_slicq.timing: the first call is kept apart, repeats are timed, the result is kept; the heartbeat speaks
while a block runs and stops with it."""

import time

import pytest

from xumx_slicq.timing import heartbeat, time_calls


def test_time_calls_counts_and_orders():
    calls = []

    def fn():
        calls.append(len(calls))
        time.sleep(0.02 if len(calls) == 1 else 0.001)  # a slow first call, as a compile would be
        return len(calls)

    t = time_calls(fn, repeats=3)
    assert len(calls) == 4 and t.result == 4
    assert len(t.wall_s) == len(t.cpu_s) == 3
    assert t.first_s >= 0.02 > t.best_s == min(t.wall_s)
    rec = t.record()
    assert rec["best_s"] == t.best_s and rec["first_call_s"] == t.first_s and "result" not in rec


def test_time_calls_without_repeats_uses_first_call():
    t = time_calls(lambda: "x", repeats=0)
    assert t.wall_s == [] and t.best_s == t.first_s and t.result == "x"
    with pytest.raises(ValueError):
        time_calls(lambda: None, repeats=-1)


def test_heartbeat_speaks_while_the_block_runs_and_stops_after():
    lines = []
    with heartbeat(lines.append, lambda s: f"still working ({s:.2f} s)", every=0.05):
        time.sleep(0.3)
    n = len(lines)
    assert n >= 3 and lines[0].startswith("still working")
    time.sleep(0.15)
    assert len(lines) == n  # stopped with the block
    with heartbeat(lines.append, lambda s: "never", every=0):
        time.sleep(0.1)
    assert "never" not in lines
