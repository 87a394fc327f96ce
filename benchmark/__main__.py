"""``python -m benchmark <subcommand>``: speed, quality and data benchmarks of xumx-sliCQ, and two demos.

Each subcommand is a module of this package with its own ``--help``; figures are printed and written as
JSON/CSV (default folder ``benchmark/results``).
"""

import argparse
import importlib
import sys

# subcommand -> (module, one-line description)
SUBCOMMANDS = {
    "transform": ("benchmark.transform_speed", "sliCQT forward+inverse vs nsgt 0.19 vs torch STFT"),
    "wiener": ("benchmark.wiener_speed", "Wiener-EM on sliCQ-sized inputs: torch vs numba"),
    "separator": ("benchmark.separator_speed", "separation time and peak memory of xumx-sliCQ, file to file"),
    "loss": ("benchmark.loss_cost", "training step cost with and without the time-domain SI-SDR term"),
    "training-ops": ("benchmark.training_ops", "operators and time of a training step: per-block vs fused blocks"),
    "data": ("benchmark.data_throughput", "training data loader throughput (samples/s)"),
    "evaluate": ("benchmark.evaluate", "museval BSS-eval + MDX SDR of a folder of estimates"),
    "oracles": ("benchmark.oracles", "oracle estimates (IRM, mix-phase STFT/sliCQ) as ceilings and floors"),
    "boxplot": ("benchmark.boxplot", "the standard BSS-eval boxplot figure"),
    "curves": ("benchmark.curves", "training curves (valid/train loss vs examples seen) of train runs"),
    "speed": ("benchmark.speed", "separation time and memory vs UMX / X-UMX"),
    "context": ("benchmark.context", "chunk context / cross-fade: chunked vs unchunked output and MDX SDR"),
    "search": ("benchmark.search", "random search over sliCQ parameters by mix-phase oracle SDR"),
    "real": ("benchmark.real", "report-only MDX SDR on stempeg's real MUSDB18 excerpt vs floor and oracle"),
    "ship": ("benchmark.ship", "candidate vs shipped model (and baselines) on every split: ship only if better"),
    "transform-demo": ("benchmark.transform_demo", "sliCQ of an audio file: layout, reconstruction, plot vs STFT"),
    "model-summary": ("benchmark.model_summary", "xumx-sliCQ block layout, parameter counts, torchinfo summary"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}} {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description=__doc__ + "\nsubcommands:\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("subcommand", choices=sorted(SUBCOMMANDS), help="what to benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the subcommand (see its --help)")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    ns = parser.parse_args(argv[:1])
    return importlib.import_module(SUBCOMMANDS[ns.subcommand][0]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
