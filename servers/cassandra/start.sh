#!/usr/bin/env bash
# Start one Apache Cassandra 5.0 node from Maven Central jars (no Docker), wait until CQL answers, print its URL.
#
# Environment (all optional):
#   CASSANDRA_VERSION       cassandra-all version (default 5.0.8)
#   CASSANDRA_NODE          node name; data/logs/pid live in $REPO/.servers/cassandra/<node> (default node1)
#   CASSANDRA_LISTEN        listen + rpc address (default 127.0.0.1; any 127.x.y.z works on Linux loopback)
#   CASSANDRA_BROADCAST_RPC address drivers are told to reach this node at (default: the listen
#                           address; e.g. a fault proxy listening on another loopback address)
#   CASSANDRA_SEEDS         comma-separated seed addresses (default: the listen address)
#   CASSANDRA_CLUSTER       cluster name (default dcstore)
#   CASSANDRA_PORT          CQL native port (default 9042); CASSANDRA_STORAGE_PORT inter-node port (default 7400:
#                           7000-7005 are often taken by a Redis Cluster on loopback)
#   CASSANDRA_HEAP          JVM max heap (default 1g); CASSANDRA_MEMTABLE memtable heap space (default 256MiB)
#   CASSANDRA_AUTH=1        enable PasswordAuthenticator (superuser cassandra/cassandra)
#   CASSANDRA_TLS=1         TLS-only CQL port with a self-signed certificate for the listen address
#                           (CA file: <node dir>/tls/cert.pem; needs openssl)
#   CASSANDRA_FRESH=1       wipe this node's data before starting
#   CASSANDRA_START_TIMEOUT seconds to wait for CQL (default 240)
# A second node of the same cluster:  CASSANDRA_NODE=node2 CASSANDRA_LISTEN=127.0.0.2 CASSANDRA_SEEDS=127.0.0.1 start.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VERSION="${CASSANDRA_VERSION:-5.0.8}"
NODE="${CASSANDRA_NODE:-node1}"
LISTEN="${CASSANDRA_LISTEN:-127.0.0.1}"
SEEDS="${CASSANDRA_SEEDS:-$LISTEN}"
BROADCAST_RPC="${CASSANDRA_BROADCAST_RPC:-$LISTEN}"
CLUSTER="${CASSANDRA_CLUSTER:-dcstore}"
PORT="${CASSANDRA_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7400}"
HEAP="${CASSANDRA_HEAP:-1g}"
MEMTABLE="${CASSANDRA_MEMTABLE:-256MiB}"
TIMEOUT="${CASSANDRA_START_TIMEOUT:-240}"
BASE="$REPO/.servers/cassandra"
DIST="$BASE/dist-$VERSION"
NODEDIR="$BASE/$NODE"
PIDFILE="$NODEDIR/cassandra.pid"
URL="cassandra://$LISTEN:$PORT"

log() { echo "[cassandra:$NODE] $*" >&2; }

PROBE_ARGS=()
if [[ "${CASSANDRA_TLS:-0}" == 1 ]]; then PROBE_ARGS+=(--tls); fi
probe() { python3 "$HERE/cql_probe.py" "$LISTEN" "$PORT" "${PROBE_ARGS[@]}" >/dev/null 2>&1; }

# 0. Already running (our pid, answering CQL)? Then starting is a no-op.
if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  if probe; then log "already running (pid $(cat "$PIDFILE"))"; echo "$URL"; exit 0; fi
  log "pid $(cat "$PIDFILE") is alive but CQL does not answer; stop it first (stop.sh)"; exit 1
fi

# 1. Tools: Java 17+ and Maven (installed from Debian when missing).
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  log "installing openjdk-17-jdk-headless and maven"
  "$HERE/../apt_install.sh" openjdk-17-jdk-headless maven
fi
JAVA_MAJOR="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
if [[ "${JAVA_MAJOR:-0}" -lt 17 ]]; then log "Java 17+ required (found ${JAVA_MAJOR:-none})"; exit 1; fi

# 2. Ports must be free on this address.
for p in "$PORT" "$STORAGE_PORT"; do
  if ! python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2])))' "$LISTEN" "$p" 2>/dev/null; then
    log "port $LISTEN:$p is in use (or the address is not local)"; exit 1
  fi
done

# 3. Resolve cassandra-all and its runtime dependencies once per version (reuses ~/.m2).
if ! compgen -G "$DIST/lib/cassandra-all-$VERSION.jar" >/dev/null; then
  log "resolving org.apache.cassandra:cassandra-all:$VERSION from Maven Central"
  mkdir -p "$BASE"
  rm -rf "$DIST.tmp"
  mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" -Dcassandra.version="$VERSION" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$DIST.tmp/lib" >&2
  mv "$DIST.tmp" "$DIST"
fi
JAMM="$(compgen -G "$DIST/lib/jamm-*.jar" | head -1)"

