#!/usr/bin/env bash
# Create .venv and install dcstore with every extra and the test tools.
# Reuses pip's cache; safe to run again (it only installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
.venv/bin/python -m pip install --quiet -e ".[all,test]" ${DCSTORE_EXTRA_PIP:-}
echo "setup: .venv ready ($(.venv/bin/python -c 'import dcstore, torch; print("dcstore", dcstore.__version__, "torch", torch.__version__)'))"
