"""``python -m submission``: MDX-2021-compatible batch separation with a per-song time budget.

Not implemented yet (see the submission issue): it will separate every ``<song>/mixture.wav`` under
``--input`` into ``<output>/<song>/{bass,drums,other,vocals}.wav`` inside the challenge's time limit,
atomically and resumably.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print("error: the submission runner is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
