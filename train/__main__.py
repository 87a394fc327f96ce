"""``python -m train``: train xumx-sliCQ (or the UMX / X-UMX baselines) from scratch; see ``--help``.

Related commands: ``python -m train.synth`` (synthetic corpus), ``python -m train.stats`` (corpus statistics).
"""

import sys

from train.trainer import main

if __name__ == "__main__":
    sys.exit(main())
