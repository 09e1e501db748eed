"""Test helpers for MongoDB-wire servers: the shared server's URL and private FerretDB instances.

* ``mongodb_url`` (session fixture): ``DCSTORE_TEST_MONGODB_URL`` through
  :func:`serverenv.server_url` (skips when unset, fails under ``DCSTORE_REQUIRE_SERVERS=1``).
* :class:`PrivateFerretDB`: an instance of our own on a free port, started and
  stopped through ``servers/ferretdb/start.sh`` / ``stop.sh``, for tests that stop,
  kill or restart the server without disturbing the shared one.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverenv import server_url

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "servers" / "ferretdb"


@pytest.fixture(scope="session")
def mongodb_url() -> str:
    """URL of the shared MongoDB-wire server, e.g. ``mongodb://127.0.0.1:27017/dcstore``."""
    return server_url("mongodb")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateFerretDB:
    """A FerretDB of the test's own, with its data in ``data_dir`` (kept across restarts)."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.data_dir = data_dir
        self.url = f"mongodb://127.0.0.1:{self.port}/dcstore"

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "FERRETDB_PORT": str(self.port),
            "FERRETDB_DATA": str(self.data_dir),
            **extra,
        }

    def _run(self, script: str, **extra: str) -> None:
        done = subprocess.run(
            [str(SCRIPTS / script)], env=self._env(**extra), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> None:
        self._run("start.sh")

    def stop(self, signal: str = "TERM") -> None:
        """Stop the server; ``signal="KILL"`` simulates a crash."""
        self._run("stop.sh", FERRETDB_SIGNAL=signal)


@pytest.fixture(scope="module")
def private_ferretdb(
    mongodb_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateFerretDB]:
    """A module-private FerretDB (only where a shared server is configured, so the
    binary is already built and a plain ``pytest`` never starts a Go build)."""
    server = PrivateFerretDB(tmp_path_factory.mktemp("ferretdb-private"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
