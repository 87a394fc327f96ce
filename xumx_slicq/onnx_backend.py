"""ONNX Runtime backend of the xumx-sliCQ network: the exported graph behind the model's call interface.

``python -m export`` writes ``xumx_slicq.onnx`` (learned blocks' magnitudes in, their masks out; see
:mod:`xumx_slicq.onnx_export`) and a JSON sidecar ``xumx_slicq.onnx.json`` describing every block. :class:`OnnxNetwork`
loads both and behaves like :class:`xumx_slicq.model.XUMXSliCQ` at inference::

    estimates = net(blocks)   # blocks: (nb_samples, nb_channels, nb_bins_b, nb_slices, T_b) magnitudes

The file's identity (which weights it was exported from, whether it is intact) is read here too:
:func:`weights_digest`, :func:`file_digest`, :func:`read_sidecar`, :func:`is_current`.

Session settings (all measured, see docs/export.md):

* **providers**: ``CUDAExecutionProvider`` when onnxruntime-gpu is installed *and* a CUDA driver is present,
  then ``CPUExecutionProvider``; the provider actually used is logged (logger ``xumx_slicq.onnx_backend``) and
  kept in :attr:`OnnxNetwork.provider`.
* **threads**: ``intra_op_num_threads`` = torch's thread count unless given (fair comparisons, and no two pools
  fighting over the cores); sequential execution.
* **graph optimisation**: ``ORT_ENABLE_ALL`` (constant folding, BatchNorm folding into Conv, NCHWc layouts).
* **no CPU memory arena**: ONNX Runtime's arena keeps every buffer it ever grew; without it the peak memory of a
  song is lower at the same speed (figures in docs/export.md).
* **IO binding**: inputs are bound from the torch tensors' memory and ONNX Runtime writes the masks straight into
  preallocated torch tensors (no copy either way on CPU).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

__all__ = ["OnnxNetwork", "cuda_driver_present", "choose_providers", "session_options", "ONNX_NAME", "sidecar_path",
           "weights_digest", "file_digest", "read_sidecar", "is_current", "OPTIMIZATION_LEVELS"]

#: file name of an exported network (next to the weights, or in the per-machine cache)
ONNX_NAME = "xumx_slicq.onnx"

#: names accepted for ``optimization`` -> onnxruntime.GraphOptimizationLevel attribute
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def sidecar_path(onnx_path: PathLike) -> pathlib.Path:
    """The JSON description next to an ONNX file: ``<file>.onnx.json``."""
    p = pathlib.Path(onnx_path)
    return p.with_name(p.name + ".json")


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, shapes and float32 bytes), to tie an ONNX file to weights."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def file_digest(path: PathLike) -> str:
    """SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sidecar(onnx_path: PathLike) -> Optional[Dict[str, Any]]:
    """The sidecar of ``onnx_path`` or None when it (or the ONNX file) is missing or unreadable."""
    side = sidecar_path(onnx_path)
    if not pathlib.Path(onnx_path).is_file() or not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_current(onnx_path: PathLike, model: nn.Module) -> bool:
    """True when ``onnx_path`` was exported (and checked) from exactly these weights and is intact."""
    meta = read_sidecar(onnx_path)
    return bool(meta) and meta.get("weights_sha256") == weights_digest(model) and \
        meta.get("onnx_sha256") == file_digest(onnx_path)


