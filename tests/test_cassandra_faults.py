"""Cassandra fault tests: a killed writer, and a replica stopped in the middle of reads.

The replica test runs a private two-node cluster (127.0.0.2 + 127.0.0.3, about
0.7 GB of resident memory per node with the 768 MiB heap it gets here) next to the
shared node, so it never disturbs other tests.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from cassandra_server import (  # noqa: F401 - fixtures
    PrivateNode,
    cassandra_hosts,
    cassandra_pair,
    cassandra_url,
)

from dcstore.backends.cassandra import CassandraBackend
from dcstore.backends.cassandra.schema import CHUNKS, UPLOADS, bucket_of
from dcstore.backends.registry import open_backend
from dcstore.testing.conformance import payload

MiB = 1 << 20

pytestmark = [pytest.mark.server("cassandra"), pytest.mark.slow]

WRITER = textwrap.dedent(
    """
    import sys
    from dcstore.backends.registry import open_backend
    backend = open_backend(sys.argv[1])
    data = bytes(range(256)) * (int(sys.argv[3]) // 256)
    backend.put(sys.argv[2], data)
    print("committed", flush=True)
    """
)


def _intents(backend: CassandraBackend, key: str) -> list[uuid.UUID]:
    conn = backend._connection()
    full = backend.settings.root + key
    rows = conn.session.execute(
        f"SELECT version FROM {backend.settings.keyspace}.{UPLOADS} WHERE bucket = %s AND key = %s",
        (bucket_of(full), full),
    )
    return [row[0] for row in rows]


def _chunks_of(backend: CassandraBackend, version: uuid.UUID, parts: int) -> int:
    conn = backend._connection()
    return sum(
        len(
            list(
                conn.session.execute(
                    f"SELECT idx FROM {backend.settings.keyspace}.{CHUNKS}"
                    " WHERE version = %s AND part = %s",
                    (version, part),
                )
            )
        )
        for part in range(parts)
    )


def test_killed_writer_leaves_previous_version(cassandra_url: str) -> None:  # noqa: F811
    url = f"{cassandra_url}/kill{uuid.uuid4().hex[:8]}"
    backend = open_backend(url)
    assert isinstance(backend, CassandraBackend)
    old = payload(3 * MiB + 11, 1)
    before = backend.put("victim", old)
    size = 512 * MiB  # long enough to be killed in the middle
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, "victim", str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _intents(backend, "victim"):
            assert writer.poll() is None, "writer finished before it could be killed"
            assert time.monotonic() < deadline, "writer never started its put"
            time.sleep(0.02)
        (ghost,) = _intents(backend, "victim")
        while _chunks_of(backend, ghost, 1) < 4:  # some chunks are really written
            assert time.monotonic() < deadline
            time.sleep(0.02)
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert "committed" not in (writer.stdout.read() if writer.stdout else "")

    # The previous version is intact and current.
    assert backend.get("victim") == old
    assert backend.head("victim").version == before.version
    # The abandoned version is recorded, its chunks exist until the sweep reclaims them.
    assert _intents(backend, "victim") == [ghost]
    parts = size // MiB // backend.settings.part_chunks
    assert _chunks_of(backend, ghost, parts) > 0
    assert backend.sweep() == 0, "younger than abandon_after: left alone"
    assert backend.sweep(older_than=0) >= 1
    assert _chunks_of(backend, ghost, parts) == 0
    assert _intents(backend, "victim") == []
    assert backend.get("victim") == old
    backend.close()


def test_next_put_reclaims_abandoned_versions(cassandra_url: str) -> None:  # noqa: F811
    url = f"{cassandra_url}/next{uuid.uuid4().hex[:8]}"
    backend = open_backend(url, abandon_after=2, chunk_size=64 * 1024, part_chunks=2)
    assert isinstance(backend, CassandraBackend)
    backend.put("k", b"v1")
    conn = backend._connection()
    ghost = uuid.uuid4()
    full = backend.settings.root + "k"
    conn.session.execute(
        f"INSERT INTO {backend.settings.keyspace}.{UPLOADS} (bucket, key, version, started, size,"
        " chunk_size, part_chunks) VALUES (%s, %s, %s, toTimestamp(now()), %s, %s, %s)",
        (bucket_of(full), full, ghost, 3 * 64 * 1024, 64 * 1024, 2),
    )
    for idx in range(3):
        conn.session.execute(
            f"INSERT INTO {backend.settings.keyspace}.{CHUNKS} (version, part, idx, data)"
            " VALUES (%s, %s, %s, %s)",
            (ghost, idx // 2, idx, b"g" * 64 * 1024),
        )
    time.sleep(2.5)
    backend.put("k", b"v2")
    assert _chunks_of(backend, ghost, 2) == 0
    assert _intents(backend, "k") == []
    assert backend.get("k") == b"v2"
    backend.close()


def test_reads_survive_a_stopped_replica(cassandra_pair: list[PrivateNode]) -> None:  # noqa: F811
    _, b = cassandra_pair
    backend = open_backend(
        "cassandra://127.0.0.2,127.0.0.3:9042/dcstore_pair",
        replication_factor=2,
        read_consistency="ONE",
        request_timeout=10,
    )
    assert isinstance(backend, CassandraBackend)
    objects = {f"obj/{i}": payload(2 * MiB + i, i) for i in range(12)}
    for key, data in objects.items():
        backend.put(key, data)
    rss = {n.name: n.rss_bytes() for n in cassandra_pair}
    print(f"resident memory of the pair (bytes): {rss}")

    stop = threading.Event()
    failures: list[BaseException] = []
    reads = [0, 0]  # before, after the stop
    stopped = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            key = rng.choice(list(objects))
            try:
                if rng.random() < 0.5:
                    got, want = backend.get(key), objects[key]
                else:
                    got, want = (
                        backend.get_range(key, MiB - 3, 2 * MiB),
                        objects[key][MiB - 3 : 2 * MiB],
                    )
                assert got == want, f"wrong bytes for {key}"
                reads[stopped.is_set()] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        b.stop(kill=True)  # SIGKILL: connections drop mid-request
        stopped.set()
        time.sleep(8)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    print(f"reads before/after stopping {b.name}: {reads}")
    assert not failures, repr(failures[:3])
    assert reads[0] > 0 and reads[1] > 0
    backend.close()
