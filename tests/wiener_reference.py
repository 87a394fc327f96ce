"""Shared by the Wiener-EM tests: the norbert reference, random inputs, the error measure and the block view.

The reference is norbert 0.2.1, composed from its public functions (``norbert.softmask`` and
``norbert.expectation_maximization``) with open-unmix's residual and ``scale_factor`` conventions.
"""

import itertools

import norbert
import numpy as np
import torch

TOL = 1e-4  # acceptance tolerance (relative, Frobenius norm and max-abs)

# (iterations, softmask, residual, channels, sources)
GRID = list(itertools.product((0, 1, 2), (False, True), (False, True), (1, 2), (1, 2, 3, 4)))
GRID_IDS = [f"it{i}-sm{int(s)}-res{int(r)}-ch{c}-src{j}" for i, s, r, c, j in GRID]


def rel_err(a, b):
    """Largest of the Frobenius-relative and max-abs-relative differences of a against b."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    return max(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300), np.abs(a - b).max() / scale)


def norbert_wiener(v, x, iterations, softmask, residual, scale_factor=10.0, eps=1e-10):
    """norbert 0.2.1 with open-unmix's residual source and scale_factor (inputs are copied).

    v: real `(nb_frames, nb_bins, {1, nb_channels}, nb_sources)`; x: complex `(nb_frames, nb_bins, nb_channels)`.
    """
    v, x = v.copy(), x.copy()
    if softmask:
        y = norbert.softmask(v, x, eps=eps)
    else:
        y = v * np.exp(1j * np.angle(x[..., None]))
    if y.shape[2] != x.shape[2]:
        y = np.broadcast_to(y, x.shape + y.shape[-1:]).copy()
    if residual:
        y = np.concatenate([y, x[..., None] - y.sum(axis=-1, keepdims=True)], axis=-1)
    if iterations == 0:
        return y
    max_abs = max(1.0, np.abs(x).max() / scale_factor)
    y = norbert.expectation_maximization(y / max_abs, x / max_abs, iterations, eps=eps)[0]
    return y * max_abs


def make_inputs(seed, nb_frames=16, nb_bins=5, nb_channels=2, nb_sources=3, dtype=np.float64, loud=30.0,
                target_channels=None):
    """Random mixture `(F, B, C)` (peaks above scale_factor so the normalisation is active) and targets
    `(F, B, Ct, J)`."""
    rng = np.random.default_rng(seed)
    cdtype = np.complex64 if dtype == np.float32 else np.complex128
    x = (rng.standard_normal((nb_frames, nb_bins, nb_channels))
         + 1j * rng.standard_normal((nb_frames, nb_bins, nb_channels))) * rng.uniform(0.05, loud, (1, nb_bins, 1))
    tch = nb_channels if target_channels is None else target_channels
    v = np.abs(x[..., :tch])[..., None] * rng.uniform(0.0, 1.0, (nb_frames, nb_bins, tch, nb_sources))
    return v.astype(dtype), x.astype(cdtype)


def as_block(v, x):
    """STFT-layout numpy inputs as one sliCQ block of one sample and one slice (torch views, no copy).

    v `(F, B, Ct, J)` -> `(1, J, Ct, B, 1, F)`; x `(F, B, C)` -> `(1, C, B, 1, F)`.
    """
    vb = torch.from_numpy(v).permute(3, 2, 1, 0)[None, :, :, :, None, :]  # (F, B, Ct, J) -> (1, J, Ct, B, 1, F)
    xb = torch.from_numpy(x).permute(2, 1, 0)[None, :, :, None, :]  # (F, B, C) -> (1, C, B, 1, F)
    return vb, xb


def from_block(y):
    """One output block `(1, J', C, B, 1, F)` back to the STFT layout `(F, B, C, J')` (numpy)."""
    return y[0, :, :, :, 0, :].permute(3, 2, 1, 0).numpy()  # (J', C, B, F) -> (F, B, C, J')


def run_torch(v, x, *args, **kwargs):
    """`xumx_slicq.wiener.wiener` on numpy inputs ``(nb_frames, nb_bins, nb_channels[, nb_sources])``, numpy out."""
    from xumx_slicq.wiener import wiener

    return wiener(torch.from_numpy(v), torch.from_numpy(x), *args, **kwargs).numpy()


def run_numba(v, x, *args, **kwargs):
    """The numba backend of `wiener_blocks` on one STFT-layout problem (numpy in, numpy out)."""
    from xumx_slicq.filtering import wiener_blocks

    vb, xb = as_block(v, x)
    (y,) = wiener_blocks([vb], [xb], "numba", *args, **kwargs)
    return from_block(y)


#: backend name -> runner with the STFT-layout signature of :func:`run_torch`
RUNNERS = {"torch": run_torch, "numba": run_numba}
