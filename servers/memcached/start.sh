#!/usr/bin/env bash
# Start three memcached servers on 127.0.0.1 for dcstore's tests and benchmarks; print
# their URL (memcached://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3).
#
# Environment: MEMCACHED_NAME (the state dir .servers/memcached/<name>/ of ONE group,
# default "shared"), MEMCACHED_PORTS (comma list; default: the ports the group used
# before, else the first free ones from $MEMCACHED_PORT, 11211), MEMCACHED_COUNT (3),
# MEMCACHED_MEMORY (MiB per server, memcached -m: its own LRU evicts beyond it; 64),
# MEMCACHED_ITEM_SIZE (largest item, memcached -I; 1m). Extra arguments go to memcached.
# A running server of the group is left alone, so this also restarts killed ones
# (same ports, empty). Pids live in .servers/memcached/<name>/<port>.pid.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${MEMCACHED_STATE_DIR:-$REPO/.servers/memcached}"
DIR="$STATE/${MEMCACHED_NAME:-shared}"
mkdir -p "$DIR"

command -v memcached >/dev/null || "$HERE/../apt_install.sh" memcached

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

if [ -n "${MEMCACHED_PORTS:-}" ]; then
    IFS=, read -r -a PORTS <<< "$MEMCACHED_PORTS"
elif [ -s "$DIR/ports" ]; then
    read -r -a PORTS < "$DIR/ports"
else
    PORTS=()
    p="${MEMCACHED_PORT:-11211}"
    while [ "${#PORTS[@]}" -lt "${MEMCACHED_COUNT:-3}" ]; do
        port_busy "$p" || PORTS+=("$p")
        p=$((p + 1))
    done
fi
echo "${PORTS[*]}" > "$DIR/ports"

user=()
if [ "$(id -u)" = 0 ]; then user=(-u root); fi  # memcached refuses root without -u
for p in "${PORTS[@]}"; do
    if running "$p"; then
        echo "memcached on port $p already running (pid $(cat "$DIR/$p.pid"))" >&2
        continue
    fi
    if port_busy "$p"; then echo "error: port $p is in use" >&2; exit 1; fi
    memcached -d "${user[@]}" -l 127.0.0.1 -p "$p" -U 0 -c 1024 \
        -m "${MEMCACHED_MEMORY:-64}" -I "${MEMCACHED_ITEM_SIZE:-1m}" -P "$DIR/$p.pid" "$@"
done

ready() {  # a real query on port $1: set, get back, delete
    local reply
    reply="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'set dcstore:ready 0 0 2\r\nok\r\nget dcstore:ready\r\ndelete dcstore:ready\r\nquit\r\n' >&3 && cat <&3" 2>/dev/null)" || return 1
    [[ "$reply" == *$'VALUE dcstore:ready 0 2\r\nok\r\nEND'* ]]
}
for p in "${PORTS[@]}"; do
    for _ in $(seq 1 150); do ready "$p" && break; sleep 0.1; done
    ready "$p" || { echo "error: memcached on port $p does not answer" >&2; exit 1; }
done
hosts=("${PORTS[@]/#/127.0.0.1:}")
(IFS=,; echo "memcached://${hosts[*]}")
