"""Operators and time of one xumx-sliCQ training step: per-block network vs fused blocks (``xumx_slicq.fused``)
and vs per-block networks of other hidden widths (``--hidden-channels``).

A randomly initialised default model (train mode) on a random stereo batch. One step = the sliCQ of the mixture
and of the targets, the model's forward, the loss (``MultiDomainLoss``, the training default: combination MSE +
0.1 x SI-SDR) and the backward pass; the optimiser step is not included. ``torch.profiler`` counts the step's
top-level operators (events without a parent: what the Python side launches, autograd's backward functions
included) and, apart, those that are pure views (reshape/view/transpose/..., their backward functions and
gradient accumulation into empty ``.grad``), which launch no GPU kernel. The operator count does not depend on the
batch size. ``--model-only`` rows count the model forward + backward alone (the sum of the estimates as loss).

The step time (``--repeats`` > 0) is measured interleaved (per-block, then each fused variant, in turn, best of
the repeats), so load changes on a shared machine hit every variant alike.

    python -m benchmark training-ops --output benchmark/results/training_ops.json
    python -m benchmark training-ops --batch 32 --seconds 1 --repeats 3 --max-padding 1.25 1.5 2 --output out.json
    python -m benchmark training-ops --batch 32 --repeats 2 --max-padding --hidden-channels 16 32 --output out.json
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import platform
import sys
from typing import Dict, List, Optional, Sequence

import torch

from xumx_slicq import files
from xumx_slicq.fused import DEFAULT_MAX_PADDING
from xumx_slicq.losses import MultiDomainLoss
from xumx_slicq.model import XUMXSliCQ
from xumx_slicq.timing import time_calls
from xumx_slicq.transforms import SliCQT

# operators that only make views or steal a gradient: no kernel launch on a GPU
VIEW_OPS = {"aten::reshape", "aten::view", "aten::_reshape_alias", "aten::transpose", "aten::unsqueeze",
            "aten::squeeze", "aten::select", "aten::slice", "aten::permute", "aten::expand", "aten::split",
            "aten::split_with_sizes", "aten::unbind", "aten::detach", "aten::alias", "aten::t", "aten::narrow",
            "aten::view_as_real", "aten::view_as_complex", "aten::as_strided"}
VIEW_BACKWARD = ("ViewBackward0", "ReshapeAliasBackward0", "UnsqueezeBackward0", "SqueezeBackward0",
                 "TransposeBackward0", "PermuteBackward0", "ExpandBackward0", "UnbindBackward0",
                 "torch::autograd::AccumulateGrad")


def count_ops(fn) -> Dict[str, object]:
    """Top-level operators of one call of ``fn`` (after one warm-up call): total, view-only, the most common."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    top = [e.name for e in prof.events() if e.cpu_parent is None]
    views = sum(1 for n in top if n in VIEW_OPS or n.endswith(VIEW_BACKWARD))
    return {"top_level": len(top), "view_only": views, "launching": len(top) - views,
            "most_common": collections.Counter(top).most_common(15)}


