"""Test helpers for HDFS: the shared MiniDFS URL and private MiniDFS clusters.

* ``hdfs_url`` (session fixture): ``DCSTORE_TEST_HDFS_URL``; skips when unset, fails
  instead when ``DCSTORE_REQUIRE_SERVERS=1``.
* :class:`PrivateMiniDfs`: a cluster of the test's own on free ports, started and stopped
  through ``servers/hdfs/start.sh`` / ``stop.sh``, with the launcher's control port to stop
  and restart DataNodes and the NameNode without disturbing the shared cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverenv import server_url

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "servers" / "hdfs"


def join(url: str, path: str) -> str:
    """``url`` with ``path`` appended to its path, keeping its query (client options)."""
    base, sep, query = url.partition("?")
    return f"{base.rstrip('/')}/{path.strip('/')}{sep}{query}"


@pytest.fixture(scope="session")
def hdfs_url() -> str:
    """URL of the shared cluster, e.g. ``hdfs://127.0.0.1:9000`` (a query such as
    ``?hadoop_conf=dfs.client.use.datanode.hostname%3Dtrue`` for compose is kept)."""
    return server_url("hdfs")


@pytest.fixture
def hdfs_base(hdfs_url: str) -> str:
    """A fresh, unique base directory on the shared cluster for one test."""
    return join(hdfs_url, f"dcstore-test/{uuid.uuid4().hex[:12]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateMiniDfs:
    """A MiniDFS cluster of the test's own, with its state in ``state_dir``."""

    def __init__(self, state_dir: Path, datanodes: int = 1, replication: int | None = None):
        self.port, self.http_port, self.control_port = free_port(), free_port(), free_port()
        self.state_dir = state_dir
        self.datanodes = datanodes
        self.replication = replication or min(datanodes, 3)
        self.url = f"hdfs://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.http_port}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HDFS_PORT": str(self.port),
            "HDFS_HTTP_PORT": str(self.http_port),
            "HDFS_CONTROL_PORT": str(self.control_port),
            "HDFS_DATANODES": str(self.datanodes),
            "HDFS_REPLICATION": str(self.replication),
            "HDFS_STATE": str(self.state_dir),
        }

    def _run(self, script: str) -> str:
        done = subprocess.run(
            [str(SCRIPTS / script)], env=self._env(), capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def start(self) -> None:
        self._run("start.sh")

    def stop(self) -> None:
        self._run("stop.sh")

    def control(self, command: str, timeout: float = 120.0) -> str:
        """Send one control command (``stop-datanode 0``, ``restart-namenode``...)."""
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=timeout) as sock:
            sock.sendall(command.encode() + b"\n")
            reply = sock.makefile("r", encoding="utf-8").readline().strip()
        if not reply.startswith("OK"):
            raise RuntimeError(f"control {command!r}: {reply or 'no reply'}")
        return reply[3:]


@pytest.fixture(scope="module")
def private_minidfs3(
    hdfs_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateMiniDfs]:
    """A module-private cluster with 3 DataNodes and replication 3 (only where a shared
    cluster is configured, so the launcher is built and a plain ``pytest`` never runs Maven)."""
    cluster = PrivateMiniDfs(tmp_path_factory.mktemp("minidfs3"), datanodes=3, replication=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
