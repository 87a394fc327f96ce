"""``python -m train``: train xumx-sliCQ (or the UMX / X-UMX baselines) from scratch.

The training loop is being built (see the training issue). Available now:

* ``python -m train.synth``  generate the synthetic multitrack corpus in MUSDB18-HQ layout
* ``python -m train.stats``  per-stem statistics of a corpus, compared with another one
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    print("error: the training loop is not implemented yet; see `python -m train --help` for what exists",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
