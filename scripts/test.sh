#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, start the real servers
# (Redis, HDFS, Cassandra, a MongoDB-wire server), lint, run pytest, stop the servers.
# Exits non-zero on any failure, including "no tests collected".
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .

if [ -x servers/up.sh ]; then
    trap 'servers/down.sh || true' EXIT
    servers/up.sh
    # shellcheck disable=SC1091
    source .servers/env.sh
    export DCSTORE_REQUIRE_SERVERS=1
fi

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: failing on purpose" >&2
    status=1
fi
echo "test.sh: finished with status $status in $(( $(date +%s) - start )) s"
exit "$status"
