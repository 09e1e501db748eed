#!/usr/bin/env bash
# Stop the memcached group start.sh started (same MEMCACHED_NAME); only our own pids.
# MEMCACHED_WIPE=1 also forgets the group's ports.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${MEMCACHED_STATE_DIR:-$REPO/.servers/memcached}"
DIR="$STATE/${MEMCACHED_NAME:-shared}"
source "$HERE/../stop_pid.sh"
for pidfile in "$DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    stop_own_pid memcached "$pidfile" memcached TERM 5
done
[ "${MEMCACHED_WIPE:-0}" = 1 ] && rm -rf "$DIR"
exit 0