def run(batch: int, seconds: float, repeats: int, max_padding: Sequence[float], threads: int, model_only: bool,
        count_batch: Optional[int] = None, sizes: Sequence[Sequence[int]] = ()) -> Dict[str, object]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    slicqt = SliCQT()
    base = XUMXSliCQ().train()
    loss = MultiDomainLoss(slicqt, mcoef=0.1, time_domain=True)
    length = int(round(seconds * slicqt.sample_rate))
    gen = torch.Generator().manual_seed(0)
    y = 0.1 * torch.randn(batch, base.nb_targets, 2, length, generator=gen)  # targets
    x = y.sum(1)  # mixture (batch, 2, length)
    variants = {"per_block": base}
    for bound in max_padding:
        variants[f"fused_{bound:g}"] = copy.deepcopy(base).set_fused(True, bound)
    for h1, h2 in sizes:  # per-block networks of other hidden widths (same transform and loss)
        torch.manual_seed(0)
        variants[f"per_block_{h1}x{h2}"] = XUMXSliCQ(hidden_channels=(h1, h2)).train()

    def step(model: XUMXSliCQ, n: int = batch):
        """One training step on the first ``n`` items of the batch."""
        def go():
            model.zero_grad(set_to_none=True)
            mix = slicqt(x[:n])
            est = model([b.abs() for b in mix])
            # targets folded into the batch axis for the transform, then split again: (n, targets, channels, ...)
            target = [b.abs().reshape(n, base.nb_targets, *b.shape[1:])
                      for b in slicqt(y[:n].reshape(-1, *y.shape[2:]))]
            loss.terms(est, target, mixture=mix, target_waveforms=y[:n])["total"].backward()
        return go

    def model_step(model: XUMXSliCQ, mags):
        def go():
            model.zero_grad(set_to_none=True)
            sum(e.sum() for e in model(mags)).backward()
        return go

    out: Dict[str, object] = {"batch": batch, "seconds": seconds, "nb_slices": slicqt.nb_slices(length),
                              "threads": threads, "torch": torch.__version__,
                              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                              "load_average_before": list(os.getloadavg()), "variants": {}}
    nb_slices = slicqt.nb_slices(length)
    n_count = min(count_batch or batch, batch)
    out["count_batch"] = n_count
    mags = [b.abs() for b in slicqt(x[:n_count])]
    for name, model in variants.items():
        rec: Dict[str, object] = {"training_step_ops": count_ops(step(model, n_count))}
        if model_only:
            rec["model_only_ops"] = count_ops(model_step(model, mags))
        if model.fused is not None:
            macs = model.fused.macs(model.nets, nb_slices)
            rec.update(max_padding=model.fused.max_padding, buckets=len(model.fused.buckets),
                       padded_mac_factor=macs["padded"] / macs["real"], macs_per_sample=macs,
                       layout=model.fused.describe())
        out["variants"][name] = rec
        ops = rec["training_step_ops"]
        print(f"{name:<14} training step: {ops['top_level']} top-level operators, {ops['launching']} not views"
              + (f"; {rec['buckets']} buckets, padded MACs {rec['padded_mac_factor']:.3f}x" if "buckets" in rec
                 else ""), flush=True)
    if repeats > 0:
        times: Dict[str, List[float]] = {name: [] for name in variants}
        for model in variants.values():  # warm-up at the timed batch size (the counting may have used a smaller one)
            step(model)()
        for _ in range(repeats):  # interleaved: one step of every variant per round
            for name, model in variants.items():
                times[name].extend(time_calls(step(model), repeats=1).wall_s)
        for name in variants:
            out["variants"][name]["step_s"] = {"best": min(times[name]), "all": times[name]}
            print(f"{name:<14} step best {min(times[name]):.3f} s (of {repeats})")
        best = min(times["per_block"])
        for name in variants:
            out["variants"][name]["step_ratio_to_per_block"] = min(times[name]) / best
    out["load_average_after"] = list(os.getloadavg())
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark training-ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2,
                        help="samples per batch (default 2; the operator count does not depend on it)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per sample (default 1.0)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed steps per variant, interleaved, after each variant's warm-up (default 0: "
                             "count operators only)")
    parser.add_argument("--max-padding", type=float, nargs="*", default=[DEFAULT_MAX_PADDING],
                        help=f"fused variants: bucket bounds on padded / real work (default {DEFAULT_MAX_PADDING}; "
                             "none: no fused variant)")
    parser.add_argument("--hidden-channels", type=int, nargs=2, action="append", default=[], metavar=("H1", "H2"),
                        help="also a per-block network of these hidden widths (repeatable; e.g. 16 32)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch threads (default {torch.get_num_threads()})")
    parser.add_argument("--model-only", action="store_true",
                        help="also count the model's forward + backward alone (default off)")
    parser.add_argument("--count-batch", type=int, default=None,
                        help="batch of the operator-counting steps (default: --batch; the count does not depend on "
                             "it, the profiler's cost does)")
    parser.add_argument("--output", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if (args.batch < 1 or args.seconds <= 0 or args.repeats < 0 or args.threads < 1
            or min(args.max_padding, default=1) < 1 or min((h for p in args.hidden_channels for h in p), default=1) < 1):
        print("error: need --batch >= 1, --seconds > 0, --repeats >= 0, --threads >= 1, --max-padding >= 1, "
              "--hidden-channels >= 1",
              file=sys.stderr)
        return 2
    out = run(args.batch, args.seconds, args.repeats, args.max_padding, args.threads, args.model_only,
              args.count_batch, args.hidden_channels)
    files.write_json(args.output, out)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
