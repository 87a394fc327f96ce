"""``python -m export``: ONNX export of the xumx-sliCQ network and profiling of PyTorch vs ONNX Runtime vs
numba Wiener-EM.

Not implemented yet (see the export issue): it will export the network (masks from sliCQ magnitudes, dynamic
number of slices), check it against PyTorch, and profile every stage of separation.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print("error: ONNX export is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
