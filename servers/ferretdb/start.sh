#!/usr/bin/env bash
# Start a FerretDB v1 (SQLite) server on 127.0.0.1 and print its MongoDB URL on stdout.
#
# Env: FERRETDB_PORT (default 27017), FERRETDB_DATA (default $REPO/.servers/ferretdb/data-<port>),
#      FERRETDB_FRESH=1 to wipe the data first, FERRETDB_LOG_LEVEL (default warn).
# Data, log and pid live under $REPO/.servers/ferretdb/. Waits until `ping` succeeds.
# Already running on that port (our pid file, answers ping): prints the URL, exits 0.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PORT="${FERRETDB_PORT:-27017}"
STATE="$REPO/.servers/ferretdb"
DATA="${FERRETDB_DATA:-$STATE/data-$PORT}"
PIDFILE="$STATE/ferretdb-$PORT.pid"
LOG="$STATE/ferretdb-$PORT.log"
URL="mongodb://127.0.0.1:$PORT/dcstore"
PY="$(command -v python3 || command -v python)"

ping_ok() { "$PY" "$HERE/ping.py" 127.0.0.1 "$PORT" 1 >/dev/null 2>&1; }

if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && ping_ok; then
  echo "ferretdb already running on port $PORT (pid $(cat "$PIDFILE"))" >&2
  echo "$URL"
  exit 0
fi

# SO_REUSEADDR like the server itself: TIME_WAIT leftovers of a previous run are fine,
# a live listener is not.
if ! "$PY" -c "import socket as S,sys; s=S.socket(); s.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" "$PORT" 2>/dev/null; then
  echo "port $PORT on 127.0.0.1 is already in use; set FERRETDB_PORT" >&2
  exit 1
fi

BIN="$("$HERE/build.sh")"
mkdir -p "$STATE"
if [[ "${FERRETDB_FRESH:-0}" == 1 ]]; then rm -rf "$DATA"; fi
mkdir -p "$DATA"

setsid "$BIN" -listen "127.0.0.1:$PORT" -dir "$DATA" -log-level "${FERRETDB_LOG_LEVEL:-warn}" \
  </dev/null >>"$LOG" 2>&1 &
PID=$!
echo "$PID" >"$PIDFILE"

for _ in $(seq 1 300); do
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "ferretdb exited during start-up; last log lines ($LOG):" >&2
    tail -n 20 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  if ping_ok; then
    echo "ferretdb ready on port $PORT (pid $PID, data $DATA)" >&2
    echo "$URL"
    exit 0
  fi
  sleep 0.2
done
echo "ferretdb did not answer ping within 60 s; stopping it (log: $LOG)" >&2
kill "$PID" 2>/dev/null || true
rm -f "$PIDFILE"
exit 1
