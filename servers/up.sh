#!/usr/bin/env bash
# Start every real server the test suite uses, in parallel, on 127.0.0.1:
# Redis (standalone + 3-node cluster), three memcached servers, HDFS (MiniDFSCluster),
# Cassandra 5.0 and FerretDB.
# Writes .servers/env.sh exporting DCSTORE_TEST_<NAME>_URL; `source` it to point tests
# and benchmarks at them. servers/down.sh stops them. Each start script installs or
# builds what it needs on first use (apt, Maven, Go) and reuses its caches later.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STATE="$REPO/.servers"
mkdir -p "$STATE/up"
# A python3 with the drivers is needed by some readiness probes.
if [ -x "$REPO/.venv/bin/python" ]; then export PATH="$REPO/.venv/bin:$PATH"; fi

declare -A START=(
    [redis]="$HERE/redis/start.sh standalone"
    [redis_cluster]="$HERE/redis/start.sh cluster"
    [memcached]="$HERE/memcached/start.sh"
    [mongodb]="$HERE/ferretdb/start.sh"
    [hdfs]="$HERE/hdfs/start.sh"
    [cassandra]="$HERE/cassandra/start.sh"
)
names=("${!START[@]}")
if [ -n "${DCSTORE_SERVERS:-}" ]; then IFS=, read -r -a names <<< "$DCSTORE_SERVERS"; fi

declare -A PIDS=()
for name in "${names[@]}"; do
    ( ${START[$name]} > "$STATE/up/$name.url" 2> "$STATE/up/$name.log" ) &
    PIDS[$name]=$!
done

failed=0
: > "$STATE/env.sh"
for name in "${names[@]}"; do
    if wait "${PIDS[$name]}" && [ -s "$STATE/up/$name.url" ]; then
        url="$(tail -n 1 "$STATE/up/$name.url")"
        var="DCSTORE_TEST_$(echo "$name" | tr '[:lower:]' '[:upper:]')_URL"
        echo "export $var='$url'" >> "$STATE/env.sh"
        echo "up: $name ready at $url"
    else
        failed=1
        echo "up: $name FAILED to start; its output:" >&2
        tail -n 40 "$STATE/up/$name.log" >&2 || true
    fi
done
exit "$failed"
