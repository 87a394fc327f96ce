"""Test-suite settings.

torch's intra-op thread pool stalls badly when another process occupies a core (each operation waits for its
slowest thread), which turns a busy 2-core machine into 10-50x slower tests. The suite checks correctness, not
speed, so it runs torch on one thread unless XUMX_TEST_THREADS says otherwise.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("XUMX_TEST_THREADS", "1")))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def slicqt():
    """The default transform (Bark-262, 44.1 kHz)."""
    from xumx_slicq.transforms import SliCQT

    return SliCQT()
