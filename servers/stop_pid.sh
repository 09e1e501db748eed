# Shared by the server stop scripts: `source` it, then
#   stop_own_pid LABEL PIDFILE CMDLINE_PATTERN SIGNAL GRACE_SECONDS
# signals the pid in PIDFILE only while its command line still matches
# CMDLINE_PATTERN (pids get reused), waits GRACE_SECONDS, then KILLs it, and
# removes the pid file. A missing pid file or a dead process is not an error.
stop_own_pid() {
  local label="$1" pidfile="$2" pattern="$3" sig="$4" grace="$5" pid
  if [[ ! -f "$pidfile" ]]; then
    echo "[$label] no pid file ($pidfile); nothing to stop" >&2
    return 0
  fi
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"; then
    kill -s "$sig" "$pid"
    for _ in $(seq 1 $((grace * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "[$label] pid $pid ignored SIG$sig for $grace s; sending KILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "[$label] stopped (pid $pid)" >&2
  else
    echo "[$label] pid $pid is not running" >&2
  fi
  rm -f "$pidfile"
}
