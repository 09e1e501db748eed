"""HDFS fault tests on a private MiniDFS (3 DataNodes, replication 3).

* A DataNode stopped while threads read: every read still returns the right bytes.
* The NameNode stopped: a clear BackendUnavailableError after the configured retries;
  the same store reads again once the NameNode is back.
* A writer process killed in the middle of a put: the previous object stays readable and
  no partial object is visible.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hdfs_server import PrivateMiniDfs, hdfs_url, private_minidfs3  # noqa: F401 - fixtures

from dcstore.backends.registry import open_backend
from dcstore.errors import BackendUnavailableError
from dcstore.store import open_store

MiB = 1 << 20


def _objects(count: int, size: int) -> dict[str, bytes]:
    return {f"o{i}": random.Random(i).randbytes(size + i) for i in range(count)}


def test_datanode_stopped_during_reads(private_minidfs3: PrivateMiniDfs) -> None:  # noqa: F811
    cluster = private_minidfs3
    store = open_store(f"{cluster.url}/dn-fault", retries=4, block_size=MiB)
    objects = _objects(6, 4 * MiB)  # 4 blocks each, every block on all 3 DataNodes
    for key, data in objects.items():
        store.put(key, data)

    stop = threading.Event()
    reads: list[int] = []
    failures: list[str] = []

    def reader() -> None:
        done = 0
        while not stop.is_set():
            for key, data in objects.items():
                try:
                    if store.get(key) != data:
                        failures.append(f"{key}: wrong bytes")
                except Exception as exc:
                    failures.append(f"{key}: {exc!r}")
                done += 1
        reads.append(done)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        stopped = cluster.control("stop-datanode 0")
        assert "stopped datanode" in stopped
        # Keep reading past the point where the NameNode still lists the dead DataNode.
        time.sleep(8)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        cluster.control("restart-datanodes")
    assert not failures, failures[:5]
    assert sum(reads) > 3 * len(objects)
    # A fresh reader after the stop (locations may still name the dead node) works too.
    fresh = open_backend(f"{cluster.url}/dn-fault")
    assert all(fresh.get(k) == v for k, v in objects.items())


def test_namenode_stopped_then_back(private_minidfs3: PrivateMiniDfs) -> None:  # noqa: F811
    cluster = private_minidfs3
    store = open_store(f"{cluster.url}/nn-fault", retries=3, failover_attempts=1)
    store.put("k", b"before the outage")
    cluster.control("stop-namenode")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            store.get("k")
        elapsed = time.monotonic() - started
        message = str(info.value)
        assert "gave up after 3 attempts" in message
        assert f"127.0.0.1:{cluster.port}" in message and "'k'" in message
        assert elapsed < 30, f"took {elapsed:.1f}s to give up"
        with pytest.raises(BackendUnavailableError):
            store.put("k", b"during the outage")
    finally:
        cluster.control("restart-namenode")
    # The same store (and its driver connection) resumes once the NameNode is back.
    assert store.get("k") == b"before the outage"
    store.put("k", b"after the outage")
    assert store.get("k") == b"after the outage"


_WRITER = textwrap.dedent(
    """
    import sys
    from dcstore.backends.registry import open_backend
    backend = open_backend(sys.argv[1], block_size=1 << 20)
    data = bytes(range(256)) * (int(sys.argv[2]) // 256)
    print("writing", flush=True)
    backend.put("victim", data)
    print("done", flush=True)
    """
)


def test_killed_writer_leaves_previous_object(private_minidfs3: PrivateMiniDfs) -> None:  # noqa: F811
    cluster = private_minidfs3
    base = f"{cluster.url}/killed-put"
    backend = open_backend(base)
    old = b"the previous object " * 1000
    meta = backend.put("victim", old)
    fs = backend._fs()  # the raw driver client, to watch the writer's temporary file
    directory = backend._path("victim").rsplit("/", 1)[0]

    def temp_files() -> list[str]:
        names = [s.path.rsplit("/", 1)[-1] for s in fs.list_status(directory)]
        return [n for n in names if n.startswith(".dcstore-tmp-")]

    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, base, str(96 * MiB)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 60
        while not temp_files() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)  # some blocks are written
        writer.kill()
    finally:
        writer.kill()
        writer.wait()
    assert writer.stdout.read() == "", "the put finished before the kill"
    assert temp_files(), "the killed put left no temporary file: it was not mid-write"

    assert backend.get("victim") == old
    assert backend.head("victim") == meta
    assert [m.key for m in backend.list_objects()] == ["victim"]
    # The key stays writable (the dead writer's lease is on its temporary file only).
    backend.put("victim", b"next")
    assert backend.get("victim") == b"next"
