#!/bin/bash
# Run scripts/gpu_compare.py on a lent GPU machine (the `device` tool's `run`), whose image has PyTorch but not
# every package this project needs. Arguments go to gpu_compare.py. Before the call, on this machine:
#
#   python -m train.pack pack --root data/synth --output .gpu/corpus --train-tracks 100 --train-seconds 15 \
#       --test-tracks 12 --test-seconds 20 --quality 1.0          # 45.5 MiB
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl soundfile cffi pycparser \
#       museval musdb stempeg ffmpeg-python future pyaml jsonschema jsonschema-specifications referencing rpds-py
#
# and name .gpu and .whl in the call's `carry` (both ignored, .gitignore). Then, as the command:
#
#   bash scripts/gpu_remote.sh --minutes 7.5 --deadline 580 --no-evaluate --out "$OUT"   # first call
#   bash scripts/gpu_remote.sh --no-train --deadline 200 --out "$OUT"                  # second, while warm
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "wheel install failed" >&2; exit 3; }
    export PYTHONPATH=/tmp/site
fi
# stempeg (imported by musdb, imported by museval) refuses to import without ffmpeg on the PATH; evaluation
# never decodes stems through it, so a stand-in that reports a version is enough
if ! command -v ffmpeg >/dev/null; then
    mkdir -p /tmp/ffmpeg-shim
    printf '#!/bin/sh\necho "ffmpeg version 4.4.2 (stand-in: no decoding)"\n' > /tmp/ffmpeg-shim/ffmpeg
    cp /tmp/ffmpeg-shim/ffmpeg /tmp/ffmpeg-shim/ffprobe
    chmod +x /tmp/ffmpeg-shim/*
    export PATH=/tmp/ffmpeg-shim:$PATH
fi
python3 -c "import museval, soundfile, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || exit 4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
mkdir -p "${OUT:-out/gpu/return}"
PYTHONUNBUFFERED=1 python3 scripts/gpu_compare.py "$@" 2>&1 | tee "${OUT:-out/gpu/return}/driver.log"
