"""xumx-sliCQ v1 model at a glance: block layout, parameter counts and a torchinfo summary of the default (or a
customised) configuration.

    python -m benchmark model-summary --blocks --summary
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

from xumx_slicq.model import XUMXSliCQ
from xumx_slicq.transforms import SliCQT


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark model-summary",
        description="xumx-sliCQ v1 model: block layout, parameter counts and a torchinfo summary of the default "
        "(or a customised) configuration.",
    )
    parser.add_argument("--summary", action="store_true", help="print the torchinfo summary")
    parser.add_argument("--blocks", action="store_true", help="list every block: bins, T, kernel, learned")
    parser.add_argument("--seconds", type=float, default=1.0, help="input length for the summary (1 s)")
    parser.add_argument("--batch", type=int, default=1, help="batch size for the summary (1)")
    parser.add_argument("--depth", type=int, default=2, help="torchinfo depth (2)")
    parser.add_argument("--bandwidth", type=float, default=16000.0, help="learned-block cut in Hz (16000)")
    parser.add_argument("--fbins", type=int, default=262, help="bins of the Bark scale (262)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.batch < 1:
        print("error: --seconds must be > 0 and --batch >= 1", file=sys.stderr)
        return 2

    slicq_config = SliCQT(fbins=args.fbins).config
    model = XUMXSliCQ(slicq_config=slicq_config, bandwidth=args.bandwidth)
    counts = model.parameter_counts()
    if args.blocks:
        for blk, learn, k in zip(model.blocks, model.learned, model.kernels):
            print(f"block first_bin={blk.first_bin:4d} bins={blk.nb_bins:3d} T={blk.T:4d} "
                  f"{'kernel=' + str(k) if learn else 'passed through'}")
    if args.summary:
        import torchinfo

        slicqt = SliCQT(**slicq_config)
        length = int(round(args.seconds * slicqt.sample_rate))
        shapes = slicqt.block_shapes(length, nb_samples=args.batch, nb_channels=model.nb_channels)
        dummy = [torch.rand(s) for s in shapes]
        print(torchinfo.summary(model, input_data=[dummy], depth=args.depth, verbose=0,
                                col_names=("input_size", "output_size", "num_params")))
    print(f"targets: {', '.join(model.targets)}")
    print(f"blocks: {len(model.blocks)}, learned: {model.nb_learned_blocks} ({model.learned_bins()} bins), "
          f"passed through: {len(model.blocks) - model.nb_learned_blocks}")
    print(f"parameters: conv/BN {counts['conv_bn']:,} + input mean/scale {counts['input_scaler']:,} = "
          f"{counts['total']:,} ({counts['per_target']:,} per target, "
          f"{counts['total'] * 4 / 2**20:.1f} MiB as float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
