#!/bin/bash
# Same-budget UMX / X-UMX for the shipped run-3c model (issue 18, point 3), on exactly its examples:
#   stage 1, run 1's protocol: the packed v1 corpus (data/gpu_run1), 30,912 examples, seed 42;
#   stage 2, run 3c's fine-tuning: data/mix3 from the stage-1 weights (--init-from), lr 3e-4, 15,744 examples.
# Resumable: rerun the same line after an interruption; a stage whose budget is spent is skipped.
#
#   bash scripts/baselines_run3c.sh umx            # one architecture (umx or xumx)
#   THREADS=1 bash scripts/baselines_run3c.sh xumx # two runs side by side on 2 cores: THREADS=1 each
#
# Environment: OUT (default runs/base3c), THREADS (default 2), FINETUNE_EXAMPLES (default 15744, run 3c's
# fine-tuning budget; raise it to follow a longer xumx-sliCQ run), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: baselines_run3c.sh umx|xumx}
OUT=${OUT:-runs/base3c}
THREADS=${THREADS:-2}
FINETUNE_EXAMPLES=${FINETUNE_EXAMPLES:-15744}
PYTHON=${PYTHON:-.venv/bin/python}

stage1="$OUT/$arch-run1"
if "$PYTHON" scripts/budget_spent.py "$stage1" 30912; then
    echo "== $arch stage 1: done ($stage1)"
else
    echo "== $arch stage 1 -> $stage1 ($(date -u +%FT%TZ))"
    "$PYTHON" -m train --arch "$arch" --root data/gpu_run1 --output "$stage1" --samples-per-track 16 \
        --stats-tracks 64 --workers 1 --threads "$THREADS" --max-examples 30912 --resume --no-progress --device cpu
fi
stage2="$OUT/$arch"
if "$PYTHON" scripts/budget_spent.py "$stage2" "$FINETUNE_EXAMPLES"; then
    echo "== $arch stage 2: done ($stage2)"
else
    echo "== $arch stage 2 -> $stage2 ($(date -u +%FT%TZ))"
    "$PYTHON" -m train --arch "$arch" --root data/mix3 --output "$stage2" --init-from "$stage1" --lr 3e-4 \
        --samples-per-track 16 --valid-seconds 30 --workers 1 --threads "$THREADS" \
        --max-examples "$FINETUNE_EXAMPLES" --max-hours 6 --resume --no-progress
fi
