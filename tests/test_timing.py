"""xumx_slicq.timing: the first call is kept apart, repeats are timed, the result is kept."""

import time

import pytest

from xumx_slicq.timing import time_calls


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
