"""Cost of one xumx-sliCQ training step, with and without the time-domain SI-SDR term of the loss.

A randomly initialised default model (train mode) on random stereo batches: per step, the sliCQ of the mixture
and of the four targets (no gradient, as a data pipeline would), then timed separately

* ``forward``: model forward on the mixture magnitudes,
* ``loss``: the loss (combination MSE only, or MSE + mcoef * SI-SDR through the inverse sliCQ),
* ``backward``: gradients of the total,
* ``loss_fwd_bwd_alone``: the loss forward + backward down to the estimates (detached), without the model,

for ``--mode mse`` (``time_domain=False``), ``mse+sisdr`` (the default SI-SDR from Gram matrices) and
``mse+sisdr-auraloss`` (subset waveforms through ``auraloss.time.SISDRLoss``). The optimiser step is not included.
The modes are interleaved (each repeat runs one step of every mode on the same batch) so that load changes on
a shared machine hit them alike. Reports best and median over ``--repeats`` after ``--warmup`` rounds, the
process's peak RSS, the load average before and after, and writes
``<output>/loss_cost_<batch>x<seconds>s_t<threads>.json``.

    python -m benchmark.loss_cost                          # batch 32 x 1 s stereo
    python -m benchmark.loss_cost --batch 8 --seconds 6
    python -m benchmark.loss_cost --batch 4 --repeats 2    # quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from xumx_slicq import files
from xumx_slicq.losses import MultiDomainLoss
from xumx_slicq.model import XUMXSliCQ
from xumx_slicq.transforms import SliCQT

# mode -> MultiDomainLoss arguments
MODES = {
    "mse": dict(time_domain=False),
    "mse+sisdr": dict(time_domain=True, sisdr="gram"),
    "mse+sisdr-auraloss": dict(time_domain=True, sisdr="auraloss"),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _batch(slicqt: SliCQT, batch: int, length: int, seed: int):
    """Random targets ``(batch, 4, 2, length)``, their sliCQ magnitudes, the mixture's complex sliCQ."""
    gen = torch.Generator().manual_seed(seed)
    waves = 0.1 * torch.randn(batch, 4, 2, length, generator=gen)
    with torch.no_grad():
        mixture = slicqt(waves.sum(1))
        # (batch * 4, 2, length) through the transform, then back to (batch, 4, ...)
        mags = [b.abs().reshape(batch, 4, *b.shape[1:]) for b in slicqt(waves.reshape(-1, 2, length))]
    return waves, mags, mixture


def _step(model: XUMXSliCQ, loss: MultiDomainLoss, batch) -> Dict[str, float]:
    """One training step (no optimiser): phase durations in seconds and the loss values."""
    waves, mags, mixture = batch
    t1 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    estimates = model([m.abs() for m in mixture])
    t2 = time.perf_counter()
    terms = loss.terms(estimates, mags, mixture, waves)
    t3 = time.perf_counter()
    terms["total"].backward()
    t4 = time.perf_counter()
    # the loss alone: its forward and backward down to the estimates (detached leaves), no model
    leaves = [e.detach().requires_grad_(True) for e in estimates]
    t5 = time.perf_counter()
    loss.terms(leaves, mags, mixture, waves)["total"].backward()
    t6 = time.perf_counter()
    out = {"forward": t2 - t1, "loss": t3 - t2, "backward": t4 - t3, "step": t4 - t1, "loss_fwd_bwd_alone": t6 - t5}
    out.update({f"value_{k}": float(v.detach()) for k, v in terms.items()})
    return out


