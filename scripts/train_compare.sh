#!/bin/bash
# Train xumx-sliCQ, UMX and X-UMX one after the other on the same data with the same budget
# (same number of training examples, same wall-clock cap, same machine). Resumable: rerun the same command
# after an interruption and each model continues from its last epoch checkpoint; finished models are skipped.
#
#   bash scripts/train_compare.sh                      # defaults below
#   ROOT=/data/musdb18hq OUT=runs EXAMPLES=12800 HOURS=4 bash scripts/train_compare.sh
#
# Environment: ROOT (MUSDB18-HQ layout, default data/synth), OUT (default runs/compare), EXAMPLES (training
# examples per model, default 12800 = 400 batches of 32), HOURS (wall-clock cap per model, default 4),
# ARCHS (default "xumx-slicq umx xumx"), THREADS (torch threads, default 2), PYTHON (default .venv/bin/python),
# SLICQ_ARGS (extra options of the xumx-slicq run only, e.g. "--hidden-channels 16 32"; default none).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-data/synth}
OUT=${OUT:-runs/compare}
EXAMPLES=${EXAMPLES:-12800}
HOURS=${HOURS:-4}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-.venv/bin/python}
for arch in ${ARCHS:-xumx-slicq umx xumx}; do
    out="$OUT/$arch"
    # a model whose budget is spent is done: do not train it further on a rerun
    if "$PYTHON" scripts/budget_spent.py "$out" "$EXAMPLES" "$HOURS"
    then
        echo "== $arch: budget ($EXAMPLES examples or $HOURS h) already spent, skipping ($out)"
        continue
    fi
    extra=()
    if [ "$arch" = xumx-slicq ] && [ -n "${SLICQ_ARGS:-}" ]; then read -r -a extra <<< "$SLICQ_ARGS"; fi
    echo "== $arch -> $out ($(date -u +%FT%TZ)) ${extra[*]:-}"
    "$PYTHON" -m train --arch "$arch" --root "$ROOT" --output "$out" ${extra[@]+"${extra[@]}"} \
        --samples-per-track 16 --valid-seconds 30 --workers 1 --threads "$THREADS" \
        --max-examples "$EXAMPLES" --max-hours "$HOURS" --resume --no-progress
done
