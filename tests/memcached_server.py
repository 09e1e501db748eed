"""Memcached for the cache tests: the shared group of three, and private groups for faults.

The shared servers come from ``servers/memcached/start.sh`` (URL in
``DCSTORE_TEST_MEMCACHED_URL``). Fault tests start :class:`PrivateMemcached`
groups on free ports through the same script, so killing one never disturbs
the shared ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from reaper import dismiss, stop_when_gone
from redis_server import _wait_gone
from serverenv import server_url

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "servers" / "memcached"


def shared_memcached_url() -> str:
    return server_url("memcached")


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that are free now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class PrivateMemcached:
    """A group of memcached servers of the test's own, started by our script."""

    def __init__(self, *args: str, count: int = 3, memory_mb: int = 64):
        self.args = list(args)
        self.name = f"private-{uuid.uuid4().hex[:8]}"
        self.ports = free_ports(count)
        self.memory_mb = memory_mb
        self.url = ""

    @property
    def dir(self) -> Path:
        return REPO / ".servers" / "memcached" / self.name

    def _env(self) -> dict[str, str]:
        return dict(
            os.environ,
            MEMCACHED_NAME=self.name,
            MEMCACHED_PORTS=",".join(map(str, self.ports)),
            MEMCACHED_MEMORY=str(self.memory_mb),
        )

    def start(self) -> str:
        """Start the group (or only its servers that are not running); return its URL."""
        out = subprocess.run(
            [str(SCRIPTS / "start.sh"), *self.args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"memcached start failed: {out.stderr}{out.stdout}")
        self.url = out.stdout.strip().splitlines()[-1]
        return self.url

    def stop_command(self) -> tuple[list[str], dict[str, str]]:
        """The command (and environment) that stops this group."""
        return [str(SCRIPTS / "stop.sh")], dict(self._env(), MEMCACHED_WIPE="1")

    def stop(self) -> None:
        command, env = self.stop_command()
        subprocess.run(command, env=env, check=True, timeout=60)

    def pid(self, node: int) -> int:
        return int((self.dir / f"{self.ports[node]}.pid").read_text())

    def signal(self, sig: int, node: int) -> None:
        os.kill(self.pid(node), sig)

    def kill9(self, node: int) -> None:
        """kill -9 one server and wait until it is gone."""
        pid = self.pid(node)
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)


@pytest.fixture(name="private_memcached")
def private_memcached_fixture() -> Iterator[type[PrivateMemcached]]:
    """A factory: ``private_memcached(*memcached_args, count=3)``, stopped after the test."""
    started: list[PrivateMemcached] = []

    def make(*args: str, count: int = 3, memory_mb: int = 64) -> PrivateMemcached:
        server = PrivateMemcached(*args, count=count, memory_mb=memory_mb)
        started.append(server)
        watchers.append(stop_when_gone(*server.stop_command()))
        server.start()
        return server

    watchers: list[subprocess.Popen[bytes]] = []
    yield make  # type: ignore[misc]
    for server in started:
        for node in range(len(server.ports)):
            with contextlib.suppress(OSError, ValueError):
                server.signal(signal.SIGCONT, node)  # un-pause a server a test left stopped
        server.stop()
    for watcher in watchers:
        dismiss(watcher)


def memcached_entries(tier: object) -> dict[bytes, tuple[bytes, float | None]]:
    """Every key of ``tier``'s namespace on every server: ``key -> (value, seconds to live)``
    (``None``: no expiry), listed by each server's LRU crawler and read from that server."""
    import time
    from urllib.parse import unquote

    from dcstore.cache.memcached_client import crawled
    from dcstore.cache.memcached_tier import MemcachedTier

    assert isinstance(tier, MemcachedTier)
    servers = tier._memcached().server_clients()
    out: dict[bytes, tuple[bytes, float | None]] = {}
    for host, port in tier.hosts:
        client = servers[f"{host}:{port}"]
        # expiry times are of the server's clock, which can drift from ours on a long-lived
        # server (77 s behind was seen here): seconds to live are counted from its "now"
        now = int(client.stats()[b"time"]) + time.time() % 1
        for line in crawled(host, port, 5.0).splitlines():  # a busy crawler retried
            if not line.startswith(b"key="):
                continue
            fields = dict(f.split(b"=", 1) for f in line.split(b" ") if b"=" in f)
            key = unquote(fields[b"key"].decode())
            if not key.startswith(f"{tier.namespace}:"):
                continue
            value = client.get(key)
            if value is not None:
                exp = int(fields[b"exp"])
                out[key.encode()] = (value, None if exp < 0 else exp - now)
    return out
