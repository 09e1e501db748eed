#!/usr/bin/env bash
# Stop the MiniDFS started by start.sh on HDFS_PORT (default 9000): only our own pid.
# HDFS_SIGNAL=KILL simulates a crash. HDFS_WIPE=1 also removes its state directory.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
source "$HERE/../stop_pid.sh"
PORT="${HDFS_PORT:-9000}"
STATE="${HDFS_STATE:-$REPO/.servers/hdfs/nn-$PORT}"
stop_own_pid "hdfs:$PORT" "$STATE/minidfs.pid" "dcstore.minidfs.Main" "${HDFS_SIGNAL:-TERM}" 20
if [[ "${HDFS_WIPE:-0}" == 1 ]]; then rm -rf "$STATE"; fi
