"""Exit 0 when a training run's budget is spent, 1 otherwise (no history yet counts as not spent).

    python scripts/budget_spent.py RUN_DIR EXAMPLES [HOURS]

Reads ``RUN_DIR/history.json`` (written by ``python -m train`` after every epoch): the budget is spent when the last
epoch has seen at least EXAMPLES training examples, or, with HOURS, when the epochs took at least HOURS in all.
The shell scripts that chain resumable runs (``train_compare.sh``, ``baselines_run3c.sh``) use it to skip a finished
run on a rerun instead of training it further.
"""

import json
import pathlib
import sys


def spent(run_dir: str, examples: int, hours: float = float("inf")) -> bool:
    history = pathlib.Path(run_dir) / "history.json"
    records = json.loads(history.read_text()) if history.is_file() else []
    if not records:
        return False
    if records[-1]["examples_seen"] >= examples:
        return True
    return hours != float("inf") and sum(r["epoch_seconds"] for r in records) / 3600 >= hours


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print("usage: python scripts/budget_spent.py RUN_DIR EXAMPLES [HOURS]", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if spent(sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])) else 1)
