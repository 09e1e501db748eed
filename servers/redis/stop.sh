#!/usr/bin/env bash
# Stop the Redis started by start.sh (same mode and environment); only our own pids.
#
#   servers/redis/stop.sh [standalone|cluster]
#
# REDIS_WIPE=1 also removes the data dir (a cluster then re-creates on next start).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MODE="${1:-standalone}"
case "$MODE" in
standalone)
    DIR="$STATE/${REDIS_NAME:-standalone}"
    stop_node "$DIR"
    [ "${REDIS_WIPE:-0}" = 1 ] && rm -rf "$DIR"
    ;;
cluster)
    ROOT="$STATE/${REDIS_NAME:-cluster}"
    BASE="${REDIS_CLUSTER_PORT:-7000}"
    for p in "$BASE" $((BASE + 1)) $((BASE + 2)); do stop_node "$ROOT/$p"; done
    [ "${REDIS_WIPE:-0}" = 1 ] && rm -rf "$ROOT"
    ;;
*)
    echo "usage: $0 [standalone|cluster]" >&2; exit 2 ;;
esac
exit 0
