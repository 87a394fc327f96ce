#!/usr/bin/env bash
# Run the whole test suite (installs what it needs first). Fails when a test fails or when no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
report="$(mktemp -t xumx-pytest-XXXXXX.xml)"
status=0
.venv/bin/python -m pytest tests -q --junitxml="$report" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    [ "$status" -eq 5 ] && echo "error: pytest collected no tests" >&2
    exit "$status"
fi
.venv/bin/python - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
ran = sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites)
if ran <= 0:
    sys.exit("error: no test ran (all skipped or none collected)")
print(f"{ran} tests ran")
PY
