#!/usr/bin/env bash
# Stop the MiniDFS started by start.sh on HDFS_PORT (default 9000): only our own pid.
# HDFS_SIGNAL=KILL simulates a crash. HDFS_WIPE=1 also removes its state directory.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PORT="${HDFS_PORT:-9000}"
STATE="${HDFS_STATE:-$REPO/.servers/hdfs/nn-$PORT}"
PIDFILE="$STATE/minidfs.pid"
SIG="${HDFS_SIGNAL:-TERM}"

if [[ ! -f "$PIDFILE" ]]; then
  echo "[hdfs:$PORT] no pid file ($PIDFILE); nothing to stop" >&2
else
  PID="$(cat "$PIDFILE")"
  # Only signal the process if it is still our launcher (pids get reused).
  if kill -0 "$PID" 2>/dev/null && tr '\0' ' ' <"/proc/$PID/cmdline" | grep -q "dcstore.minidfs.Main"; then
    kill -s "$SIG" "$PID"
    for _ in $(seq 1 200); do
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
      echo "[hdfs:$PORT] pid $PID ignored SIG$SIG for 20 s; sending KILL" >&2
      kill -KILL "$PID" 2>/dev/null || true
    fi
    echo "[hdfs:$PORT] stopped (pid $PID)" >&2
  else
    echo "[hdfs:$PORT] pid $PID is not running" >&2
  fi
  rm -f "$PIDFILE"
fi
if [[ "${HDFS_WIPE:-0}" == 1 ]]; then rm -rf "$STATE"; fi
