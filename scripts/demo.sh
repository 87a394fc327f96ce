#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job on the bundled demo data:
#   1. install apt packages, .venv and pinned requirements (scripts/install.sh)
#   2. generate the demo songs data/test/<song>/{mixture,drums,bass,other,vocals}.wav (deterministic, seed 2026)
#   3. run the main job on them: separate every demo song with the shipped model (./run.sh, time-budgeted,
#      stems in out/demo/separated/<song>/) and draw the sliCQ transform demo figure per song (out/demo/)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
if ! ls data/test/*/mixture.wav >/dev/null 2>&1; then
    echo "[demo] generating the demo set in data/test (3 songs x 30 s)"
    $PY -m train.synth --out data --train 0 --test 3 --seconds 30 --seed 2026
fi
mkdir -p out/demo
for mix in data/test/*/mixture.wav; do
    song="$(basename "$(dirname "$mix")")"
    echo "[demo] $song"
    $PY -m benchmark transform-demo "$mix" --plot "out/demo/${song}_slicq.png"
done
if ls pretrained-model/*.pth >/dev/null 2>&1; then
    echo "[demo] separating data/test with pretrained-model/ (./run.sh)"
    TEST_DATASET_PATH=data/test RESULTS_DATASET_PATH=out/demo/separated ./run.sh --no-progress
    # the paths each song took, and any song separated below the best path (degraded), from summary.json
    $PY - <<'PY'
import json
songs = json.load(open("out/demo/separated/summary.json"))["songs"]
for r in songs:
    flag = "  DEGRADED: " + "; ".join(f"{c['start_s']:.0f}-{c['end_s']:.0f} s {c['path']} ({c['reason']})"
                                      for c in r.get("degraded_chunks", [])) if r.get("degraded") else ""
    print(f"[demo] {r['song']}: {r.get('status')}, paths {r.get('path') or r.get('error')}{flag}")
bad = [r["song"] for r in songs if r.get("degraded")]
print(f"[demo] warning: {len(bad)} song(s) degraded: {', '.join(bad)}" if bad else "[demo] every song on the best path")
PY
    echo "[demo] stems in out/demo/separated/<song>/, per-song report in out/demo/separated/summary.json"
else
    echo "[demo] no shipped model in pretrained-model/ yet: separation skipped (train one with python -m train)"
fi
echo "[demo] done: figures in out/demo/"
