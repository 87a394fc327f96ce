"""Saving and loading models: ``<model_dir>/<name>.pth`` (weights) + ``<model_dir>/<name>.json`` (how to rebuild).

The JSON holds ``{"arch": ..., "config": model.get_config(), ...}`` plus whatever the trainer adds (training
arguments, history, best epoch, data description, git commit). Every file is written atomically
(:mod:`xumx_slicq.files`), so a crash never leaves a half-written checkpoint.

Architectures: ``xumx-slicq`` (files ``xumx_slicq.*``), ``umx`` (``umx.*``) and ``xumx`` (``xumx.*``).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from . import files

PathLike = Union[str, os.PathLike]

#: architecture name -> file stem
ARCH_FILES = {"xumx-slicq": "xumx_slicq", "umx": "umx", "xumx": "xumx"}

#: environment variable naming the model folder used wherever none is given
MODEL_DIR_ENV = "XUMX_MODEL_DIR"
#: where the shipped model lives in a checkout, and inside the installed package (``pip install .`` copies
#: ``pretrained-model/`` there as package data)
CHECKOUT_MODEL_DIR = pathlib.Path(__file__).resolve().parent.parent / "pretrained-model"
PACKAGE_MODEL_DIR = pathlib.Path(__file__).resolve().parent / "pretrained"


def default_model_dir() -> pathlib.Path:
    """The model folder used when none is given: ``$XUMX_MODEL_DIR`` when set; else the checkout's
    ``pretrained-model/`` when it holds a model; else the copy installed with the package; else (no model
    anywhere) the checkout's path, so error messages name where the model was expected."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return pathlib.Path(env)
    for folder in (CHECKOUT_MODEL_DIR, PACKAGE_MODEL_DIR):
        if any((folder / f"{stem}.json").is_file() for stem in ARCH_FILES.values()):
            return folder
    return CHECKOUT_MODEL_DIR


#: the shipped model (see README) as found at import time; ``None`` wherever a model directory is asked for
#: means :func:`default_model_dir` (looked up at that moment)
DEFAULT_MODEL_DIR = default_model_dir()


def build_model(arch: str, config: Optional[Dict[str, Any]] = None) -> nn.Module:
    """An untrained model of architecture ``arch`` from its construction arguments."""
    if arch == "xumx-slicq":
        from .model import XUMXSliCQ

        return XUMXSliCQ(**(config or {}))
    if arch in ("umx", "xumx"):
        from .baselines import build_baseline

        return build_baseline(arch, config)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCH_FILES)}")


def save_model(model: nn.Module, model_dir: PathLike, arch: str, **meta: Any) -> pathlib.Path:
    """Write ``<model_dir>/<name>.pth`` and ``<name>.json``; returns the JSON path.

    ``meta`` is stored in the JSON next to ``arch`` and ``config`` (training args, history, ...).
    """
    if arch not in ARCH_FILES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCH_FILES)}")
    model_dir = pathlib.Path(model_dir)
    stem = ARCH_FILES[arch]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with files.atomic_path(model_dir / f"{stem}.pth") as tmp:
        torch.save(state, tmp)
    json_path = model_dir / f"{stem}.json"
    files.write_json(json_path, {"arch": arch, "config": model.get_config(), **meta})
    return json_path


def find_model(model_dir: Optional[PathLike] = None, arch: Optional[str] = None) -> Tuple[str, pathlib.Path]:
    """The architecture and JSON path of the model in ``model_dir`` (default: :func:`default_model_dir`).

    With several models in the folder, ``arch`` picks one (xumx-slicq is preferred otherwise).
    """
    default = model_dir is None
    model_dir = default_model_dir() if default else pathlib.Path(model_dir)
    if not model_dir.is_dir():
        hint = (f" (the shipped model is not there: set ${MODEL_DIR_ENV}, pass a model folder, or train one with "
                f"`python -m train`)") if default else ""
        raise FileNotFoundError(f"model folder {model_dir} does not exist{hint}")
    archs = [arch] if arch else list(ARCH_FILES)
    for a in archs:
        if a not in ARCH_FILES:
            raise ValueError(f"unknown architecture {a!r}; expected one of {', '.join(ARCH_FILES)}")
        path = model_dir / f"{ARCH_FILES[a]}.json"
        if path.is_file():
            return a, path
    wanted = ", ".join(f"{ARCH_FILES[a]}.json" for a in archs)
    raise FileNotFoundError(f"no model in {model_dir}: expected {wanted} next to its .pth")


def load_model(
    model_dir: Optional[PathLike] = None, arch: Optional[str] = None, device: Union[str, torch.device] = "cpu"
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild a saved model in eval mode; returns ``(model, meta)`` where ``meta`` is the JSON content."""
    arch, json_path = find_model(model_dir, arch)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path}: unreadable model description: {exc}") from exc
    if meta.get("arch", arch) != arch:
        raise ValueError(f"{json_path}: says arch {meta.get('arch')!r}, expected {arch!r}")
    weights = json_path.with_suffix(".pth")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights missing next to {json_path.name}")
    model = build_model(arch, meta.get("config"))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong
        raise ValueError(f"{weights}: cannot load weights into {arch} model: {exc}") from exc
    return model.to(device).eval(), meta
