"""CassandraBackend.open_write against a real Cassandra: streaming of unknown size with
bounded memory, discarding (abort, exception, garbage collection), the intent's bound
and heartbeat, and writers killed with SIGKILL at random points.

Tests that sweep use a keyspace of their own (``dcstore_stream``): ``sweep`` covers a
whole keyspace, and ``older_than=0`` would reclaim other tests' writes in flight.
"""

from __future__ import annotations

import gc
import hashlib
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra_server import cassandra_hosts, cassandra_url  # noqa: F401 - fixtures

from dcstore.backends.cassandra import CassandraBackend
from dcstore.backends.cassandra.schema import CHUNKS, UPLOADS, bucket_of
from dcstore.backends.registry import open_backend
from dcstore.errors import BackendUnavailableError
from dcstore.testing.conformance import payload

KiB, MiB = 1 << 10, 1 << 20
CHUNK, PART_CHUNKS = 64 * KiB, 2
PART = CHUNK * PART_CHUNKS
SWEEP_KEYSPACE = "dcstore_stream"

pytestmark = pytest.mark.server("cassandra")


def _open(url: str, **kw: object) -> CassandraBackend:
    backend = open_backend(url, **{"chunk_size": CHUNK, "part_chunks": PART_CHUNKS, **kw})
    assert isinstance(backend, CassandraBackend)
    return backend


@pytest.fixture
def cass(cassandra_url: str) -> Iterator[CassandraBackend]:  # noqa: F811
    backend = _open(f"{cassandra_url}/s{uuid.uuid4().hex[:8]}")
    yield backend
    backend.close()


@pytest.fixture
def own_ks(cassandra_hosts: str) -> str:  # noqa: F811
    """A URL in a keyspace of its own, with a fresh root."""
    return f"{cassandra_hosts}/{SWEEP_KEYSPACE}/k{uuid.uuid4().hex[:8]}"


def _intents(backend: CassandraBackend, key: str) -> list[tuple[uuid.UUID, int]]:
    """(version, size) of the intent rows of ``key``."""
    full = backend.settings.root + key
    rows = backend._connection().session.execute(
        f"SELECT version, size FROM {backend.settings.keyspace}.{UPLOADS}"
        " WHERE bucket = %s AND key = %s",
        (bucket_of(full), full),
    )
    return [(row[0], row[1]) for row in rows]


def _chunk_rows(backend: CassandraBackend, version: uuid.UUID, parts: int) -> list[int]:
    """The partition of every chunk row of ``version`` in partitions ``0..parts-1``."""
    session = backend._connection().session
    found = []
    for part in range(parts):
        rows = session.execute(
            f"SELECT idx FROM {backend.settings.keyspace}.{CHUNKS}"
            " WHERE version = %s AND part = %s",
            (version, part),
        )
        found += [part for _ in rows]
    return found


