#!/usr/bin/env bash
# Stop the FerretDB started by start.sh on FERRETDB_PORT (default 27017): only our own pid.
# FERRETDB_SIGNAL=KILL simulates a crash. FERRETDB_WIPE=1 also removes the data directory.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
source "$HERE/../stop_pid.sh"
PORT="${FERRETDB_PORT:-27017}"
STATE="$REPO/.servers/ferretdb"
stop_own_pid "ferretdb:$PORT" "$STATE/ferretdb-$PORT.pid" "dcstore-ferretdb" "${FERRETDB_SIGNAL:-TERM}" 10
if [[ "${FERRETDB_WIPE:-0}" == 1 ]]; then
  rm -rf "${FERRETDB_DATA:-$STATE/data-$PORT}"
fi
