"""Training xumx-sliCQ, UMX or X-UMX on a folder in MUSDB18-HQ layout (real or synthetic), from random weights or
from a saved model's (``--init-from``; a wider xumx-sliCQ is pruned to the run's hidden widths).

Defaults are the original xumx-sliCQ recipe: Adam (lr 1e-3, weight decay 1e-5), ReduceLROnPlateau on the
validation loss (factor 0.3, patience 80, cooldown 10), batch 32, 1 s chunks, 64 chunks per track and epoch,
random track mixing, gain and channel-swap augmentations, seed 42, 1000 epochs, early stopping.

Outputs under ``--output``:

* ``<arch>.chkpnt``: everything needed to resume (weights, optimizer, scheduler, early stopping, RNG states,
  history), written atomically after every epoch;
* ``<arch>.pth`` + ``<arch>.json``: the best epoch's weights and how to rebuild them (construction args,
  training args, history, best epoch, data description, git commit), written atomically;
* ``history.json``: per-epoch losses, learning rate and timings;
* ``logdir/``: tensorboard (train/valid loss and its terms, learning rate, epoch time).

Distributed (DistributedDataParallel): ``torchrun --nproc_per_node N -m train ...`` (see docs/scaling.md). Each
process trains on its share of every epoch's chunks with ``--batch-size`` chunks per step, so the global batch is
N x ``--batch-size`` and an epoch has the same chunks in N times fewer steps; ``--lr-scaling`` optionally scales
the learning rate with N. Rank 0 alone computes the input statistics and the validation loss (shared with the
other ranks) and writes every file; ``--resume`` reads the checkpoint on rank 0 and sends it to the others.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import random
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from train import distributed
from xumx_slicq import checkpoint, files
from xumx_slicq.data import SOURCES, ChunkDataset, FullTrackDataset, make_train_loader

ARCHS = ("xumx-slicq", "umx", "xumx")


# --------------------------------------------------------------------------------------------------------------
# Architecture-specific pieces: building the model, its loss and its input statistics
# --------------------------------------------------------------------------------------------------------------


class SliCQTask:
    """xumx-sliCQ: sliCQ magnitudes in, combination MSE (+ mcoef x SI-SDR through the inverse) out."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        from xumx_slicq.losses import MultiDomainLoss
        from xumx_slicq.model import XUMXSliCQ
        from xumx_slicq.transforms import SliCQT

        slicq_config = dict(scale=args.fscale, fbins=args.fbins, fmin=args.fmin, fmax=args.fmax,
                            sllen=args.sllen, trlen=args.trlen)
        self.model = XUMXSliCQ(slicq_config=slicq_config, targets=args.targets, bandwidth=args.bandwidth,
                               hidden_channels=args.hidden_channels).to(device)
        if getattr(args, "fused", False):  # same parameters and checkpoint, fewer operators (xumx_slicq.fused)
            self.model.set_fused(True, args.fused_max_padding)
        self.slicqt = SliCQT(**self.model.slicq_config).to(device)
        mcoef = 0.1 if args.mcoef is None else args.mcoef
        self.loss = MultiDomainLoss(self.slicqt, mcoef=mcoef, time_domain=mcoef > 0)

    def losses(self, x: Tensor, y: Tensor, model: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """x ``(nb_samples, nb_channels, nb_timesteps)``, y ``(nb_samples, nb_targets, nb_channels, nb_timesteps)``.

        ``model``: the module to run (the DDP wrapper while training distributed); default ``self.model``.
        """
        net = self.model if model is None else model
        mix = self.slicqt(x)  # complex blocks (nb_samples, nb_channels, nb_bins_b, nb_slices, T_b)
        estimates = net([b.abs() for b in mix])  # (nb_samples, nb_targets, nb_channels, ...)
        nb_samples, nb_targets = y.shape[:2]
        # targets through the transform as one batch: (nb_samples * nb_targets, nb_channels, nb_timesteps)
        target_blocks = self.slicqt(y.reshape(nb_samples * nb_targets, *y.shape[2:]))
        # back to (nb_samples, nb_targets, nb_channels, nb_bins_b, nb_slices, T_b)
        target_mags = [b.abs().reshape(nb_samples, nb_targets, *b.shape[1:]) for b in target_blocks]
        return self.loss.terms(estimates, target_mags, mixture=mix, target_waveforms=y)

    def init_scaler(self, dataset, max_items: int, progress: bool = True) -> int:
        from xumx_slicq.model import init_input_scaler

        from xumx_slicq.transforms import SliCQT

        # statistics on the CPU with a CPU copy of the transform (the training one may live on the GPU)
        return init_input_scaler(self.model, _mixtures(dataset), SliCQT(**self.model.slicq_config),
                                 max_items=min(max_items, len(dataset)), progress=progress)


class BaselineTask:
    """UMX (MSE on STFT magnitudes) or X-UMX (combination loss in both domains, weighted SDR, mcoef 10)."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        from xumx_slicq.baselines import MultiDomainLoss, build_baseline

        self.arch = args.arch
        self.model = build_baseline(args.arch, dict(targets=tuple(args.targets))).to(device)
        mcoef = 10.0 if args.mcoef is None else args.mcoef
        self.loss = MultiDomainLoss(mcoef=mcoef) if args.arch == "xumx" else None

    def losses(self, x: Tensor, y: Tensor, model: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """x ``(nb_samples, nb_channels, nb_timesteps)``, y ``(nb_samples, nb_targets, nb_channels, nb_timesteps)``.

        ``model``: the module to run (the DDP wrapper while training distributed); default ``self.model``.
        """
        net = self.model if model is None else model
        mix_stft = self.model.stft(x)  # (nb_samples, nb_channels, nb_bins, nb_frames) complex
        estimates = net(mix_stft.abs())  # (nb_samples, nb_targets, nb_channels, nb_bins, nb_frames)
        if self.loss is not None:
            return self.loss.terms(estimates, mix_stft, y, mix_wave=x)
        from xumx_slicq.baselines import mse_loss

        nb_samples, nb_targets = y.shape[:2]
        # (nb_samples * nb_targets, nb_channels, nb_timesteps) -> STFT -> back to the target axis
        target_mag = self.model.stft(y.reshape(nb_samples * nb_targets, *y.shape[2:])).abs()
        target_mag = target_mag.reshape(nb_samples, nb_targets, *target_mag.shape[1:])
        total = mse_loss(estimates, target_mag)
        return {"total": total, "mse": total}

    def init_scaler(self, dataset, max_items: int, progress: bool = True) -> int:
        from tqdm import tqdm

        stft = copy.deepcopy(self.model.stft).to("cpu")
        count = 0

        def magnitudes():
            nonlocal count
            for x in tqdm(_mixtures(dataset), total=min(max_items, len(dataset)), desc="input statistics",
                          unit="item", disable=not progress):
                if count >= max_items:
                    break
                count += 1
                yield stft(x[None]).abs()  # (1, nb_channels, nb_bins, nb_frames)

        self.model.init_input_scaler(magnitudes())
        return count


def _mixtures(dataset):
    """Mixtures of a dataset's items, ``(nb_channels, nb_timesteps)``."""
    for i in range(len(dataset)):
        yield dataset[i][0]


def make_task(args: argparse.Namespace, device: torch.device):
    return SliCQTask(args, device) if args.arch == "xumx-slicq" else BaselineTask(args, device)


def init_from_model(model: nn.Module, model_dir: str, arch: str) -> Dict[str, Any]:
    """Load a saved model's weights into ``model`` (in place): the start of a run with ``--init-from``.

    The saved model must be of ``arch`` and have ``model``'s configuration. An xumx-sliCQ model may be wider: it
    is pruned to ``model``'s hidden widths (:func:`xumx_slicq.pruning.prune_hidden_channels`). Returns what is
    recorded about the start: folder, the source's hidden widths (xumx-sliCQ), whether it was pruned, and the
    examples the source had seen.
    """
    from xumx_slicq.pruning import prune_hidden_channels

    try:
        source, meta = checkpoint.load_model(model_dir, arch=arch)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: --init-from {model_dir}: {exc}") from None
    widths = "hidden_channels" if arch == "xumx-slicq" else None  # the one entry allowed to differ
    ours, theirs = model.get_config(), source.get_config()
    differ = []
    for key in sorted(k for k in ours if k != widths):
        a, b = ours[key], theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):  # e.g. slicq_config: name the entries that differ
            differ += [f"{key}.{k} {b.get(k)!r} (here {a.get(k)!r})" for k in sorted(a) if a.get(k) != b.get(k)]
        elif a != b:
            differ.append(f"{key} {b!r} (here {a!r})")
    if differ:
        allowed = "only the hidden widths may differ" if widths else "the configurations must be equal"
        raise SystemExit(f"error: --init-from {model_dir}: the model has {', '.join(differ)}; {allowed}")
    info: Dict[str, Any] = {"model": str(model_dir), "pruned": False, "examples_seen": meta.get("examples_seen")}
    start = source
    if widths:
        info["hidden_channels"] = list(source.hidden_channels)
        if tuple(source.hidden_channels) != tuple(model.hidden_channels):
            try:
                start = prune_hidden_channels(source, model.hidden_channels)
            except ValueError as exc:
                raise SystemExit(f"error: --init-from {model_dir}: {exc}") from None
            info["pruned"] = True
    model.load_state_dict(start.state_dict())
    return info


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """The device of a single process: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    return distributed.resolve_device(name)


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=pathlib.Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_rng_state(device: torch.device) -> Dict[str, Any]:
    """RNG state of one process of a distributed job: like :func:`rng_state`, but CUDA only for its own device
    (``cuda_device``), so that no rank touches the other ranks' GPUs."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "cuda": None}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rank_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    """Restore a :func:`rank_rng_state` (or a single-process :func:`rng_state`, without its CUDA part)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and state.get("cuda_device") is not None:
        torch.cuda.set_rng_state(state["cuda_device"], device)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EarlyStopping:
    """Stop when the validation loss has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, value: float) -> bool:
        """Record an epoch's loss; True when it is the best so far."""
        if value < self.best - self.min_delta:
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


