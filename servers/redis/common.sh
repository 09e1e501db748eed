# Shared helpers for the Redis scripts (sourced, not run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${REDIS_STATE_DIR:-$REPO/.servers/redis}"

ensure_redis() {  # install Debian's redis-server once, even when two starts race (up.sh)
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    "$HERE/../apt_install.sh" redis-server redis-tools
}

port_busy() {  # true when something listens on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_node PORT DIR [extra redis-server args...]: start one daemonized node, wait for PONG.
start_node() {
    local port="$1" dir="$2"; shift 2
    CERT_DIR="$dir"
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        echo "redis on port $port already running (pid $(cat "$dir/redis.pid"))" >&2
        return 0
    fi
    if port_busy "$port" || port_busy $((port + 10000)); then
        echo "error: port $port (or its cluster bus port $((port + 10000))) is in use" >&2
        return 1
    fi
    mkdir -p "$dir"
    local auth=() listen=(--port "$port")
    if [ -n "${REDIS_PASSWORD:-}" ]; then auth=(--requirepass "$REDIS_PASSWORD"); fi
    if [ "${REDIS_TLS:-0}" = 1 ]; then
        make_cert "$dir"
        listen=(--port 0 --tls-port "$port" --tls-cert-file "$dir/tls/cert.pem"
                --tls-key-file "$dir/tls/key.pem" --tls-ca-cert-file "$dir/tls/cert.pem"
                --tls-auth-clients no)
    fi
    redis-server --daemonize yes --bind 127.0.0.1 "${listen[@]}" \
        --save "" --appendonly no --protected-mode yes \
        --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" \
        --maxmemory "${REDIS_MAXMEMORY:-1gb}" --maxmemory-policy "${REDIS_POLICY:-allkeys-lru}" \
        "${auth[@]}" "$@"
    wait_ready "$port"
}

make_cert() {  # a self-signed certificate for 127.0.0.1, made once per data dir
    local dir="$1"
    [ -s "$dir/tls/cert.pem" ] && return 0
    command -v openssl >/dev/null || "$HERE/../apt_install.sh" openssl
    mkdir -p "$dir/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=127.0.0.1" \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" 2>/dev/null
    chmod 600 "$dir/tls/key.pem"
}

cli() {  # cli PORT args...: redis-cli with the password (and TLS) from the environment
    local port="$1"; shift
    local tls=()
    if [ "${REDIS_TLS:-0}" = 1 ]; then tls=(--tls --cacert "$CERT_DIR/tls/cert.pem"); fi
    if [ -n "${REDIS_PASSWORD:-}" ]; then
        REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$port" "${tls[@]}" "$@"
    else
        redis-cli -h 127.0.0.1 -p "$port" "${tls[@]}" "$@"
    fi
}

wait_ready() {  # a real PING answered by the node, within ~15 s
    local port="$1" i
    for i in $(seq 1 150); do
        if [ "$(cli "$port" ping 2>/dev/null)" = "PONG" ]; then return 0; fi
        sleep 0.1
    done
    echo "error: redis on port $port did not answer PING; see its redis.log" >&2
    return 1
}

stop_node() {  # stop_node DIR: SHUTDOWN-free stop of the pid we started, by pid
    local dir="$1" pid i
    [ -f "$dir/redis.pid" ] || return 0
    pid="$(cat "$dir/redis.pid")"
    if kill -0 "$pid" 2>/dev/null && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
        kill "$pid"
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$dir/redis.pid"
}
