#!/usr/bin/env bash
# Start a MiniDFSCluster (Hadoop 3.5.0 from Maven Central, Java 17) on 127.0.0.1; print its URL.
#
# Environment (all optional):
#   HDFS_PORT          NameNode RPC port (default 9000)
#   HDFS_HTTP_PORT     NameNode HTTP/WebHDFS port (default 9870)
#   HDFS_CONTROL_PORT  control port of the launcher (default 9871): one command per connection,
#                      e.g. `stop-datanode 0`, `restart-datanodes`, `stop-namenode`, `restart-namenode`
#   HDFS_DATANODES     number of DataNodes (default 2: with replication >= 2 the last DataNode of
#                      the pipeline reports the block before the client closes; with 1 the
#                      client usually waits 500 ms in close)
#   HDFS_REPLICATION   default replication (default: min(DataNodes, 3))
#   HDFS_BLOCK_SIZE    block size in bytes (default 16777216)
#   HDFS_HEAP          JVM max heap (default 512m)
#   HDFS_CONF          extra Hadoop settings "key=value;key=value" (e.g.
#                      "dfs.namenode.handler.count=16")
#   HDFS_STATE         state directory (default $REPO/.servers/hdfs/nn-<port>): data, conf/, log, pid
#   HDFS_START_TIMEOUT seconds to wait for readiness (default 180)
# The cluster is formatted at every start (MiniDFS); NameNode/DataNode restarts through the control
# port keep the data. $HDFS_STATE/conf is a HADOOP_CONF_DIR for clients.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PORT="${HDFS_PORT:-9000}"
HTTP_PORT="${HDFS_HTTP_PORT:-9870}"
CONTROL_PORT="${HDFS_CONTROL_PORT:-9871}"
DATANODES="${HDFS_DATANODES:-2}"
REPLICATION="${HDFS_REPLICATION:-$(( DATANODES < 3 ? DATANODES : 3 ))}"
BLOCK_SIZE="${HDFS_BLOCK_SIZE:-16777216}"
HEAP="${HDFS_HEAP:-512m}"
TIMEOUT="${HDFS_START_TIMEOUT:-180}"
BASE="$REPO/.servers/hdfs"
STATE="${HDFS_STATE:-$BASE/nn-$PORT}"
PIDFILE="$STATE/minidfs.pid"
LOG="$STATE/minidfs.log"
URL="hdfs://127.0.0.1:$PORT"

log() { echo "[hdfs:$PORT] $*" >&2; }

# A real query: WebHDFS lists / (the NameNode is up and out of safe mode for reads).
probe() {
  curl -sf --max-time 5 "http://127.0.0.1:$HTTP_PORT/webhdfs/v1/?op=GETFILESTATUS&user.name=probe" \
    | grep -q '"FileStatus"'
}

# 0. Already running (our pid, answering)? Then starting is a no-op.
if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  if probe; then log "already running (pid $(cat "$PIDFILE"))"; echo "$URL"; exit 0; fi
  log "pid $(cat "$PIDFILE") is alive but does not answer; stop it first (stop.sh)"; exit 1
fi

# 1. Tools: Java 17+, Maven and curl (installed from Debian when missing).
if ! command -v java >/dev/null || ! command -v mvn >/dev/null || ! command -v curl >/dev/null; then
  log "installing openjdk-17-jdk-headless, maven and curl"
  "$HERE/../apt_install.sh" openjdk-17-jdk-headless maven curl
fi
JAVA_MAJOR="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
if [[ "${JAVA_MAJOR:-0}" -lt 17 ]]; then log "Java 17+ required (found ${JAVA_MAJOR:-none})"; exit 1; fi

# 2. Ports must be free.
for p in "$PORT" "$HTTP_PORT" "$CONTROL_PORT"; do
  if ! python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" 2>/dev/null; then
    log "port 127.0.0.1:$p is in use; set HDFS_PORT / HDFS_HTTP_PORT / HDFS_CONTROL_PORT"; exit 1
  fi
done

# 3. Build the launcher once per source version (Maven reuses ~/.m2); concurrent starts share it.
HASH="$(cat "$HERE/pom.xml" "$HERE"/src/main/java/dcstore/minidfs/*.java \
  "$HERE/src/main/resources/log4j.properties" | sha256sum | cut -c1-16)"
BUILD="$BASE/build-$HASH"
mkdir -p "$BASE"
(
  flock 9
  if [[ ! -f "$BUILD/ok" ]]; then
    log "building the MiniDFS launcher (Hadoop 3.5.0 from Maven Central; first run downloads ~180 MB)"
    rm -rf "$BUILD"
    if ! mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" -Ddcstore.build.dir="$BUILD" package \
        >"$BASE/build.log" 2>&1; then
      log "maven build failed; last lines of $BASE/build.log:"; tail -n 30 "$BASE/build.log" >&2; exit 1
    fi
    touch "$BUILD/ok"
  fi
) 9>"$BASE/build.lock"

# 4. Start it (its own session, so stop.sh signals exactly this JVM).
rm -rf "$STATE/data" "$STATE/conf" "$STATE/tmp" "$STATE/ready"
mkdir -p "$STATE/tmp"
OPENS=()
for pkg in java.io java.lang java.lang.reflect java.math java.net java.nio java.text java.util \
           java.util.concurrent java.util.zip sun.nio.ch sun.security.util sun.security.x509; do
  OPENS+=("--add-opens=java.base/$pkg=ALL-UNNAMED")
done
setsid java -Xms64m -Xmx"$HEAP" -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
  -Djava.io.tmpdir="$STATE/tmp" -Djava.net.preferIPv4Stack=true "${OPENS[@]}" \
  -cp "$BUILD/classes:$BUILD/lib/*" dcstore.minidfs.Main \
  --base-dir "$STATE" --nn-port "$PORT" --http-port "$HTTP_PORT" --control-port "$CONTROL_PORT" \
  --datanodes "$DATANODES" --replication "$REPLICATION" --block-size "$BLOCK_SIZE" \
  --conf "${HDFS_CONF:-}" \
  </dev/null >>"$LOG" 2>&1 &
PID=$!
echo "$PID" >"$PIDFILE"

# 5. Wait until the launcher says READY and WebHDFS answers.
deadline=$(( SECONDS + TIMEOUT ))
while (( SECONDS < deadline )); do
  if ! kill -0 "$PID" 2>/dev/null; then
    log "MiniDFS exited during start-up; last log lines ($LOG):"
    tail -n 30 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  if [[ -f "$STATE/ready" ]] && probe; then
    log "ready: $URL (pid $PID, $DATANODES datanode(s), replication $REPLICATION," \
        "http 127.0.0.1:$HTTP_PORT, control 127.0.0.1:$CONTROL_PORT, HADOOP_CONF_DIR $STATE/conf)"
    echo "$URL"
    exit 0
  fi
  sleep 0.5
done
log "not ready within $TIMEOUT s; stopping it (log: $LOG)"
kill "$PID" 2>/dev/null || true
rm -f "$PIDFILE"
exit 1
