#!/usr/bin/env bash
# The main job on the embedded default (local disk, no servers): set up, then `dcstore demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/dcstore demo "$@"
