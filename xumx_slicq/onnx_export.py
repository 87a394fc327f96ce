"""ONNX export of the xumx-sliCQ network: sliCQ magnitudes in, masks of every target out.

What goes into the graph: the learned blocks only (51 of 70 for the default model; passed-through blocks have
mask 1 and need no graph), each a float32 input ``(nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)`` named
``mag_<first_bin>``, and one float32 output ``mask_<first_bin>`` ``(nb_samples, nb_targets, nb_channels,
nb_bins_b, nb_slices, T_b)`` per input. ``nb_samples`` and ``nb_slices`` are dynamic, so one file serves any
song length (down to :func:`min_slices` slices). Everything complex - the sliCQ transform, the phase, Wiener-EM
and the inverse - stays outside the graph, in PyTorch or numba: the graph is plain real convolutions that ONNX
Runtime runs exactly (measured parity ~1e-7).

The export runs under ``torch.no_grad()`` so the stride-1 transposed convolutions are traced in their inference
form (padded convolutions, :func:`xumx_slicq.model.transposed_conv_as_conv`): ONNX Runtime's Conv kernels are
much faster than its ConvTranspose with dilation.

``export_model`` writes ``xumx_slicq.onnx`` only after the graph passes ``onnx.checker`` and ONNX Runtime
reproduces PyTorch within ``tolerance`` (max abs difference / max abs value of the PyTorch masks, over every
output) on the demo audio (:func:`xumx_slicq.audio.demo_audio`), then a JSON sidecar ``xumx_slicq.onnx.json``
(opset, names, shapes, parity, hashes; read back by :mod:`xumx_slicq.onnx_backend`). ``python -m export`` is
the command line; :func:`xumx_slicq.backends.onnx_for_model` exports into the per-machine cache on first use.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .audio import demo_audio
from .files import atomic_path, write_json
from .onnx_backend import ONNX_NAME, file_digest, is_current, read_sidecar, sidecar_path, weights_digest

PathLike = Union[str, os.PathLike]
DEFAULT_TOLERANCE = 1e-4
DEFAULT_OPSET = 18

__all__ = [
    "MaskGraph", "min_slices", "input_names", "output_names", "dummy_inputs", "export_onnx", "relative_error",
    "check_parity", "export_model", "load_or_export", "ParityError",
]


class ParityError(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance: nothing was written."""


class MaskGraph(nn.Module):
    """The part of :class:`xumx_slicq.model.XUMXSliCQ` that goes into the ONNX graph.

    ``forward(*mags)`` takes the learned blocks' magnitudes, ``(nb_samples, nb_channels, nb_bins_b, nb_slices,
    T_b)`` each, in block order, and returns a tuple of masks ``(nb_samples, nb_targets, nb_channels, nb_bins_b,
    nb_slices, T_b)``, one per input (the same tensors ``model.masks`` gives for those blocks).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *mags: Tensor) -> Tuple[Tensor, ...]:
        # per block, or the buckets of a fused model (model.set_fused)
        return tuple(self.model.learned_masks(list(mags)))


def learned_blocks(model: nn.Module) -> List[Any]:
    """The :class:`Block` of every learned block of ``model``, in order."""
    return [b for b, learn in zip(model.blocks, model.learned) if learn]


def input_names(model: nn.Module) -> List[str]:
    """Graph input names, ``mag_<first_bin>`` per learned block."""
    return [f"mag_{b.first_bin}" for b in learned_blocks(model)]


def output_names(model: nn.Module) -> List[str]:
    """Graph output names, ``mask_<first_bin>`` per learned block."""
    return [f"mask_{b.first_bin}" for b in learned_blocks(model)]


def min_slices(model: nn.Module) -> int:
    """Fewest slices the graph accepts: every learned block's overlap-add view must reach its encoder's
    ``min_frames`` without the short-input padding (a shape-dependent branch that a dynamic graph cannot hold).
    At least 2, so the exporter never specialises the slice axis to 1."""
    need = 2
    for blk, net in zip(learned_blocks(model), model.nets):
        s = 1
        while (s + 1) * blk.T // 2 < net.min_frames:
            s += 1
        need = max(need, s)
    return need


def dummy_inputs(model: nn.Module, nb_slices: int, nb_samples: int = 1, seed: int = 0) -> Tuple[Tensor, ...]:
    """Random non-negative magnitudes for the learned blocks, ``(nb_samples, nb_channels, nb_bins_b, nb_slices,
    T_b)`` each."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(nb_samples, model.nb_channels, b.nb_bins, nb_slices, b.T, generator=gen)
                 for b in learned_blocks(model))