def _mean_terms(acc: Dict[str, float], n: int) -> Dict[str, float]:
    return {k: v / max(n, 1) for k, v in acc.items()}


@torch.no_grad()
def validate(task, dataset, device: torch.device, segment_seconds: float, progress: bool) -> Dict[str, float]:
    """Loss over whole validation tracks, computed on consecutive segments (bounded memory), length-weighted."""
    from tqdm import tqdm

    task.model.eval()
    seg = max(1, int(segment_seconds * 44100))
    sums: Dict[str, float] = {}
    total = 0
    for i in tqdm(range(len(dataset)), desc="validation", unit="track", disable=not progress, leave=False):
        x, y = dataset[i]
        for start in range(0, x.shape[-1], seg):
            xs, ys = x[..., start : start + seg], y[..., start : start + seg]
            if xs.shape[-1] < 2048:  # a tail too short to be meaningful
                continue
            terms = task.losses(xs[None].to(device), ys[None].to(device))
            n = xs.shape[-1]
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            total += n
    if total == 0:
        raise ValueError("validation set has no audio (is the valid split empty?)")
    return {k: v / total for k, v in sums.items()}


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--root", required=True, help="dataset root in MUSDB18-HQ layout (train/ and test/ folders)")
    g.add_argument("--targets", nargs="+", default=list(SOURCES),
                   help="targets, in model order (default: %(default)s)")
    g.add_argument("--seq-dur", type=float, default=1.0, help="training chunk length in seconds (1.0)")
    g.add_argument("--samples-per-track", type=int, default=64, help="chunks per track and epoch (64)")
    g.add_argument("--random-track-mix", action=argparse.BooleanOptionalAction, default=True,
                   help="each source from a random track and offset (default on)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="gain U[0.25, 1.25] and channel swap p 0.5 per source (default on)")
    g.add_argument("--skip-silent", action="store_true", help="redraw chunks where a source is silent")
    g.add_argument("--valid-fraction", type=float, default=0.1,
                   help="held-out validation fraction for corpora other than MUSDB18-HQ (0.1)")
    g.add_argument("--valid-seconds", type=float, default=None,
                   help="only the first N seconds of each validation track (default: whole tracks)")
    g.add_argument("--valid-segment", type=float, default=10.0,
                   help="validation tracks are scored in segments of N seconds (10)")
    g.add_argument("--stats-tracks", type=int, default=200,
                   help="cap on items read for the input mean/scale (default %(default)s)")
    g.add_argument("--workers", type=int, default=2, help="data loader worker processes (2)")

    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=ARCHS, default="xumx-slicq",
                   help="model to train: xumx-sliCQ, or the UMX / X-UMX baselines (default %(default)s)")
    g.add_argument("--fscale", default="bark", choices=("bark", "mel", "cqlog", "vqlog", "lin"),
                   help="sliCQ frequency scale (xumx-slicq only; default %(default)s)")
    g.add_argument("--fbins", type=int, default=262, help="sliCQ frequency bins (xumx-slicq only; default %(default)s)")
    g.add_argument("--fmin", type=float, default=32.9,
                   help="sliCQ lowest frequency in Hz (xumx-slicq only; default %(default)s)")
    g.add_argument("--fmax", type=float, default=22050.0,
                   help="sliCQ highest frequency in Hz (xumx-slicq only; default %(default)s)")
    g.add_argument("--sllen", type=int, default=None, help="slice length (default automatic)")
    g.add_argument("--trlen", type=int, default=None, help="transition length (default sllen/4)")
    g.add_argument("--bandwidth", type=float, default=16000.0,
                   help="sliCQ blocks above this frequency in Hz are passed through, not learned "
                        "(xumx-slicq only; default %(default)s)")
    g.add_argument("--hidden-channels", type=int, nargs=2, default=[25, 55], metavar=("H1", "H2"),
                   help="xumx-slicq only: channels of the two hidden layers per target and block (default 25 55, "
                        "the original; 16 32 costs 1.93 instead of 5.05 GMAC per second of audio)")
    g.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                   help="start from a saved model's weights (same architecture and configuration) instead of "
                        "random ones, e.g. pretrained-model; a wider xumx-slicq model is pruned to "
                        "--hidden-channels, keeping each layer's most important channels (xumx_slicq.pruning). "
                        "Ignored when --resume finds a checkpoint")
    g.add_argument("--mcoef", type=float, default=None,
                   help="weight of the time-domain loss (default 0.1 for xumx-slicq, 10 for xumx; 0 disables)")
    g.add_argument("--fused", action=argparse.BooleanOptionalAction, default=False,
                   help="xumx-slicq only: run the learned blocks as buckets of grouped convolutions "
                        "(xumx_slicq.fused; same weights and checkpoint, far fewer operators; default off)")
    g.add_argument("--fused-max-padding", type=float, default=1.25,
                   help="with --fused: bound on a bucket's padded over real work (default %(default)s)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=1000, help="most epochs to run (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=32,
                   help="chunks per step PER PROCESS (32); with torchrun --nproc_per_node N (x nodes) the global "
                        "batch is N x this, and an epoch keeps the same chunks in N times fewer steps")
    g.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate (1e-3), multiplied by the --lr-scaling factor in distributed runs")
    g.add_argument("--lr-scaling", choices=("none", "linear", "sqrt"), default="none",
                   help="distributed runs only: multiply --lr by 1 (none, default), N (linear) or sqrt(N) for a "
                        "global batch N times --batch-size; a single process is never scaled")
    g.add_argument("--weight-decay", type=float, default=1e-5, help="Adam weight decay (default %(default)s)")
    g.add_argument("--lr-decay-patience", type=int, default=80,
                   help="ReduceLROnPlateau: epochs without a better validation loss before the learning rate "
                        "is cut (default %(default)s)")
    g.add_argument("--lr-decay-gamma", type=float, default=0.3,
                   help="ReduceLROnPlateau: factor of each learning-rate cut (default %(default)s)")
    g.add_argument("--lr-cooldown", type=int, default=10,
                   help="ReduceLROnPlateau: epochs after a cut before the next may happen (default %(default)s)")
    g.add_argument("--patience", type=int, default=1000, help="early stopping patience in epochs (1000)")
    g.add_argument("--seed", type=int, default=42,
                   help="seed of the model initialisation and the training chunks (default %(default)s)")
    g.add_argument("--max-examples", type=int, default=None,
                   help="budget: stop after this many training examples (chunks) were seen (by all processes "
                        "together in a distributed run)")
    g.add_argument("--max-hours", type=float, default=None, help="budget: stop after this wall-clock time")

    g = p.add_argument_group("run")
    g.add_argument("--output", required=True, help="output folder (checkpoints, best model, logs)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when available, else CPU (default %(default)s)")
    g.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                   help="continue from <output>/<arch>.chkpnt if it exists")
    g.add_argument("--debug", action="store_true",
                   help="a few steps on tiny data: 2 epochs, batch 2, 2 chunks per track, 1 validation track")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="tqdm progress bars (default on)")

    g = p.add_argument_group("distributed (under torchrun; ignored for a single process)")
    g.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto",
                   help="process group backend: auto = nccl on CUDA, gloo on CPU (default %(default)s)")
    g.add_argument("--dist-timeout", type=float, default=60.0,
                   help="minutes a rank waits for the others (rank 0 validates alone meanwhile) (60)")
    return p


