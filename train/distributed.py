"""Glue between the trainer and ``torch.distributed`` (DistributedDataParallel launched by ``torchrun``).

``torchrun`` starts one process per device and tells each, through environment variables, who it is:
``RANK`` (global rank), ``LOCAL_RANK`` (rank on this node), ``WORLD_SIZE`` (number of processes) and
``MASTER_ADDR`` / ``MASTER_PORT`` (where the rendezvous store lives). :func:`init_from_env` reads them and joins
the process group: **nccl** when the process trains on a CUDA device, **gloo** on the CPU. A process started
without those variables (or with ``WORLD_SIZE=1``) is a plain single process: every helper here then does
nothing and returns its input, so the trainer has one code path and single-process runs behave as before.

Roles in the trainer: rank 0 (``ctx.is_main``) computes the input statistics and the validation loss, writes
every file (checkpoints, best model, history, tensorboard) and prints; the other ranks receive what rank 0
computed through :func:`broadcast_object` / :func:`broadcast_module_state`.

Test hook: when the environment variable ``XUMX_DDP_STATE_DIR`` is set, every rank writes its final model
parameters to ``$XUMX_DDP_STATE_DIR/rank<r>.pt`` (:func:`dump_rank_state`), so a test can check that the ranks
hold identical weights after the last step.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

#: environment variable naming a folder where each rank dumps its final parameters (tests)
STATE_DIR_ENV = "XUMX_DDP_STATE_DIR"


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job.

    Attributes:
        rank: global rank (0 .. world_size - 1).
        world_size: number of processes (1: not distributed).
        local_rank: rank on this node (the CUDA device index when training on GPUs).
        backend: ``"nccl"`` / ``"gloo"``, or ``None`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        """True when the process belongs to a group of two or more."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that computes shared results and writes files."""
        return self.rank == 0


SINGLE = DistContext()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise SystemExit(f"error: environment variable {name}={value!r} is not an integer "
                         f"(set by torchrun; see train/distributed.py)") from err


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return _env_int("WORLD_SIZE", 1)


def resolve_device(name: str, local_rank: int = 0, distributed: bool = False) -> torch.device:
    """The device a process trains on.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        local_rank: this process's rank on its node; in distributed mode it picks ``cuda:<local_rank>``.
        distributed: whether the process is one of several.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if not distributed:
        return torch.device("cuda")
    if local_rank >= torch.cuda.device_count():
        raise SystemExit(f"error: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) on "
                         f"this node; start at most that many processes per node (torchrun --nproc_per_node)")
    return torch.device("cuda", local_rank)


def init_from_env(device_name: str = "auto", backend: str = "auto",
                  timeout_minutes: float = 60.0) -> tuple[DistContext, torch.device]:
    """Join the process group described by torchrun's environment variables, or stay a single process.

    Args:
        device_name: the trainer's ``--device`` (``auto``, ``cpu``, ``cuda``).
        backend: ``auto`` (nccl on CUDA, gloo on CPU), ``nccl`` or ``gloo``.
        timeout_minutes: how long a collective may wait for the slowest rank (rank 0 validates while the others
            wait, so this must exceed one validation pass).
    Returns:
        ``(context, device)``; for a single process ``(SINGLE, device)`` and nothing is initialised.
    """
    world_size = env_world_size()
    if world_size <= 1:
        return SINGLE, resolve_device(device_name)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise SystemExit(f"error: RANK={rank} is outside 0..{world_size - 1} (WORLD_SIZE={world_size})")
    device = resolve_device(device_name, local_rank, distributed=True)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise SystemExit("error: --dist-backend nccl needs CUDA devices; use gloo for CPU training")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # collectives and broadcast_object_list use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend), device


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (no-op for a single process)."""
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable object, e.g. a dict of losses or a whole checkpoint) on every rank.

    Other ranks' ``obj`` is ignored; a single process gets ``obj`` back.
    """
    if not ctx.enabled:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any, ctx: DistContext) -> List[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for a single process)."""
    if not ctx.enabled:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_module_state(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s values, in place.

    Used after rank 0 alone computed the input mean/scale statistics. Tensors must live on the device of the
    process group's backend (CUDA for nccl).
    """
    if not ctx.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def all_reduce_mean(values: Tensor, ctx: DistContext) -> Tensor:
    """Mean of ``values`` (any shape, floating) over the ranks, in place; returned for convenience."""
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in distributed mode, else ``model`` itself.

    DDP averages gradients over the ranks during ``backward`` and broadcasts rank 0's buffers (BatchNorm running
    statistics) at every forward pass; each rank's BatchNorm normalises with its own batch's statistics.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def lr_factor(scaling: str, world_size: int) -> float:
    """Learning-rate multiplier for a global batch ``world_size`` times the per-process batch.

    ``none``: 1; ``linear``: ``world_size`` (Goyal et al. 2017); ``sqrt``: ``sqrt(world_size)``.
    """
    if scaling == "none":
        return 1.0
    if scaling == "linear":
        return float(world_size)
    if scaling == "sqrt":
        return float(world_size) ** 0.5
    raise ValueError(f"train/distributed.py: lr scaling must be none, linear or sqrt, got {scaling!r}")


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank ``rank``'s own random streams (dropout): ``seed`` for rank 0, distinct for the others."""
    if rank == 0:
        return int(seed)
    import numpy as np

    return int(np.random.SeedSequence([int(seed), 7177, int(rank)]).generate_state(1)[0])


def dump_rank_state(model: nn.Module, ctx: DistContext) -> Optional[pathlib.Path]:
    """Test hook: write this rank's parameters to ``$XUMX_DDP_STATE_DIR/rank<r>.pt`` when the variable is set.

    Returns the path written, or None.
    """
    folder = os.environ.get(STATE_DIR_ENV)
    if not folder:
        return None
    from xumx_slicq.files import atomic_path

    path = pathlib.Path(folder) / f"rank{ctx.rank}.pt"
    params: Dict[str, Tensor] = {k: v.detach().cpu() for k, v in model.named_parameters()}
    with atomic_path(path) as tmp:
        torch.save({"rank": ctx.rank, "world_size": ctx.world_size, "params": params}, tmp)
    return path
