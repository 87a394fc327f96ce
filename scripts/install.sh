#!/usr/bin/env bash
# Install everything xumx-sliCQ needs on a Debian/Ubuntu machine with Python 3.11:
# apt packages (ffmpeg for musdb, fluidsynth + soundfonts + espeak-ng + festival for the synthetic corpora),
# a virtual environment in .venv, the pinned pip requirements, and the test-only reference nsgt 0.19.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
# corpus v2 (train.synth --style v2): recorded drum kits, MuseScore General (uncompressed SF2: the SF3 package takes
# ~14 s to load per process), festival + the HTS US-English voice; checked on Debian 12: avldrums.lv2-soundfont
# 0.5.2-2, hydrogen-drumkits 2017.09.19~dfsg-1, musescore-general-soundfont-lossless 0.2.1-1, festival 1:2.5.0-9,
# festvox-us-slt-hts 0.2010.10.25-4
APT_PACKAGES=(ffmpeg fluidsynth fluid-soundfont-gm espeak-ng sox libsndfile1 python3-venv
              avldrums.lv2-soundfont hydrogen-drumkits musescore-general-soundfont-lossless festival
              festvox-us-slt-hts)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "[install] apt packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then
    echo "[install] error: Python >= 3.11 is needed, $PYTHON is $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "[install] creating .venv"
    "$PYTHON" -m venv .venv
fi
# torch is pinned to 2.13.0 (CPU build): an unpinned torch pulls a multi-GB CUDA build
if ! .venv/bin/python - <<'PY' 2>/dev/null
import importlib.metadata as md, pathlib, re, sys
for line in pathlib.Path("requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    m = re.match(r"([A-Za-z0-9_.\-]+)==(.+)", line)
    if m and md.version(m.group(1)).split("+")[0] != m.group(2):
        sys.exit(1)
PY
then
    echo "[install] pip requirements (pinned, this takes a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt
fi
if ! .venv/bin/python -c "import nsgt" 2>/dev/null; then
    echo "[install] reference nsgt==0.19 (test-only)"
    .venv/bin/python -m pip install -q --no-build-isolation nsgt==0.19
fi
echo "[install] ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
