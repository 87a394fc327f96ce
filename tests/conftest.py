"""Test-suite settings.

torch's intra-op thread pool stalls badly when another process occupies a core (each operation waits for its
slowest thread), which turns a busy 2-core machine into 10-50x slower tests. The suite checks correctness, not
speed, so it runs torch on one thread unless XUMX_TEST_THREADS says otherwise.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("XUMX_TEST_THREADS", "1")))


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_backend_cache(tmp_path_factory):
    """The per-machine cache (ONNX exports, backend="auto" choices) of the tests lives in a temporary folder,
    so a user's cached files never change what a test measures or picks (tests may still set their own)."""
    if "XUMX_SLICQ_CACHE" not in os.environ:
        os.environ["XUMX_SLICQ_CACHE"] = str(tmp_path_factory.mktemp("xumx_cache"))
    yield


@pytest.fixture
def umask_022():
    """Run the test under umask 022: a file written with the umask's mode is 0o644 (mkstemp alone gives 0o600)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def slicqt():
    """The default transform (Bark-262, 44.1 kHz)."""
    from xumx_slicq.transforms import SliCQT

    return SliCQT()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small random xumx-sliCQ saved with save_model (same blocks and reach as the default, few channels)."""
    from xumx_slicq.checkpoint import save_model
    from xumx_slicq.model import XUMXSliCQ

    torch.manual_seed(0)
    model = XUMXSliCQ(hidden_channels=(4, 6)).eval()
    folder = tmp_path_factory.mktemp("model")
    save_model(model, folder, "xumx-slicq", note="random init for tests")
    return folder
