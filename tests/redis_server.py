"""Redis for the cache tests: the shared servers, and private instances for fault tests.

The shared standalone server and 3-node cluster come from ``servers/redis/start.sh``
(URLs in ``DCSTORE_TEST_REDIS_URL`` / ``DCSTORE_TEST_REDIS_CLUSTER_URL``). Fault
tests start :class:`PrivateRedis` instances on free ports through the same script,
so killing or pausing them never disturbs the shared ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from reaper import dismiss, stop_when_gone
from serverenv import server_url

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "servers" / "redis"


def free_port() -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def shared_redis_url() -> str:
    return server_url("redis")


def shared_cluster_url() -> str:
    return server_url("redis_cluster")


class PrivateRedis:
    """A standalone redis-server (or 3-node cluster) of the test's own, started by our script."""

    def __init__(
        self, *args: str, cluster: bool = False, password: str | None = None, tls: bool = False
    ):
        self.args = list(args)
        self.tls = tls
        self.cluster = cluster
        self.password = password
        self.name = f"private-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        if cluster:  # three consecutive free pairs
            while not all(self._free(self.port + i) for i in range(3)):
                self.port = free_port()
        self.url = ""

    @staticmethod
    def _free(port: int) -> bool:
        for p in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    return False
        return True

    @property
    def mode(self) -> str:
        return "cluster" if self.cluster else "standalone"

    @property
    def dir(self) -> Path:
        return REPO / ".servers" / "redis" / self.name

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, REDIS_NAME=self.name)
        env["REDIS_CLUSTER_PORT" if self.cluster else "REDIS_PORT"] = str(self.port)
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        if self.tls:
            env["REDIS_TLS"] = "1"
        return env

    def start(self) -> str:
        out = subprocess.run(
            [str(SCRIPTS / "start.sh"), self.mode, *self.args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis start failed: {out.stderr}{out.stdout}")
        self.url = out.stdout.strip().splitlines()[-1]
        return self.url

    def stop_command(self, wipe: bool = True) -> tuple[list[str], dict[str, str]]:
        """The command (and environment) that stops this server."""
        return [str(SCRIPTS / "stop.sh"), self.mode], dict(
            self._env(), REDIS_WIPE="1" if wipe else "0"
        )

    def stop(self, wipe: bool = True) -> None:
        command, env = self.stop_command(wipe)
        subprocess.run(command, env=env, check=True, timeout=60)

    def pids(self) -> list[int]:
        dirs = [self.dir / str(self.port + i) for i in range(3)] if self.cluster else [self.dir]
        return [int((d / "redis.pid").read_text()) for d in dirs if (d / "redis.pid").exists()]

    def signal(self, sig: int, node: int | None = None) -> None:
        """Send ``sig`` to every node (or only to cluster node ``node``)."""
        pids = self.pids()
        for pid in pids if node is None else [pids[node]]:
            os.kill(pid, sig)

    def kill9(self, node: int | None = None) -> None:
        """kill -9 the server (or one cluster node) and wait until it is gone."""
        pids = self.pids()
        targets = pids if node is None else [pids[node]]
        for pid in targets:
            os.kill(pid, signal.SIGKILL)
        for pid in targets:
            _wait_gone(pid)

    def cli(self, *args: str, node: int = 0) -> str:
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port + node), *args]
        env = dict(os.environ, REDISCLI_AUTH=self.password) if self.password else None
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30).stdout


def _wait_gone(pid: int) -> None:
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # a zombie of ours? reap it (daemonized servers are not our children, usually)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


@pytest.fixture(name="private_redis")
def private_redis_fixture() -> Iterator[type[PrivateRedis]]:
    """A factory: ``private_redis(*redis_args, cluster=False)``, stopped after the test."""
    started: list[PrivateRedis] = []

    def make(
        *args: str, cluster: bool = False, password: str | None = None, tls: bool = False
    ) -> PrivateRedis:
        server = PrivateRedis(*args, cluster=cluster, password=password, tls=tls)
        started.append(server)
        watchers.append(stop_when_gone(*server.stop_command()))
        server.start()
        return server

    watchers: list[subprocess.Popen[bytes]] = []
    yield make  # type: ignore[misc]
    for server in started:
        with contextlib.suppress(OSError):
            server.signal(signal.SIGCONT)  # un-pause a node a test left stopped
        server.stop()
    for watcher in watchers:
        dismiss(watcher)
