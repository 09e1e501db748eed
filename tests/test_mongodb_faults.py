"""Faults against real FerretDB servers: restarts and crashes mid-reads, writers killed mid-upload.

Restart tests use a private FerretDB (its own port and data directory) so the shared
server is never disturbed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid

import pymongo
import pytest
from ferretdb_server import PrivateFerretDB, mongodb_url, private_ferretdb  # noqa: F401

from dcstore.backends.mongodb import MongoBackend
from dcstore.backends.registry import open_backend
from dcstore.errors import BackendUnavailableError
from dcstore.store import open_store
from dcstore.testing.conformance import payload

pytestmark = pytest.mark.server("mongodb")

MiB = 1 << 20
FAST_FAIL = "serverSelectionTimeoutMS=500&connectTimeoutMS=500&socketTimeoutMS=60000"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["TERM", "KILL"])
def test_server_down_mid_reads_then_back(private_ferretdb: PrivateFerretDB, how: str) -> None:  # noqa: F811
    url = f"{private_ferretdb.url}?bucket=restart{how}&chunk_size={MiB}&{FAST_FAIL}"
    store = open_store(url, retries=3)
    objects = {f"shard-{i:03d}.tar": payload(3 * MiB + i, i) for i in range(6)}
    versions = {key: store.put(key, data).version for key, data in objects.items()}

    stop = threading.Event()
    outcomes: list[tuple[float, str]] = []

    def reader() -> None:
        keys = sorted(objects)
        i = 0
        while not stop.is_set():
            key = keys[i % len(keys)]
            i += 1
            try:
                ok = store.get(key) == objects[key]
                outcomes.append((time.monotonic(), "ok" if ok else "WRONG BYTES"))
            except BackendUnavailableError:
                outcomes.append((time.monotonic(), "unavailable"))
            except Exception as exc:
                outcomes.append((time.monotonic(), f"unexpected {type(exc).__name__}: {exc}"))

    def wait_for_ok(after: float) -> None:
        deadline = time.monotonic() + 120  # shared CI machines can be very slow
        while not any(kind == "ok" and t > after for t, kind in outcomes):
            assert time.monotonic() < deadline, f"no successful read after {after}: {outcomes}"
            time.sleep(0.05)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_for_ok(0.0)
        private_ferretdb.stop(how)
        down_at = time.monotonic()
        # While down: a clear, quick BackendUnavailableError after the configured retries.
        with pytest.raises(BackendUnavailableError) as info:
            store.get("shard-000.tar")
        assert "gave up after 3 attempts" in str(info.value)
        assert "shard-000.tar" in str(info.value) and private_ferretdb.url.split("/")[2] in str(
            info.value
        )
        assert time.monotonic() - down_at < 15
        time.sleep(0.5)
        private_ferretdb.start()
        up_at = time.monotonic()
        wait_for_ok(up_at)
    finally:
        stop.set()
        thread.join()

    kinds = {kind for _, kind in outcomes}
    assert kinds <= {"ok", "unavailable"}, kinds
    assert any(kind == "ok" and t < down_at for t, kind in outcomes)
    assert any(kind == "unavailable" for _, kind in outcomes)
    assert any(kind == "ok" and t > up_at for t, kind in outcomes)
    # Nothing lost: every acknowledged put is there, same bytes, same version.
    for key, data in objects.items():
        assert store.get(key) == data
        assert store.head(key).version == versions[key]
    assert [m.key for m in store.list_objects("")] == sorted(objects)
    store.close()


_WRITER = """
import sys
from dcstore.backends.registry import open_backend
backend = open_backend(sys.argv[1], bucket=sys.argv[2], chunk_size=256 * 1024)
backend.put("obj", bytes(160 * 1024 * 1024))
print("committed", flush=True)
"""


@pytest.mark.slow
def test_writer_killed_mid_upload(mongodb_url: str) -> None:  # noqa: F811
    bucket = f"kill{uuid.uuid4().hex[:8]}"
    backend = open_backend(mongodb_url, bucket=bucket)
    assert isinstance(backend, MongoBackend)
    old = backend.put("obj", b"previous version")
    client: pymongo.MongoClient = pymongo.MongoClient(mongodb_url, serverSelectionTimeoutMS=3000)
    chunks = client[backend.database][f"{bucket}.chunks"]
    files = client[backend.database][f"{bucket}.files"]
    old_id = files.find_one({"filename": "obj"})["_id"]

    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, mongodb_url, bucket], stdout=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while chunks.count_documents({"files_id": {"$ne": old_id}}) < 8:
        assert writer.poll() is None, "writer finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    assert files.count_documents({"filename": "obj"}) == 1, "the killed upload must not commit"
    assert backend.get("obj") == b"previous version"
    assert backend.head("obj") == old
    assert chunks.count_documents({"files_id": {"$ne": old_id}}) >= 8  # orphans, invisible
    assert backend.sweep() == 0  # too young: could be an upload in flight
    time.sleep(1.1)
    assert backend.sweep(older_than=0) == 1
    assert chunks.count_documents({"files_id": {"$ne": old_id}}) == 0
    assert backend.get("obj") == b"previous version"
    client.close()
    backend.close()
