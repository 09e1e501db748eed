#!/usr/bin/env bash
# Start Redis on 127.0.0.1 for dcstore's tests and benchmarks; print its URL.
#
#   servers/redis/start.sh             standalone on $REDIS_PORT (6379)
#   servers/redis/start.sh cluster     3-node Redis Cluster on $REDIS_CLUSTER_PORT.. +2 (7000-7002)
#
# Environment: REDIS_PORT, REDIS_CLUSTER_PORT, REDIS_NAME (the data dir under
# .servers/redis/ of ONE server or ONE cluster: use different names for a standalone and
# a cluster; default "standalone" / "cluster"), REDIS_MAXMEMORY (1gb), REDIS_POLICY (allkeys-lru), REDIS_PASSWORD (requirepass, optional),
# REDIS_TLS=1 (standalone only: TLS on the port with a self-signed certificate
# made in the data dir; the printed rediss:// URL names it as ca_file).
# Extra arguments after the mode go to redis-server (e.g. --maxmemory 2mb).
# Data, logs and pids live in .servers/redis/<name>/; nothing is persisted.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MODE="${1:-standalone}"; shift || true
ensure_redis

case "$MODE" in
standalone)
    PORT="${REDIS_PORT:-6379}"
    DIR="$STATE/${REDIS_NAME:-standalone}"
    start_node "$PORT" "$DIR" "$@"
    # a real query: write, read back, delete
    [ "$(cli "$PORT" set dcstore:ready 1)" = "OK" ] && cli "$PORT" del dcstore:ready >/dev/null
    if [ "${REDIS_TLS:-0}" = 1 ]; then
        echo "rediss://127.0.0.1:$PORT/0?ca_file=$DIR/tls/cert.pem"
    else
        echo "redis://127.0.0.1:$PORT/0"
    fi
    ;;
cluster)
    BASE="${REDIS_CLUSTER_PORT:-7000}"
    ROOT="$STATE/${REDIS_NAME:-cluster}"
    PORTS=("$BASE" $((BASE + 1)) $((BASE + 2)))
    for p in "${PORTS[@]}"; do
        start_node "$p" "$ROOT/$p" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout "${REDIS_NODE_TIMEOUT:-2000}" "$@"
    done
    # a restart keeps nodes.conf and rejoins; only a cluster without slots is created
    if cli "$BASE" cluster info | grep -q "cluster_slots_assigned:0"; then
        cli "$BASE" --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 \
            --cluster-yes >"$ROOT/create.log" 2>&1 \
            || { cat "$ROOT/create.log" >&2; exit 1; }
    fi
    for i in $(seq 1 300); do
        ok=1
        for p in "${PORTS[@]}"; do
            cli "$p" cluster info 2>/dev/null | grep -q "cluster_state:ok" || ok=0
        done
        [ "$ok" = 1 ] && break
        sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "error: cluster state not ok; see $ROOT/*/redis.log" >&2; exit 1; }
    # a real query through the cluster: a key in every node's slots
    for k in a b c d e f; do cli "$BASE" -c set "dcstore:ready:$k" 1 >/dev/null; done
    for k in a b c d e f; do cli "$BASE" -c del "dcstore:ready:$k" >/dev/null; done
    echo "redis+cluster://127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
    ;;
*)
    echo "usage: $0 [standalone|cluster] [redis-server args...]" >&2; exit 2 ;;
esac
