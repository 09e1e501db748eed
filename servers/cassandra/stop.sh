#!/usr/bin/env bash
# Stop the Cassandra node started by start.sh (by its recorded pid only). CASSANDRA_NODE selects the node
# (default node1); CASSANDRA_KILL=1 sends SIGKILL at once (crash simulation); CASSANDRA_WIPE=1 removes its data.
# `stop.sh all` stops every node started from this checkout (shared, private test nodes, bench).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
if [[ "${1:-}" == all ]]; then
  for pidfile in "$REPO"/.servers/cassandra/*/cassandra.pid; do
    [[ -e "$pidfile" ]] || continue
    CASSANDRA_NODE="$(basename "$(dirname "$pidfile")")" "$0"
  done
  exit 0
fi
NODE="${CASSANDRA_NODE:-node1}"
NODEDIR="$REPO/.servers/cassandra/$NODE"
PIDFILE="$NODEDIR/cassandra.pid"
log() { echo "[cassandra:$NODE] $*" >&2; }

if [[ -f "$PIDFILE" ]]; then
  PID="$(cat "$PIDFILE")"
  if kill -0 "$PID" 2>/dev/null; then
    if [[ "${CASSANDRA_KILL:-0}" == 1 ]]; then kill -9 "$PID"; else kill "$PID"; fi
    for _ in $(seq 1 60); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$PID" 2>/dev/null; then log "pid $PID ignored SIGTERM for 30s; sending SIGKILL"; kill -9 "$PID"; fi
    log "stopped pid $PID"
  else
    log "pid $PID not running"
  fi
  rm -f "$PIDFILE"
else
  log "not running (no pid file)"
fi
if [[ "${CASSANDRA_WIPE:-0}" == 1 ]]; then rm -rf "$NODEDIR"; fi
