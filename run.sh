#!/usr/bin/env bash
# MDX-2021 entry point. Separates every $TEST_DATASET_PATH/<song>/mixture.wav (default ./data/test) into
# $RESULTS_DATASET_PATH/<song>/{bass,drums,other,vocals}.wav (default ./data/results).
#   - with the starter kit's evaluator/music_demixing.py present (the challenge's servers): python predict.py
#   - otherwise: python -m submission (time-budgeted, resumable batch runner; extra arguments are passed on,
#     e.g. ./run.sh --model /path/to/model --budget-seconds 240)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=python3
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
TEST_DATASET_PATH="$(realpath -m "${TEST_DATASET_PATH:-./data/test}")"
RESULTS_DATASET_PATH="$(realpath -m "${RESULTS_DATASET_PATH:-./data/results}")"
export TEST_DATASET_PATH RESULTS_DATASET_PATH
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -f "$ROOT/evaluator/music_demixing.py" ]; then
    cd "$ROOT"
    exec "$PY" predict.py
fi
exec "$PY" -m submission --input "$TEST_DATASET_PATH" --output "$RESULTS_DATASET_PATH" "$@"