def time_modes(model: XUMXSliCQ, slicqt: SliCQT, modes: Sequence[str], mcoef: float, batch: int, length: int,
               repeats: int, warmup: int) -> Dict[str, Dict[str, object]]:
    """Interleaved timing: every repeat runs one step of each mode on the same batch, so that a change of the
    machine's load hits all modes alike. Returns per mode and phase: best, median, all (seconds)."""
    losses = {m: MultiDomainLoss(slicqt, mcoef=mcoef, **MODES[m]) for m in modes}
    records: Dict[str, List[Dict[str, float]]] = {m: [] for m in modes}
    transform: List[float] = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        data = _batch(slicqt, batch, length, seed=i)
        if i >= warmup:
            transform.append(time.perf_counter() - t0)
        for mode in modes:
            rec = _step(model, losses[mode], data)
            if i >= warmup:
                records[mode].append(rec)
    results: Dict[str, Dict[str, object]] = {}
    for mode in modes:
        recs = records[mode]
        summary: Dict[str, object] = {}
        for phase in ("forward", "loss", "backward", "step", "loss_fwd_bwd_alone"):
            ts = [r[phase] for r in recs]
            summary[f"{phase}_s"] = {"best": min(ts), "median": statistics.median(ts), "all": ts}
        summary["last_loss"] = {k[6:]: v for k, v in recs[-1].items() if k.startswith("value_")}
        results[mode] = summary
    results["transform_of_batch_s"] = {"best": min(transform), "median": statistics.median(transform),
                                       "all": transform}
    return results


def run(batch: int, seconds: float, repeats: int, warmup: int, threads: int, modes: Sequence[str],
        mcoef: float) -> Dict[str, object]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    slicqt = SliCQT()
    model = XUMXSliCQ().train()
    length = int(round(seconds * slicqt.sample_rate))
    load_before = os.getloadavg()
    results = time_modes(model, slicqt, modes, mcoef, batch, length, repeats, warmup)
    for mode in modes:
        r = results[mode]
        print(f"{mode:<10} step (fwd+loss+bwd) best {r['step_s']['best']:.2f} s, median {r['step_s']['median']:.2f} "
              f"s; forward {r['forward_s']['median']:.2f}, loss {r['loss_s']['median']:.2f}, backward "
              f"{r['backward_s']['median']:.2f}; loss alone (fwd+bwd to the estimates) "
              f"{r['loss_fwd_bwd_alone_s']['median']:.2f} s", flush=True)
    print(f"transform of the batch (mixture + 4 targets, no grad): {results['transform_of_batch_s']['median']:.2f} s; "
          f"peak RSS {_peak_rss_mb():.0f} MB")
    out: Dict[str, object] = {
        "batch": batch,
        "seconds": seconds,
        "nb_slices": slicqt.nb_slices(length),
        "channels": 2,
        "threads": threads,
        "mcoef": mcoef,
        "repeats": repeats,
        "warmup": warmup,
        "parameters": model.parameter_counts(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "peak_rss_mb": _peak_rss_mb(),
        "results": results,
    }
    out["sisdr_overhead"] = {}
    for mode in modes:
        if mode == "mse" or "mse" not in results:
            continue
        a, b = results["mse"], results[mode]
        step_a, step_b = a["step_s"]["median"], b["step_s"]["median"]
        alone = b["loss_fwd_bwd_alone_s"]["median"] - a["loss_fwd_bwd_alone_s"]["median"]
        out["sisdr_overhead"][mode] = {"step_s": step_b - step_a, "step_ratio": step_b / step_a,
                                       "loss_alone_s": alone}
        print(f"{mode}: step +{step_b - step_a:.2f} s ({step_b / step_a:.2f}x the MSE-only step, medians); "
              f"measured on the loss alone +{alone:.2f} s")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.loss_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="samples per batch (default 32)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per sample (default 1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode first (default 1)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch threads (default {torch.get_num_threads()})")
    parser.add_argument("--mode", choices=list(MODES), nargs="+", default=list(MODES),
                        help="loss variants to time (default all): MSE only; MSE + SI-SDR from Gram matrices; "
                        "MSE + SI-SDR by auraloss on the formed subset waveforms")
    parser.add_argument("--mcoef", type=float, default=0.1, help="weight of the SI-SDR term (default 0.1)")
    parser.add_argument("--output", default="benchmark/results", help="folder for the JSON (benchmark/results)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.seconds <= 0 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        print("error: need --batch >= 1, --seconds > 0, --repeats >= 1, --warmup >= 0, --threads >= 1",
              file=sys.stderr)
        return 2
    print(f"batch {args.batch} x {args.seconds:g} s stereo, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    out = run(args.batch, args.seconds, args.repeats, args.warmup, args.threads, args.mode, args.mcoef)
    path = os.path.join(args.output, f"loss_cost_{args.batch}x{args.seconds:g}s_t{args.threads}.json")
    files.write_json(path, out)
    print(f"load average after {out['load_average_after'][0]:.2f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