def export_onnx(model: nn.Module, path: PathLike, opset: int = DEFAULT_OPSET, dynamo: bool = True,
                nb_slices: Optional[int] = None) -> Dict[str, Any]:
    """Trace the learned blocks of ``model`` into an ONNX file at ``path`` (no checks; see :func:`export_model`).

    Args:
        model: an ``XUMXSliCQ`` (eval mode is set).
        path: file to write.
        opset: ONNX opset.
        dynamo: use the ``torch.export``-based exporter (needs onnxscript); False uses the TorchScript one.
        nb_slices: slices of the example input (default ``min_slices + 3``; any value works).
    Returns:
        ``{"exporter": ..., "export_s": ...}``.
    """
    import warnings

    model = model.eval()
    graph = MaskGraph(model).eval()
    lo = min_slices(model)
    example = dummy_inputs(model, nb_slices or lo + 3)
    names_in, names_out = input_names(model), output_names(model)
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            from torch.export import Dim

            batch = Dim("nb_samples", min=1, max=64)
            slices = Dim("nb_slices", min=lo, max=1_000_000)
            shapes = tuple({0: batch, 3: slices} for _ in example)
            program = torch.onnx.export(graph, example, dynamo=True, opset_version=opset, input_names=names_in,
                                        output_names=names_out, dynamic_shapes=(shapes,), verbose=False,
                                        optimize=True, external_data=False)
            program.save(str(path))
        else:
            axes = {n: {0: "nb_samples", 3: "nb_slices"} for n in names_in + names_out}
            torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=opset, input_names=names_in,
                              output_names=names_out, dynamic_axes=axes)
    return {"exporter": "dynamo" if dynamo else "torchscript", "export_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------------------
# Parity on real audio, then the checked, atomic export
# ------------------------------------------------------------------------------------------------------------


def relative_error(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """``max |a - b| / max |b|`` over every tensor pair (b the reference)."""
    num = max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b))
    den = max(float(y.abs().max()) for y in b)
    return num / max(den, 1e-30)


def check_parity(model: nn.Module, onnx_path: PathLike, audio: Tensor, threads: Optional[int] = None
                 ) -> Dict[str, float]:
    """Compare ONNX Runtime with PyTorch on ``audio`` ``(nb_samples, nb_channels, nb_timesteps)``.

    Returns ``{"masks": rel, "estimates": rel, "nb_slices": S}`` with ``rel = max |onnx - torch| / max |torch|``
    over every learned block (estimates relative to the largest estimated magnitude).
    """
    from .onnx_backend import OnnxNetwork
    from .transforms import SliCQT

    slicqt = SliCQT(**model.slicq_config)
    fused = getattr(model, "fused", None)
    with torch.no_grad():
        mags = [b.abs() for b in slicqt(audio.float())]
        if fused is not None:  # the reference is always the per-block network
            model.set_fused(False)
        try:
            ref_masks = model.masks(mags)
            ref_est = model(mags)
        finally:
            model._fused = fused
    net = OnnxNetwork(onnx_path, device="cpu", threads=threads)
    masks = net.masks(mags)
    est = net(mags)
    keep = [i for i, learn in enumerate(model.learned) if learn]
    return {"masks": relative_error([masks[i] for i in keep], [ref_masks[i] for i in keep]),
            "estimates": relative_error([est[i] for i in keep], [ref_est[i] for i in keep]),
            "nb_slices": int(mags[0].shape[3])}


