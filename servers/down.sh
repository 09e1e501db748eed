#!/usr/bin/env bash
# Stop every server servers/up.sh started (each stop script kills only its own pids).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/redis/stop.sh" standalone
"$HERE/redis/stop.sh" cluster
"$HERE/memcached/stop.sh"
"$HERE/ferretdb/stop.sh"
"$HERE/hdfs/stop.sh"
"$HERE/cassandra/stop.sh" all
exit 0
