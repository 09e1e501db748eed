"""Test helpers for Cassandra: the shared node's URL and private clusters of our own.

* ``cassandra_url`` (session fixture): ``DCSTORE_TEST_CASSANDRA_URL`` (e.g.
  ``cassandra://127.0.0.1:9042/dcstore_test``; keyspace ``dcstore_test`` when the URL
  names none), always with a keyspace; tests add a root prefix of their own after it.
  Skips when unset, fails instead when ``DCSTORE_REQUIRE_SERVERS=1``.
* ``cassandra_hosts``: the same URL without keyspace (``cassandra://host:port``).
* :class:`PrivateNode`: a node of a private cluster, started and stopped through
  ``servers/cassandra/start.sh`` / ``stop.sh`` on its own loopback address
  (127.0.0.2, 127.0.0.3, ...), so fault tests never disturb the shared node.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverenv import server_url

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "servers" / "cassandra"
TEST_KEYSPACE = "dcstore_test"


@pytest.fixture(scope="session")
def cassandra_hosts() -> str:
    """The shared node's URL without keyspace or options, e.g. ``cassandra://127.0.0.1:9042``."""
    url = server_url("cassandra")
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


@pytest.fixture(scope="session")
def cassandra_url(cassandra_hosts: str) -> str:
    """The shared node's URL with its keyspace, e.g. ``cassandra://127.0.0.1:9042/dcstore_test``."""
    url = server_url("cassandra").split("?", 1)[0].rstrip("/")
    return url if url != cassandra_hosts else f"{cassandra_hosts}/{TEST_KEYSPACE}"


class PrivateNode:
    """One node of a private cluster; its data survives stop/start until ``wipe``."""

    def __init__(self, name: str, address: str, seeds: str, cluster: str, **env: str) -> None:
        self.name, self.address, self.seeds, self.cluster = name, address, seeds, cluster
        self.env = env
        self.dir = REPO / ".servers" / "cassandra" / name

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CASSANDRA_NODE": self.name,
            "CASSANDRA_LISTEN": self.address,
            "CASSANDRA_SEEDS": self.seeds,
            "CASSANDRA_CLUSTER": self.cluster,
            "CASSANDRA_HEAP": os.environ.get("DCSTORE_TEST_CASSANDRA_PAIR_HEAP", "768m"),
            "CASSANDRA_MEMTABLE": "128MiB",
            **self.env,
            **extra,
        }

    def _run(self, script: str, **extra: str) -> None:
        done = subprocess.run(
            [str(SCRIPTS / script)], env=self._env(**extra), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{script} {self.name} failed: {done.stderr.strip()[-2000:]}")

    def start(self, fresh: bool = False) -> subprocess.Popen[str]:
        """Start in the background; ``wait`` for it."""
        env = self._env(CASSANDRA_FRESH="1" if fresh else "0")
        return subprocess.Popen(
            [str(SCRIPTS / "start.sh")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self, kill: bool = False, wipe: bool = False) -> None:
        self._run(
            "stop.sh", CASSANDRA_KILL="1" if kill else "0", CASSANDRA_WIPE="1" if wipe else "0"
        )

    def rss_bytes(self) -> int:
        pid = (self.dir / "cassandra.pid").read_text().strip()
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def wait_started(procs: list[subprocess.Popen[str]]) -> None:
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            errors.append(err.strip()[-2000:])
    if errors:
        raise RuntimeError("private Cassandra node failed to start:\n" + "\n".join(errors))


def wait_ring(addresses: list[str], timeout: float = 120.0) -> None:
    """Wait until every node sees every other one as a live peer."""
    from cassandra.cluster import Cluster

    deadline = time.monotonic() + timeout
    for address in addresses:
        others = set(addresses) - {address}
        cluster = Cluster([address], protocol_version=4)
        try:
            session = cluster.connect()
            while True:
                rows = session.execute("SELECT peer FROM system.peers")
                if others <= {str(row.peer) for row in rows}:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{address} does not see {others} after {timeout} s")
                time.sleep(0.5)
        finally:
            cluster.shutdown()


@pytest.fixture(scope="module")
def cassandra_pair(cassandra_hosts: str) -> Iterator[list[PrivateNode]]:
    """A private two-node cluster on 127.0.0.2 and 127.0.0.3 (same ports as the shared node)."""
    # Both are seeds, so they can start in parallel (a non-seed refuses to start when no
    # seed answers its first gossip round yet).
    seeds = "127.0.0.2,127.0.0.3"
    nodes = [
        PrivateNode("pair-a", "127.0.0.2", seeds, "dcstore-pair"),
        PrivateNode("pair-b", "127.0.0.3", seeds, "dcstore-pair"),
    ]
    try:
        wait_started([n.start(fresh=True) for n in nodes])
        wait_ring(["127.0.0.2", "127.0.0.3"])
        yield nodes
    finally:
        for node in nodes:
            node.stop(kill=True, wipe=True)  # its data is thrown away anyway
