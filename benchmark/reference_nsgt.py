"""Access to the reference sliCQ implementation, PyPI ``nsgt==0.19``, for tests and benchmarks only.

nsgt is licensed CC BY-NC-SA: it is a test/benchmark dependency, imported here and never copied into the
package. Install it with ``pip install --no-build-isolation nsgt==0.19`` (after numpy and setuptools).
This module patches its one numpy-2 incompatibility (an in-place ``np.clip`` of an int array) and provides the
scales it lacks (Bark, and the project's variable-Q definition).
"""

from __future__ import annotations

import types
import warnings

import numpy as np


def _safe_clip(a, lo, hi, out=None):
    """``np.clip`` that tolerates ``out`` being an int array (nsgt clips its int window lengths in place)."""
    res = np.clip(np.asarray(a, dtype=float), lo, hi)
    if out is None:
        return res
    out[...] = res
    return out


def load():
    """Import nsgt, patch it for numpy 2, and return a namespace with ``NSGT_sliced`` and ``make_scale``.

    ``make_scale(scale, fbins, fmin, fmax, gamma=25.0)`` builds the nsgt ``Scale`` matching
    ``xumx_slicq.transforms.frequency_scale`` for ``bark``, ``mel``, ``cqlog``, ``vqlog`` and ``lin``.
    Raises ImportError with the install command when nsgt is missing.
    """
    warnings.filterwarnings("ignore", message="nsgt.fft falling back")
    try:
        import nsgt
        import nsgt.nsgfwin_sl as nsgfwin_sl
        from nsgt.fscale import LinScale, LogScale, MelScale, Scale
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the reference nsgt==0.19 is not installed: pip install --no-build-isolation nsgt==0.19"
        ) from exc

    if not isinstance(nsgfwin_sl.np, types.SimpleNamespace):
        shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
        shim.clip = _safe_clip
        nsgfwin_sl.np = shim

    class BarkScale(Scale):
        """Bark scale b(f) = 6 asinh(f / 600); Q is taken numerically by nsgt's base class."""

        def __init__(self, fmin, fmax, bnds):
            Scale.__init__(self, bnds)
            self.bmin = 6 * np.arcsinh(fmin / 600)
            self.step = (6 * np.arcsinh(fmax / 600) - self.bmin) / (bnds - 1)

        def F(self, bnd=None):
            bnd = np.arange(self.bnds) if bnd is None else bnd
            return 600 * np.sinh((self.bmin + bnd * self.step) / 6)

    class VQLogScale(LogScale):
        """Log-spaced centres with bandwidth f / q + gamma."""

        def __init__(self, fmin, fmax, bnds, gamma):
            LogScale.__init__(self, fmin, fmax, bnds)
            self.gamma = gamma

        def Q(self, bnd=None):
            f = self.F(bnd)
            return self.q * f / (f + self.gamma * self.q)

    def make_scale(scale, fbins, fmin, fmax, gamma=25.0):
        builders = {
            "bark": lambda: BarkScale(fmin, fmax, fbins),
            "mel": lambda: MelScale(fmin, fmax, fbins),
            "cqlog": lambda: LogScale(fmin, fmax, fbins),
            "vqlog": lambda: VQLogScale(fmin, fmax, fbins, gamma),
            "lin": lambda: LinScale(fmin, fmax, fbins),
        }
        return builders[scale]()

    return types.SimpleNamespace(NSGT_sliced=nsgt.NSGT_sliced, make_scale=make_scale, version="0.19")