def export_model(
    model: nn.Module,
    output_dir: PathLike,
    parity_seconds: Sequence[float] = (7.0, 2.5),
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
    audio_root: PathLike = "data/test",
    threads: Optional[int] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Export, check and write ``<output_dir>/xumx_slicq.onnx`` and its sidecar ``xumx_slicq.onnx.json``.

    Steps: trace (:func:`export_onnx`) into a temporary file in ``output_dir``; ``onnx.checker.check_model``;
    parity with PyTorch on ``parity_seconds`` of demo audio each (two lengths by default: two slice counts);
    only if every parity figure is ``<= tolerance`` are the files renamed into place
    (:func:`xumx_slicq.files.atomic_path`, then the sidecar with :func:`xumx_slicq.files.write_json`).
    Otherwise :class:`ParityError` is raised and nothing is written.

    Returns:
        the sidecar content.
    """
    final = pathlib.Path(output_dir) / ONNX_NAME
    with atomic_path(final) as tmp:  # renamed into place only when the block ends without an exception
        meta = _export_and_check(model, final, tmp, parity_seconds, tolerance, opset, dynamo, audio_root, threads)
    write_json(sidecar_path(final), meta)
    return meta


def _export_and_check(model: nn.Module, final: pathlib.Path, tmp: pathlib.Path, parity_seconds: Sequence[float],
                      tolerance: float, opset: int, dynamo: bool, audio_root: PathLike, threads: Optional[int]
                      ) -> Dict[str, Any]:
    """:func:`export_model` on the temporary file ``tmp``: trace, check, parity; returns the sidecar content or
    raises (then the caller removes ``tmp``)."""
    import onnx
    import onnxruntime as ort

    tmp_side = sidecar_path(tmp)
    try:
        info = export_onnx(model, tmp, opset=opset, dynamo=dynamo)
        proto = onnx.load(tmp)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:  # noqa: BLE001 - name the file whatever the checker says
            raise ValueError(f"{final}: onnx.checker rejected the exported graph: {exc}") from exc
        ops: Dict[str, int] = {}
        for node in proto.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        blocks = [[b.first_bin, b.nb_bins, b.T, bool(learn)] for b, learn in zip(model.blocks, model.learned)]
        lb = learned_blocks(model)
        meta: Dict[str, Any] = {
            "format": "xumx-slicq-onnx/1",
            "opset": int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))),
            "ir_version": int(proto.ir_version),
            **info,
            "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "targets": list(model.targets), "nb_channels": int(model.nb_channels),
            "min_slices": min_slices(model),
            "inputs": {"names": input_names(model),
                       "shapes": [["nb_samples", model.nb_channels, b.nb_bins, "nb_slices", b.T] for b in lb],
                       "dtype": "float32", "meaning": "sliCQ magnitude of each learned block"},
            "outputs": {"names": output_names(model),
                        "shapes": [["nb_samples", model.nb_targets, model.nb_channels, b.nb_bins, "nb_slices", b.T]
                                   for b in lb],
                        "dtype": "float32", "meaning": "mask in [0, 1] per target; estimate = mask * magnitude"},
            "dynamic_axes": {"nb_samples": 0, "nb_slices": 3},
            "blocks": blocks,
            "graph_ops": dict(sorted(ops.items())),
            "model_config": model.get_config(),
            "fused": getattr(model, "fused", None) is not None,
            "weights_sha256": weights_digest(model),
        }
        # the parity check reads the sidecar through the backend: write a provisional one next to the temp file
        tmp_side.write_text(json.dumps(meta))
        parity = []
        for k, seconds in enumerate(parity_seconds):
            audio, desc = demo_audio(seconds, audio_root, offset_seconds=11.0 * k)  # (nb_timesteps, 2)
            audio = torch.from_numpy(audio.T.copy())[None]  # (1, 2, nb_timesteps)
            p = check_parity(model, tmp, audio, threads=threads)
            parity.append({"seconds": float(seconds), "audio": desc, **p})
        worst = max(max(p["masks"], p["estimates"]) for p in parity) if parity else float("nan")
        meta["parity"] = {"tolerance": tolerance, "max_relative": worst, "runs": parity,
                          "definition": "max |onnxruntime - torch| / max |torch| over all learned blocks"}
        if not parity or not worst <= tolerance:
            raise ParityError(f"{final}: ONNX Runtime differs from PyTorch by {worst:.3g} (relative), above the "
                              f"tolerance {tolerance:g}; nothing written")
        meta["onnx_sha256"] = file_digest(tmp)
        meta["onnx_bytes"] = os.path.getsize(tmp)
        return meta
    finally:
        tmp_side.unlink(missing_ok=True)


def load_or_export(model: nn.Module, output_dir: PathLike, **kwargs: Any) -> Tuple[pathlib.Path, Dict[str, Any]]:
    """``<output_dir>/xumx_slicq.onnx`` if it was exported from these very weights, else a fresh
    :func:`export_model`; returns ``(path, sidecar)``."""
    path = pathlib.Path(output_dir) / ONNX_NAME
    if is_current(path, model):
        return path, read_sidecar(path)  # type: ignore[return-value]
    return path, export_model(model, output_dir, **kwargs)
