"""A test process killed with SIGKILL leaves no private server running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too
        return f.read().split(") ", 1)[1][0] != "Z"


STARTS = {
    "redis": "from redis_server import PrivateRedis\ns = PrivateRedis()\n",
    "memcached": "from memcached_server import PrivateMemcached\ns = PrivateMemcached(count=1)\n",
}
PIDS = {"redis": "s.pids()[0]", "memcached": "s.pid(0)"}


@pytest.mark.parametrize("kind", sorted(STARTS))
def test_private_servers_of_a_killed_test_process_are_stopped(kind: str) -> None:
    code = (
        f"import sys, time\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from reaper import stop_when_gone\n"
        + STARTS[kind]
        + "stop_when_gone(*s.stop_command())\ns.start()\n"
        + f"print({PIDS[kind]}, flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(proc.stdout.readline())  # type: ignore[union-attr]
        assert _alive(server_pid)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while _alive(server_pid):
        assert time.monotonic() < deadline, f"the private {kind} server outlived its test process"
        time.sleep(0.1)
