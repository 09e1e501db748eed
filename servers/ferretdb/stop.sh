#!/usr/bin/env bash
# Stop the FerretDB started by start.sh on FERRETDB_PORT (default 27017): only our own pid.
# FERRETDB_SIGNAL=KILL simulates a crash. FERRETDB_WIPE=1 also removes the data directory.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PORT="${FERRETDB_PORT:-27017}"
STATE="$REPO/.servers/ferretdb"
PIDFILE="$STATE/ferretdb-$PORT.pid"
SIG="${FERRETDB_SIGNAL:-TERM}"

if [[ ! -f "$PIDFILE" ]]; then
  echo "no ferretdb pid file for port $PORT; nothing to stop" >&2
else
  PID="$(cat "$PIDFILE")"
  # Only signal the process if it is still our binary (pids get reused).
  if kill -0 "$PID" 2>/dev/null && tr '\0' ' ' <"/proc/$PID/cmdline" | grep -q "dcstore-ferretdb"; then
    kill -s "$SIG" "$PID"
    for _ in $(seq 1 100); do
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
      echo "ferretdb pid $PID ignored SIG$SIG for 10 s; sending KILL" >&2
      kill -KILL "$PID" 2>/dev/null || true
    fi
    echo "ferretdb on port $PORT stopped (pid $PID)" >&2
  else
    echo "ferretdb pid $PID is not running" >&2
  fi
  rm -f "$PIDFILE"
fi
if [[ "${FERRETDB_WIPE:-0}" == 1 ]]; then
  rm -rf "${FERRETDB_DATA:-$STATE/data-$PORT}"
fi