def apply_debug(args: argparse.Namespace) -> None:
    args.epochs = min(args.epochs, 2)
    args.batch_size = min(args.batch_size, 2)
    args.samples_per_track = min(args.samples_per_track, 2)
    args.valid_seconds = min(args.valid_seconds or 4.0, 4.0)
    args.stats_tracks = min(args.stats_tracks, 4)
    args.workers = 0


def _describe_data(root: str, train_set, valid_set) -> Dict[str, Any]:
    return {"root": os.path.abspath(root), "train_tracks": len(train_set.tracks),
            "valid_tracks": len(valid_set.tracks), "valid_names": valid_set.track_names[:50]}


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run training; returns the final summary (also in ``<output>/<arch>.json`` for the best epoch).

    Under torchrun (``WORLD_SIZE`` > 1) this process is one rank of a DistributedDataParallel job; see
    train/distributed.py for the roles of the ranks.
    """
    if args.debug:
        apply_debug(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx, device = distributed.init_from_env(args.device, args.dist_backend, args.dist_timeout)
    try:
        summary = _train(args, ctx, device)
        distributed.barrier(ctx)  # rank 0 has written its last file before anyone leaves
        return summary
    finally:
        distributed.cleanup(ctx)


def _train(args: argparse.Namespace, ctx: distributed.DistContext, device: torch.device) -> Dict[str, Any]:
    """The training loop of one process (rank ``ctx.rank`` of ``ctx.world_size``)."""
    from tqdm import tqdm

    world, is_main = ctx.world_size, ctx.is_main
    out = pathlib.Path(args.output)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    stem = checkpoint.ARCH_FILES[args.arch]
    chkpnt_path = out / f"{stem}.chkpnt"

    seed_everything(args.seed)  # the same on every rank: identical model initialisation
    if device.type == "cuda":
        # fixed training shapes (one per sliCQ block): let cuDNN pick the fastest convolution for each, once
        torch.backends.cudnn.benchmark = True

    train_set = ChunkDataset(args.root, "train", targets=args.targets, seq_dur=args.seq_dur,
                             samples_per_track=args.samples_per_track, random_track_mix=args.random_track_mix,
                             augment=args.augment, skip_silent=args.skip_silent, seed=args.seed,
                             valid_fraction=args.valid_fraction)
    valid_set = FullTrackDataset(args.root, "valid", targets=args.targets, max_duration=args.valid_seconds,
                                 valid_fraction=args.valid_fraction)
    if args.debug:
        valid_set.tracks = valid_set.tracks[:1]
    if len(train_set.tracks) == 0:
        raise SystemExit(f"error: no training tracks under {args.root}/train")
    if len(valid_set.tracks) == 0:
        raise SystemExit(f"error: no validation tracks in {args.root} (valid split is empty)")
    if len(train_set) < args.batch_size:
        raise SystemExit(f"error: {len(train_set)} training chunks per epoch is less than one batch of "
                         f"{args.batch_size}; raise --samples-per-track or lower --batch-size")
    if len(train_set) // world < args.batch_size:
        raise SystemExit(f"error: {len(train_set)} training chunks per epoch split over {world} processes is "
                         f"less than one batch of {args.batch_size} per process; raise --samples-per-track or "
                         f"lower --batch-size (it counts chunks per process)")

    task = make_task(args, device)
    model = task.model
    lr = args.lr * distributed.lr_factor(args.lr_scaling, world) if ctx.enabled else args.lr
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=args.lr_decay_gamma,
                                                           patience=args.lr_decay_patience,
                                                           cooldown=args.lr_cooldown)
    stopper = EarlyStopping(args.patience)
    history: List[Dict[str, Any]] = []
    start_epoch, examples_seen, elapsed_before = 1, 0, 0.0
    init_info: Optional[Dict[str, Any]] = None  # where the weights started (--init-from), kept across resumes

    # rank 0 reads the checkpoint (if any) and sends it to the others: no shared output folder is needed
    state = None
    if args.resume and is_main and chkpnt_path.is_file():
        state = torch.load(chkpnt_path, map_location="cpu", weights_only=False)
    if ctx.enabled and args.resume:
        state = distributed.broadcast_object(state, ctx)
    if state is not None:
        if state["arch"] != args.arch:
            raise SystemExit(f"error: {chkpnt_path} is a {state['arch']} checkpoint, not {args.arch}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:  # another architecture size (e.g. --hidden-channels) than the checkpoint's
            first = str(exc).strip().splitlines()[-1].strip()
            raise SystemExit(f"error: {chkpnt_path} does not fit this model (resume with the options it was "
                             f"started with, e.g. the same --hidden-channels): {first}") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        examples_seen = state["examples_seen"]
        elapsed_before = state["elapsed_seconds"]
        init_info = state.get("init_from")
        if not ctx.enabled:
            set_rng_state(state["rng"])
        else:
            per_rank = state.get("rng_per_rank")
            if per_rank is not None and len(per_rank) == world:
                set_rank_rng_state(per_rank[ctx.rank], device)
            else:  # a checkpoint of another world size: rank 0 continues its stream, the others start theirs
                set_rank_rng_state(state["rng"], device)
                if ctx.rank > 0:
                    seed_everything(distributed.rank_seed(args.seed + start_epoch, ctx.rank))
        if is_main:
            saved_world = state.get("world_size", 1)
            note = f", written by {saved_world} process(es)" if saved_world != world else ""
            print(f"resumed from {chkpnt_path} at epoch {start_epoch} ({examples_seen} examples seen{note})")
        del state
    else:
        if args.init_from:
            init_info = init_from_model(task.model, args.init_from, args.arch)
            if is_main:
                how = (f"pruned from {'/'.join(map(str, init_info['hidden_channels']))} to "
                       f"{'/'.join(map(str, args.hidden_channels))}; " if init_info["pruned"] else "")
                print(f"weights from {args.init_from} ({how}{init_info['examples_seen']} examples seen); "
                      f"input mean/scale are the model's")
        elif is_main:
            n = task.init_scaler(train_set, args.stats_tracks, progress=args.progress)
            print(f"input mean/scale initialised from {n} training chunks")
        distributed.broadcast_module_state(model, ctx)  # rank 0's statistics on every rank
        if ctx.rank > 0:  # own dropout streams per rank (rank 0 keeps the single-process one)
            seed_everything(distributed.rank_seed(args.seed, ctx.rank))

    net = distributed.wrap_model(model, ctx, device)  # DDP wrapper (or the model itself) for training steps
    loader = make_train_loader(train_set, batch_size=args.batch_size, num_workers=args.workers, seed=args.seed,
                               pin_memory=device.type == "cuda", num_replicas=world, rank=ctx.rank)
    loader.sampler.epoch = start_epoch - 1  # each epoch draws new chunks, also after a resume
    if ctx.enabled and is_main:
        print(f"distributed: {world} processes ({ctx.backend}), {args.batch_size} chunks per process and step "
              f"(global batch {world * args.batch_size}), {len(loader)} steps per epoch, lr {lr:.3g}", flush=True)

    writer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out / "logdir"))
    data_desc = _describe_data(args.root, train_set, valid_set)
    t_start = time.time()
    stop_reason = "epochs"
    try:
        for epoch in range(start_epoch, args.epochs + 1):
            t0 = time.time()
            net.train()  # the DDP wrapper and the model
            sums: Dict[str, float] = {}
            steps = 0
            bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not (args.progress and is_main),
                       leave=False)
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                terms = task.losses(x, y, model=net)
                loss = terms["total"]
                if ctx.enabled:
                    # mean of every loss term over the ranks (logging, and one shared non-finite check)
                    names = sorted(terms)
                    values = torch.stack([terms[k].detach().float().reshape(()) for k in names])
                    values = distributed.all_reduce_mean(values, ctx).tolist()
                    step_terms = dict(zip(names, values))
                    finite = math.isfinite(step_terms["total"])
                else:
                    step_terms = terms
                    finite = bool(torch.isfinite(loss))
                if not finite:
                    raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {steps}")
                loss.backward()
                optimizer.step()
                for k, v in step_terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, Tensor) else v)
                steps += 1
                examples_seen += x.shape[0] * world
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                if args.max_examples and examples_seen >= args.max_examples:
                    break
            train_terms = _mean_terms(sums, steps)
            train_time = time.time() - t0
            valid_terms = (validate(task, valid_set, device, args.valid_segment, args.progress)
                           if is_main else None)
            valid_terms = distributed.broadcast_object(valid_terms, ctx)
            scheduler.step(valid_terms["total"])
            is_best = stopper.step(valid_terms["total"])
            epoch_time = time.time() - t0
            lr = optimizer.param_groups[0]["lr"]
            record = {"epoch": epoch, "train": train_terms, "valid": valid_terms, "lr": lr,
                      "epoch_seconds": epoch_time, "train_seconds": train_time, "steps": steps,
                      "examples_seen": examples_seen, "best": is_best}
            if ctx.enabled:
                record["world_size"] = world
            history.append(record)
            if writer is not None:
                for k, v in train_terms.items():
                    writer.add_scalar(f"train/{k}", v, epoch)
                for k, v in valid_terms.items():
                    writer.add_scalar(f"valid/{k}", v, epoch)
                writer.add_scalar("lr", lr, epoch)
                writer.add_scalar("epoch_seconds", epoch_time, epoch)
                writer.flush()
            elapsed = elapsed_before + (time.time() - t_start)
            if ctx.enabled:
                elapsed = distributed.broadcast_object(elapsed, ctx)  # one clock decides the time budget
                rng_all = distributed.all_gather_object(rank_rng_state(device), ctx)
            if is_main:
                meta = dict(training_args=vars(args), history=history, best_epoch=epoch if is_best else None,
                            best_valid_loss=stopper.best, data=data_desc, git_commit=git_commit(),
                            examples_seen=examples_seen, elapsed_seconds=elapsed,
                            device=str(device), torch=torch.__version__)
                if init_info is not None:
                    meta["init_from"] = init_info
                if ctx.enabled:
                    meta["distributed"] = {"world_size": world, "backend": ctx.backend,
                                           "batch_per_process": args.batch_size,
                                           "global_batch": world * args.batch_size}
                if is_best:
                    checkpoint.save_model(model, out, args.arch, **meta)
                chk = {
                    "arch": args.arch, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "early_stopping": stopper.state_dict(), "history": history,
                    "examples_seen": examples_seen, "elapsed_seconds": elapsed,
                    "rng": rng_all[0] if ctx.enabled else rng_state(), "args": vars(args),
                }
                if init_info is not None:  # only in runs started with --init-from
                    chk["init_from"] = init_info
                if ctx.enabled:  # extra keys only in distributed checkpoints
                    chk["world_size"] = world
                    chk["rng_per_rank"] = rng_all
                with files.atomic_path(chkpnt_path) as tmp:
                    torch.save(chk, tmp)
                files.write_json(out / "history.json", history)
                print(f"epoch {epoch}: train {train_terms['total']:.5f} valid {valid_terms['total']:.5f} "
                      f"lr {lr:.2e} {epoch_time:.1f} s{' (best)' if is_best else ''}", flush=True)
            if stopper.stop:
                stop_reason = "early stopping"
                break
            if args.max_examples and examples_seen >= args.max_examples:
                stop_reason = "example budget"
                break
            if args.max_hours and elapsed >= args.max_hours * 3600:
                stop_reason = "time budget"
                break
    finally:
        if writer is not None:
            writer.close()
    distributed.dump_rank_state(model, ctx)
    summary = {"arch": args.arch, "epochs_run": len(history), "best_valid_loss": stopper.best,
               "examples_seen": examples_seen, "stop_reason": stop_reason, "output": str(out)}
    if ctx.enabled:
        summary["world_size"] = world
    if is_main:
        print(json.dumps(summary))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