def cuda_driver_present() -> bool:
    """True when the CUDA driver library loads (a GPU can be used); False on CPU-only machines."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def choose_providers(device: str = "auto") -> List[str]:
    """Execution providers to ask for, best first.

    Args:
        device: ``"auto"`` (CUDA when available and a driver is present, else CPU), ``"cuda"`` or ``"cpu"``.
    """
    import onnxruntime as ort

    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"xumx_slicq/onnx_backend.py: device must be auto, cuda or cpu, got {device!r}")
    available = ort.get_available_providers()
    driver = device != "cpu" and cuda_driver_present()
    if driver and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError("xumx_slicq/onnx_backend.py: device='cuda' asked for, but onnxruntime offers "
                           f"{available} and a CUDA driver is {'present' if driver else 'absent'}")
    return ["CPUExecutionProvider"]


def session_options(threads: Optional[int] = None, optimization: str = "all", parallel: bool = False,
                    memory_arena: bool = False):
    """``onnxruntime.SessionOptions`` with the backend's settings.

    Args:
        threads: intra-op threads (default: ``torch.get_num_threads()``).
        optimization: one of :data:`OPTIMIZATION_LEVELS`.
        parallel: run independent nodes concurrently (inter-op pool of ``threads``, intra-op 1) instead of
            one node at a time with ``threads`` threads inside it.
        memory_arena: keep ONNX Runtime's CPU memory arena (default off: same speed, lower peak memory).
    """
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"xumx_slicq/onnx_backend.py: optimization must be one of "
                         f"{', '.join(OPTIMIZATION_LEVELS)}, got {optimization!r}")
    threads = int(threads or torch.get_num_threads())
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    if parallel:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = threads
        so.intra_op_num_threads = 1
    else:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = bool(memory_arena)
    so.log_severity_level = 3  # errors only: the provider line below is ours
    return so


class OnnxNetwork:
    """An exported xumx-sliCQ graph run by ONNX Runtime, with the model's inference interface.

    Args:
        onnx_path: ``xumx_slicq.onnx`` written by ``python -m export`` (its sidecar must sit next to it).
        device: ``"auto"``, ``"cuda"`` or ``"cpu"`` (see :func:`choose_providers`).
        threads, optimization, parallel, memory_arena: see :func:`session_options`.
        io_binding: bind torch memory directly (default True; False uses ``session.run`` with numpy arrays).

    Attributes:
        provider: the execution provider in use; ``targets``; ``nb_channels``; ``meta`` (the sidecar);
        ``min_slices``: fewest slices the graph takes.
    """

    def __init__(self, onnx_path: PathLike, device: str = "auto", threads: Optional[int] = None,
                 optimization: str = "all", parallel: bool = False, io_binding: bool = True,
                 memory_arena: bool = False):
        import onnxruntime as ort

        self.path = pathlib.Path(onnx_path)
        side = sidecar_path(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX model not found (write it with `python -m export`)")
        try:
            self.meta: Dict[str, Any] = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{side}: unreadable ONNX sidecar ({exc}); re-export with `python -m export`") from exc
        try:
            self.blocks = [tuple(b) for b in self.meta["blocks"]]  # (first_bin, nb_bins, T, learned)
            self.targets = tuple(self.meta["targets"])
            self.nb_channels = int(self.meta["nb_channels"])
            self.input_names = list(self.meta["inputs"]["names"])
            self.output_names = list(self.meta["outputs"]["names"])
            self.min_slices = int(self.meta["min_slices"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{side}: missing or malformed field {exc}; re-export with `python -m export`") from exc
        if len(self.input_names) != sum(1 for b in self.blocks if b[3]):
            raise ValueError(f"{side}: {len(self.input_names)} graph inputs for "
                             f"{sum(1 for b in self.blocks if b[3])} learned blocks")
        self.threads = int(threads or torch.get_num_threads())
        self.optimization, self.parallel, self.io_binding = optimization, bool(parallel), bool(io_binding)
        providers = choose_providers(device)
        self.session = ort.InferenceSession(str(self.path), session_options(self.threads, optimization, parallel,
                                                                            memory_arena),
                                            providers=providers)
        self.provider = self.session.get_providers()[0]
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if graph_inputs != self.input_names:
            raise ValueError(f"{self.path}: graph inputs {graph_inputs[:3]}... do not match its sidecar {side.name}")
        log.info("onnxruntime %s: %s on %s (%d threads, optimisation %s%s)", ort.__version__, self.path.name,
                 self.provider, self.threads, optimization, ", parallel" if parallel else "")

    @property
    def nb_targets(self) -> int:
        return len(self.targets)

    def _check(self, blocks: Sequence[Tensor]) -> None:
        if len(blocks) != len(self.blocks):
            raise ValueError(f"{self.path.name}: expected {len(self.blocks)} sliCQ blocks, got {len(blocks)}")
        for (first, nb_bins, t, _), x in zip(self.blocks, blocks):
            if torch.is_complex(x) or x.dim() != 5 or x.shape[1] != self.nb_channels or x.shape[2] != nb_bins \
                    or x.shape[4] != t:
                raise ValueError(f"{self.path.name}: block with first bin {first} should be real (nb_samples, "
                                 f"{self.nb_channels}, {nb_bins}, nb_slices, {t}), got {tuple(x.shape)} {x.dtype}")
        if blocks[0].shape[3] < self.min_slices:
            raise ValueError(f"{self.path.name}: the graph needs at least {self.min_slices} slices, got "
                             f"{blocks[0].shape[3]} (the separator's context padding always gives more)")

    def learned_masks(self, mags: Sequence[Tensor]) -> List[Tensor]:
        """Run the graph on the learned blocks only.

        Args:
            mags: float32 ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``, one per learned block.
        Returns:
            masks ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)``, float32 CPU tensors.
        """
        mags = [m.detach().to("cpu", torch.float32).contiguous() for m in mags]
        if not self.io_binding:
            outs = self.session.run(self.output_names, {n: m.numpy() for n, m in zip(self.input_names, mags)})
            return [torch.from_numpy(o) for o in outs]
        binding = self.session.io_binding()
        outs = []
        for name_in, name_out, m in zip(self.input_names, self.output_names, mags):
            binding.bind_input(name_in, "cpu", 0, np.float32, tuple(m.shape), m.data_ptr())
            # the mask has the target axis after the sample axis: (nb_samples, nb_targets, nb_channels, ...)
            out = torch.empty((m.shape[0], self.nb_targets, *m.shape[1:]), dtype=torch.float32)
            binding.bind_output(name_out, "cpu", 0, np.float32, tuple(out.shape), out.data_ptr())
            outs.append(out)
        self.session.run_with_iobinding(binding)
        return outs

    def masks(self, blocks: Sequence[Tensor]) -> List[Tensor]:
        """Masks in [0, 1] for every block (1 for passed-through blocks), like ``XUMXSliCQ.masks``.

        Args:
            blocks: magnitudes ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)``, one per block.
        Returns:
            one ``(nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)`` per block.
        """
        self._check(blocks)
        learned = iter(self.learned_masks([x for x, b in zip(blocks, self.blocks) if b[3]]))
        out = []
        for x, b in zip(blocks, self.blocks):
            # passed-through blocks: mask 1 for every target, (nb_samples, nb_targets, nb_channels, ...)
            out.append(next(learned).to(x.device) if b[3] else x.new_ones((x.shape[0], self.nb_targets,
                                                                            *x.shape[1:])))
        return out

    def __call__(self, blocks: Sequence[Tensor]) -> List[Tensor]:
        """Estimates ``mask * mixture magnitude``, one ``(nb_samples, nb_targets, nb_channels, nb_bins_b,
        nb_slices, T_b)`` per block (passed-through blocks: the mixture for every target)."""
        self._check(blocks)
        learned = iter(self.learned_masks([x for x, b in zip(blocks, self.blocks) if b[3]]))
        out = []
        for x, b in zip(blocks, self.blocks):
            if b[3]:
                m = next(learned).to(x.device)
                out.append(m.mul_(x.unsqueeze(1)))  # in place: the mask buffer becomes the estimate
            else:
                # unsqueeze(1) + expand: the mixture for every target, (nb_samples, nb_targets, nb_channels, ...)
                out.append(x.unsqueeze(1).expand(-1, self.nb_targets, -1, -1, -1, -1).contiguous())
        return out

    def __repr__(self) -> str:
        return (f"OnnxNetwork({self.path.name}, provider={self.provider}, threads={self.threads}, "
                f"optimization={self.optimization}, io_binding={self.io_binding})")