# 4. Node directory and configuration.
if [[ "${CASSANDRA_FRESH:-0}" == 1 ]]; then rm -rf "$NODEDIR"; fi
# tmp: the JVM's temporary files (lz4-java unpacks its native library there), kept out of
# /tmp so a killed node leaves nothing behind it; emptied at each start.
rm -rf "$NODEDIR/tmp"
mkdir -p "$NODEDIR"/{conf,data,logs,triggers,tmp}
AUTHENTICATOR=AllowAllAuthenticator
if [[ "${CASSANDRA_AUTH:-0}" == 1 ]]; then AUTHENTICATOR=PasswordAuthenticator; fi
sed -e "s|@CLUSTER@|$CLUSTER|" -e "s|@SEEDS@|$SEEDS|" -e "s|@LISTEN@|$LISTEN|g" \
    -e "s|@BROADCAST_RPC@|$BROADCAST_RPC|" \
    -e "s|@STORAGE_PORT@|$STORAGE_PORT|" -e "s|@NATIVE_PORT@|$PORT|" -e "s|@DATA@|$NODEDIR/data|g" \
    -e "s|@MEMTABLE@|$MEMTABLE|" -e "s|@COMMITLOG_SPACE@|${CASSANDRA_COMMITLOG_SPACE:-1024MiB}|" \
    -e "s|@AUTHENTICATOR@|$AUTHENTICATOR|" \
    "$HERE/cassandra.yaml.in" > "$NODEDIR/conf/cassandra.yaml"
cp "$HERE/logback.xml" "$NODEDIR/conf/logback.xml"
if [[ "${CASSANDRA_TLS:-0}" == 1 ]]; then
  TLS="$NODEDIR/tls"
  if [[ ! -f "$TLS/node.p12" ]]; then
    command -v openssl >/dev/null || "$HERE/../apt_install.sh" openssl
    mkdir -p "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$LISTEN" \
      -addext "subjectAltName=IP:$LISTEN" -keyout "$TLS/key.pem" -out "$TLS/cert.pem" 2>/dev/null
    openssl pkcs12 -export -in "$TLS/cert.pem" -inkey "$TLS/key.pem" -name node \
      -passout pass:dcstore-test -out "$TLS/node.p12"
  fi
  cat >> "$NODEDIR/conf/cassandra.yaml" <<YAML
client_encryption_options:
  enabled: true
  optional: false
  keystore: $TLS/node.p12
  keystore_password: dcstore-test
  store_type: PKCS12
  require_client_auth: false
YAML
fi

# 5. JVM flags: Cassandra 5.0's jvm-server.options + jvm17-server.options essentials, small heap, jamm agent.
JVM_OPTS=(
  -Xms256m "-Xmx$HEAP" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
  -XX:G1HeapRegionSize=4m -XX:MaxGCPauseMillis=300 -XX:+UseThreadPriorities -XX:+PerfDisableSharedMem
  -XX:+CrashOnOutOfMemoryError -ea -da:net.openhft...
  "-XX:ErrorFile=$NODEDIR/logs/hs_err_pid%p.log" "-XX:HeapDumpPath=$NODEDIR/logs"
  "-Djava.io.tmpdir=$NODEDIR/tmp" -Djava.net.preferIPv4Stack=true -Djava.security.manager=allow -Djdk.attach.allowAttachSelf=true
  -Dio.netty.tryReflectionSetAccessible=true -Dio.netty.allocator.useCacheForAllThreads=true
  -Dio.netty.allocator.maxOrder=11
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  "-javaagent:$JAMM"
  "-Dcassandra.config=file://$NODEDIR/conf/cassandra.yaml"
  "-Dlogback.configurationFile=file://$NODEDIR/conf/logback.xml"
  "-Dcassandra.logdir=$NODEDIR/logs" "-Dcassandra.storagedir=$NODEDIR/data"
  "-Dcassandra.triggers_dir=$NODEDIR/triggers"
  -Dcassandra-foreground=yes -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.load_ring_state=false
  -Dcassandra.ring_delay_ms=1000 -Dcassandra.available_processors="${CASSANDRA_PROCESSORS:-2}"
)

# 6. Start detached; record our pid.
log "starting $VERSION on $LISTEN:$PORT (cluster $CLUSTER, seeds $SEEDS, heap $HEAP)"
(cd "$NODEDIR" && exec setsid java "${JVM_OPTS[@]}" -cp "$NODEDIR/conf:$DIST/lib/*" \
  org.apache.cassandra.service.CassandraDaemon >"$NODEDIR/logs/stdout.log" 2>&1 </dev/null) &
echo $! > "$PIDFILE"
PID=$!

# 7. Ready only when a real CQL query succeeds.
start=$SECONDS
until probe; do
  if ! kill -0 "$PID" 2>/dev/null; then
    log "exited during start-up; last log lines:"; tail -n 30 "$NODEDIR/logs/stdout.log" >&2; rm -f "$PIDFILE"; exit 1
  fi
  if (( SECONDS - start > TIMEOUT )); then
    log "CQL not answering after ${TIMEOUT}s; stopping pid $PID"; kill "$PID" 2>/dev/null || true
    tail -n 30 "$NODEDIR/logs/system.log" >&2 || true; rm -f "$PIDFILE"; exit 1
  fi
  sleep 1
done
log "ready in $((SECONDS - start))s (pid $PID)"
echo "$URL"