def _read_back(backend: CassandraBackend, key: str) -> bytes:
    with backend.open_read(key) as reader:
        return reader.read()


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, PART, 3 * PART, 3 * PART + 5, 2 * MiB + 3],
)
def test_stream_round_trip(cass: CassandraBackend, size: int) -> None:
    data = payload(size, size)
    buf = bytearray(7777)  # one buffer, reused: the writer must copy what it is given
    with cass.open_write("obj") as writer:
        for at in range(0, size, len(buf)):
            piece = data[at : at + len(buf)]
            buf[: len(piece)] = piece
            assert writer.write(memoryview(buf)[: len(piece)]) == len(piece)
            buf[:] = b"\xee" * len(buf)
    meta = writer.meta
    assert meta is not None and meta.size == size and writer.tell() == size
    assert cass.head("obj") == meta
    assert cass.get("obj") == data
    assert hashlib.sha256(_read_back(cass, "obj")).digest() == hashlib.sha256(data).digest()
    assert _intents(cass, "obj") == []
    rows = _chunk_rows(cass, uuid.UUID(meta.version), size // PART + 3)
    assert len(rows) == -(-size // CHUNK), "one row per chunk, none beyond the object"


def test_stream_overwrites_and_drops_replaced_chunks(cass: CassandraBackend) -> None:
    first = cass.put("o", payload(5 * CHUNK, 1))
    with cass.open_write("o") as writer:
        writer.write(payload(3 * CHUNK + 9, 2))
    assert writer.meta is not None and writer.meta.version != first.version
    assert cass.get("o") == payload(3 * CHUNK + 9, 2)
    assert _chunk_rows(cass, uuid.UUID(first.version), 4) == []


def test_put_stream_goes_through_the_writer(cass: CassandraBackend) -> None:
    chunks = [payload(100 * KiB, i) for i in range(7)]
    meta = cass.put_stream("ps", iter(chunks), 700 * KiB)
    assert cass.get("ps") == b"".join(chunks) and meta.size == 700 * KiB


def test_put_of_known_size_sends_one_intent(cass: CassandraBackend) -> None:
    """``put`` records the exact size at once: no bound updates, no extra round trips."""
    conn = cass._connection()
    sent: list[str] = []
    real = conn.submit

    def spy(name: str, params: object) -> object:
        sent.append(name)
        return real(name, params)

    conn.submit = spy  # type: ignore[method-assign]
    try:
        cass.put("known", payload(5 * PART + 1, 3))
    finally:
        del conn.submit
    assert sent.count("intent_put") == 1
    assert sent.count("chunk_put") == -(-(5 * PART + 1) // CHUNK)
    assert cass.get("known") == payload(5 * PART + 1, 3)


# -- closing, aborting, discarding ---------------------------------------------------------


def test_write_after_close_and_double_close(cass: CassandraBackend) -> None:
    writer = cass.open_write("c")
    writer.write(b"abc")
    writer.close()
    writer.close()  # once
    writer.abort()  # no-op once closed
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")
    assert cass.get("c") == b"abc"


def _assert_discarded(
    cass: CassandraBackend, key: str, version: uuid.UUID, old: bytes | None
) -> None:
    assert _chunk_rows(cass, version, 20) == [], "the discarded write's chunks are dropped"
    assert _intents(cass, key) == []
    if old is None:
        assert [m.key for m in cass.list_objects()] == []
    else:
        assert cass.get(key) == old
        assert [m.key for m in cass.list_objects()] == [key]


@pytest.mark.parametrize("existing", [False, True])
def test_abort_discards(cass: CassandraBackend, existing: bool) -> None:
    old = payload(3 * CHUNK, 4) if existing else None
    if old is not None:
        cass.put("a", old)
    writer = cass.open_write("a")
    writer.write(payload(7 * CHUNK + 1, 5))
    version = writer._version
    assert _intents(cass, "a")
    writer.abort()
    writer.abort()  # idempotent
    assert writer.meta is None
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")
    _assert_discarded(cass, "a", version, old)


@pytest.mark.parametrize("existing", [False, True])
def test_exception_in_with_discards(cass: CassandraBackend, existing: bool) -> None:
    old = payload(2 * CHUNK + 3, 6) if existing else None
    if old is not None:
        cass.put("e", old)
    with pytest.raises(RuntimeError, match="boom"), cass.open_write("e") as writer:
        writer.write(payload(5 * PART, 7))
        version = writer._version
        raise RuntimeError("boom")
    _assert_discarded(cass, "e", version, old)


def test_garbage_collected_writer_discards(cass: CassandraBackend) -> None:
    old = payload(CHUNK, 8)
    cass.put("g", old)
    writer = cass.open_write("g")
    writer.write(payload(4 * PART + 2, 9))
    version = writer._version
    del writer
    gc.collect()
    _assert_discarded(cass, "g", version, old)


# -- the intent: an upper bound ahead of the chunks, and a heartbeat -------------------------


def test_intent_bound_covers_every_chunk_sent(cass: CassandraBackend) -> None:
    writer = cass.open_write("b")
    step = CHUNK // 3
    data = payload(12 * PART, 10)
    for at in range(0, len(data), step):
        writer.write(data[at : at + step])
        ((version, bound),) = _intents(cass, "b")
        sent = writer._chunks
        assert bound >= sent * CHUNK, "the acknowledged bound covers every chunk sent"
        assert bound <= (sent // PART_CHUNKS + 2) * PART, "at most a partition ahead"
    writer.close()
    assert version == writer._version
    assert cass.get("b") == data
    assert _intents(cass, "b") == []


def test_live_writer_heartbeats_through_sweeps(own_ks: str) -> None:
    """A writer slower than abandon_after in total keeps its intent fresh: sweeps that
    run all along (each reclaiming intents older than abandon_after) leave it alone."""
    writer_backend = _open(own_ks, abandon_after=2)
    sweeper = _open(own_ks, abandon_after=2)
    stop = threading.Event()
    swept: list[int] = []

    def sweep() -> None:
        while not stop.is_set():
            swept.append(sweeper.sweep())
            time.sleep(0.1)

    thread = threading.Thread(target=sweep)
    thread.start()
    data = payload(20 * CHUNK, 11)
    try:
        with writer_backend.open_write("slow") as writer:
            for at in range(0, len(data), CHUNK // 2):  # ~4 s > abandon_after
                writer.write(data[at : at + CHUNK // 2])
                time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert len(swept) > 10
    assert writer_backend.get("slow") == data
    writer_backend.close()
    sweeper.close()


@pytest.mark.parametrize("then", ["write", "close"])
def test_stalled_writer_gives_up(own_ks: str, then: str) -> None:
    """No heartbeat for abandon_after/2 (a caller that stalled): the write is refused
    and discarded, since a sweeper may already have reclaimed its chunks."""
    backend = _open(own_ks, abandon_after=1)
    backend.put("st", b"old")
    writer = backend.open_write("st")
    writer.write(payload(3 * PART, 12))
    version = writer._version
    time.sleep(0.7)
    with pytest.raises(BackendUnavailableError, match="no heartbeat"):
        if then == "write":
            writer.write(b"more")
        else:
            writer.close()
    assert writer.closed and writer.meta is None
    _assert_discarded(backend, "st", version, b"old")
    backend.close()


# -- killed writers --------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import pickle, random, sys
    backend = pickle.loads(open(sys.argv[1], "rb").read())
    rng = random.Random(int(sys.argv[3]))
    total = int(sys.argv[4])  # -1: endless
    writer = backend.open_write(sys.argv[2])
    print("version", writer._version, flush=True)
    written = 0
    while total < 0 or written < total:
        n = rng.randrange(1, 3 * 65536) if total < 0 else min(total - written, 40000)
        writer.write(rng.randbytes(n) if total < 0 else bytes([written % 251]) * n)
        written += n
    writer.close()
    print("committed", flush=True)
    """
)


def _child_data(total: int) -> bytes:
    out, written = bytearray(), 0
    while written < total:
        n = min(total - written, 40000)
        out += bytes([written % 251]) * n
        written += n
    return bytes(out)


@pytest.mark.slow
def test_writers_killed_at_random_points(own_ks: str, tmp_path: Path) -> None:
    """SIGKILL at random points (some endless streams, some finite ones killed around
    their commit): the object is the old one or the whole new one; the killed writer's
    chunks all lie within its intent's bound; sweep(older_than=0) reclaims chunks and
    intent; a second sweep finds nothing."""
    backend = _open(own_ks)
    pickled = tmp_path / "backend.pickle"
    pickled.write_bytes(pickle.dumps(backend))
    rng = random.Random(1234)
    finite = 24 * MiB
    uncommitted = 0
    for round_ in range(8):
        old = payload(CHUNK * 3 + round_, round_)
        backend.put("victim", old)
        total = -1 if round_ % 2 == 0 else finite
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(pickled), "victim", str(round_), str(total)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline().split()
            assert line[:1] == ["version"], line
            version = uuid.UUID(line[1])
            time.sleep(rng.uniform(0.0, 0.8))
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
        committed = "committed" in child.stdout.read()
        current = backend.head("victim")
        if current.version == str(version):
            assert backend.get("victim") == _child_data(finite)
            assert backend.sweep(older_than=0) == 0, "a committed write is not reclaimed"
        else:
            assert backend.get("victim") == old, "the old object is intact"
            uncommitted += 1
            ((intent, bound),) = _intents(backend, "victim")
            assert intent == version
            covered = -(-bound // PART)
            rows = _chunk_rows(backend, version, covered + 40)
            assert all(part < covered for part in rows), "every chunk within the intent"
            assert backend.sweep(older_than=0) == 1
            assert _chunk_rows(backend, version, covered + 40) == []
            assert not committed
        assert _intents(backend, "victim") == []
        assert backend.sweep(older_than=0) == 0, "nothing left for a second sweep"
        assert backend.get("victim") in (old, _child_data(finite))
    assert uncommitted >= 4, "the endless streams at least were killed mid-write"
    backend.delete("victim")
    backend.close()


# -- memory ----------------------------------------------------------------------------------

STREAMER = textwrap.dedent(
    """
    import hashlib, pickle, random, resource, sys

    def peak_rss():
        # VmHWM: this process image's peak. ru_maxrss would do, but Linux carries it
        # over fork+exec, so a child of a large pytest process starts at its parent's.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    backend = pickle.loads(open(sys.argv[1], "rb").read())
    total, piece = int(sys.argv[3]), 1 << 20
    rng = random.Random(7)
    backend.put(sys.argv[2] + ".warm", b"x")  # connected before the baseline
    base = peak_rss()
    digest = hashlib.sha256()
    with backend.open_write(sys.argv[2]) as writer:
        for _ in range(total // piece):
            data = rng.randbytes(piece)
            digest.update(data)
            writer.write(data)
    print(base, peak_rss(), digest.hexdigest(), writer.meta.size, flush=True)
    """
)


@pytest.mark.slow
def test_stream_memory_is_bounded(cassandra_url: str, tmp_path: Path) -> None:  # noqa: F811
    """256 MiB streamed with the default layout (1 MiB chunks, 16 in flight): the peak RSS
    grows by a small multiple of the window, not by the object; read back, same hash."""
    size = 256 * MiB
    backend = open_backend(f"{cassandra_url}/mem{uuid.uuid4().hex[:8]}")
    assert isinstance(backend, CassandraBackend)
    pickled = tmp_path / "backend.pickle"
    pickled.write_bytes(pickle.dumps(backend))
    done = subprocess.run(
        [sys.executable, "-c", STREAMER, str(pickled), "big", str(size)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    base, peak, digest, written = done.stdout.split()
    assert int(written) == size
    window = backend.settings.max_in_flight * backend.settings.chunk_size
    grown = int(peak) - int(base)
    assert grown < 4 * window, f"RSS grew by {grown >> 20} MiB streaming {size >> 20} MiB"
    assert int(peak) < size // 2
    got = hashlib.sha256()
    with backend.open_read("big") as reader:
        while block := reader.read(8 * MiB):
            got.update(block)
    assert got.hexdigest() == digest
    backend.delete("big")
    backend.delete("big.warm")
    backend.close()
