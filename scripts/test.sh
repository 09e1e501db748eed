#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, start the real servers
# (Redis, HDFS, Cassandra, a MongoDB-wire server), lint, run pytest, stop the servers.
# Servers start in the background while Python dependencies install.
# Exits non-zero on any failure, including "no tests collected".
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
mkdir -p .servers
servers/up.sh > .servers/up.log 2>&1 &
up_pid=$!
mkdir -p .tools
scripts/tools.sh > .tools/tools.log 2>&1 &
tools_pid=$!
# On any exit, let a still-running up.sh finish first, so down.sh stops every server it started.
trap 'wait "$up_pid" "$tools_pid" 2>/dev/null; servers/down.sh >/dev/null 2>&1 || true' EXIT

scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m mypy  # strict on dcstore/ (pyproject.toml [tool.mypy])

if ! wait "$tools_pid"; then
    cat .tools/tools.log >&2
    echo "test.sh: a test tool failed to build" >&2
    exit 1
fi
cat .tools/tools.log
if ! wait "$up_pid"; then
    cat .servers/up.log >&2
    echo "test.sh: a server failed to start" >&2
    exit 1
fi
cat .servers/up.log
# shellcheck disable=SC1091
source .servers/env.sh
export DCSTORE_REQUIRE_SERVERS=1
echo "test.sh: servers up after $(( $(date +%s) - start )) s"

# A backstop well inside CI's 90 minutes: on SIGTERM pytest prints every thread's stack
# (tests/conftest.py), so a hang is reported with its place.
limit="${DCSTORE_TEST_TIMEOUT_S:-3000}"
set +e
timeout --kill-after=60 "$limit" .venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: failing on purpose" >&2
    status=1
elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "test.sh: pytest ran past ${limit} s and was stopped" >&2
fi
echo "test.sh: finished with status $status in $(( $(date +%s) - start )) s"
exit "$status"
