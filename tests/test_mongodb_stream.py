"""MongoBackend.open_write against a real MongoDB-wire server (FerretDB in CI): chunks
inserted as data arrives, committed by the files document; aborts, failures, killed
writers, long-lived streams and sweep, bounded memory."""

from __future__ import annotations

import base64
import gc
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import gridfs
import pymongo
import pytest
from bson import ObjectId
from ferretdb_server import mongodb_url  # noqa: F401 - fixture

import dcstore.backends.mongodb.backend as mongo_backend
from dcstore.backends.mongodb import MongoBackend
from dcstore.backends.mongodb.gc import WRITTEN
from dcstore.backends.registry import open_backend
from dcstore.errors import IntegrityError
from dcstore.testing.conformance import payload

pytestmark = pytest.mark.server("mongodb")

KiB, MiB = 1 << 10, 1 << 20
CS = 64 * KiB  # chunk size of these tests
BATCH_CHUNKS = 3  # chunks per insert_many here, so a few hundred KiB already insert


@pytest.fixture
def mongo(mongodb_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MongoBackend]:  # noqa: F811
    monkeypatch.setattr(mongo_backend, "BATCH_BYTES", BATCH_CHUNKS * CS)
    backend = open_backend(mongodb_url, bucket=f"st{uuid.uuid4().hex[:10]}", chunk_size=CS)
    assert isinstance(backend, MongoBackend)
    yield backend
    backend.close()


@pytest.fixture
def raw_db(mongo: MongoBackend) -> Iterator[Any]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://{mongo.hosts[0]}/", serverSelectionTimeoutMS=3000
    )
    yield client[mongo.database]
    client.close()


def chunk_docs(mongo: MongoBackend, raw_db: Any) -> list[dict[str, Any]]:
    return list(raw_db[f"{mongo.bucket}.chunks"].find({}, {"data": 0}))


def only_chunks_of(mongo: MongoBackend, raw_db: Any, version: str | None) -> bool:
    """True if every chunk in the bucket belongs to revision ``version`` (None: no chunk)."""
    ids = {doc["files_id"] for doc in chunk_docs(mongo, raw_db)}
    return ids <= ({ObjectId(version)} if version else set())


@pytest.mark.parametrize(
    "size", [0, 1, CS - 1, CS, 2 * CS, BATCH_CHUNKS * CS, 2 * BATCH_CHUNKS * CS, 7 * CS + 5]
)
def test_streams_any_size_in_any_pieces(mongo: MongoBackend, raw_db: Any, size: int) -> None:
    data = payload(size, size)
    piece = bytearray(10_007)  # one buffer the caller reuses: write() must copy
    with mongo.open_write("obj") as writer:
        for offset in range(0, size, len(piece)):
            n = min(len(piece), size - offset)
            piece[:n] = data[offset : offset + n]
            assert writer.write(memoryview(piece)[:n]) == n
            piece[:n] = b"\xff" * n
        assert writer.tell() == size
        assert list(mongo.list_objects()) == []  # nothing visible before close
    assert writer.meta is not None and writer.meta == mongo.head("obj")
    assert writer.meta.size == size
    assert mongo.get("obj") == data
    with mongo.open_read("obj") as reader:
        assert reader.read() == data
    # standard GridFS: ceil(size / chunk) chunks (none for an empty object), read by pymongo
    chunks = chunk_docs(mongo, raw_db)
    assert sorted(c["n"] for c in chunks) == list(range(-(-size // CS)))
    assert all(WRITTEN in c for c in chunks)
    bucket = gridfs.GridFSBucket(raw_db, mongo.bucket)
    assert bucket.open_download_stream_by_name("obj").read() == data


def test_one_big_write_and_put_share_the_layout(mongo: MongoBackend, raw_db: Any) -> None:
    data = payload(5 * CS + 1, 1)
    with mongo.open_write("w") as writer:
        writer.write(data)
    meta = mongo.put("p", data)
    chunks = chunk_docs(mongo, raw_db)
    by_file = {
        v: sorted(c["n"] for c in chunks if str(c["files_id"]) == v)
        for v in (writer.meta.version, meta.version)  # type: ignore[union-attr]
    }
    assert list(by_file.values()) == [list(range(6))] * 2
    assert mongo.get("w") == mongo.get("p") == data


def test_write_after_close_fails_and_changes_nothing(mongo: MongoBackend) -> None:
    writer = mongo.open_write("k")
    writer.write(b"abc")
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")
    writer.abort()  # a no-op once committed
    assert mongo.get("k") == b"abc"
    assert writer.meta == mongo.head("k")


def replace_then(mongo: MongoBackend, raw_db: Any, end: str) -> None:
    """Start replacing an object with several inserted batches, then ``end`` the write."""
    old = mongo.put("obj", b"old version")
    new = payload(4 * BATCH_CHUNKS * CS + 3, 2)
    if end == "exception":
        with (
            pytest.raises(RuntimeError, match="caller failed"),
            mongo.open_write("obj") as writer,
        ):
            writer.write(new)
            assert not only_chunks_of(mongo, raw_db, old.version)  # batches went out
            raise RuntimeError("caller failed")
    else:
        writer = mongo.open_write("obj")
        writer.write(new)
        assert not only_chunks_of(mongo, raw_db, old.version)
        if end == "abort":
            writer.abort()
            writer.abort()  # idempotent
        else:  # dropped without close: garbage collection discards it
            del writer
            gc.collect()
    assert mongo.get("obj") == b"old version"
    assert mongo.head("obj") == old
    assert list(mongo.list_objects()) == [old]
    assert only_chunks_of(mongo, raw_db, old.version)  # the new chunks were dropped
    assert mongo.sweep(older_than=0) == 0


@pytest.mark.parametrize("end", ["abort", "exception", "garbage"])
def test_discarded_write_keeps_old_object_and_drops_chunks(
    mongo: MongoBackend, raw_db: Any, end: str
) -> None:
    replace_then(mongo, raw_db, end)


def test_write_after_abort_fails(mongo: MongoBackend, raw_db: Any) -> None:
    writer = mongo.open_write("k")
    writer.write(b"x" * (BATCH_CHUNKS * CS + 1))
    writer.abort()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"y")
    assert writer.meta is None
    assert list(mongo.list_objects()) == []
    assert chunk_docs(mongo, raw_db) == []


def test_failed_insert_mid_stream_drops_chunks(
    mongo: MongoBackend, raw_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = mongo.put("obj", b"old")
    chunks = mongo._writable().chunks
    real_insert = chunks.insert_many
    calls: list[int] = []

    def failing_insert(docs: list[dict[str, Any]], **kw: Any) -> Any:
        calls.append(len(docs))
        if len(calls) == 3:
            raise pymongo.errors.AutoReconnect("injected: connection lost mid-stream")
        return real_insert(docs, **kw)

    monkeypatch.setattr(chunks, "insert_many", failing_insert)
    writer = mongo.open_write("obj")
    with pytest.raises(ConnectionError):
        for _ in range(20):
            writer.write(payload(CS, 3))
    monkeypatch.undo()
    assert writer.closed and writer.meta is None
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")
    assert mongo.get("obj") == b"old" and mongo.head("obj") == old
    assert only_chunks_of(mongo, raw_db, old.version)


def test_failed_commit_leaves_chunks_for_sweep(
    mongo: MongoBackend, raw_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed files insert may still have committed: the chunks stay, sweep decides."""
    files = mongo._writable().files

    def lost_reply(doc: dict[str, Any], **kw: Any) -> Any:
        raise pymongo.errors.AutoReconnect("injected: reply lost")

    monkeypatch.setattr(files, "insert_one", lost_reply)
    writer = mongo.open_write("obj")
    writer.write(payload(2 * CS, 4))
    with pytest.raises(ConnectionError):
        writer.close()
    monkeypatch.undo()
    assert writer.closed and writer.meta is None
    assert len(chunk_docs(mongo, raw_db)) == 2
    assert list(mongo.list_objects()) == []
    time.sleep(1.1)  # upload start times (ObjectId) have one-second resolution
    assert mongo.sweep(older_than=0) == 1
    assert chunk_docs(mongo, raw_db) == []


def test_long_stream_outlives_the_sweep_grace_period(
    mongo: MongoBackend, raw_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sweeps with a 1.5 s grace run throughout a ~3.5 s stream that inserts its first
    chunks at once and then trickles in bytes that never complete another chunk: the
    writer's refreshed stamp keeps it alive, although its files_id (and its chunks'
    insertion) date from before the grace period."""
    monkeypatch.setattr(mongo_backend, "TOUCH_S", 0.2)
    head = payload(4 * CS + 1, 5)
    trickle = payload(6000, 6)
    swept = []
    with mongo.open_write("long") as writer:
        writer.write(head)
        assert len(chunk_docs(mongo, raw_db)) == BATCH_CHUNKS
        started = time.monotonic()
        for i in range(0, len(trickle), 64):
            writer.write(trickle[i : i + 64])
            time.sleep(0.04)
            if i // 64 % 8 == 0:
                swept.append(mongo.sweep(older_than=1.5))
        assert time.monotonic() - started > 3
    assert swept and set(swept) == {0}
    assert mongo.get("long") == head + trickle
    assert mongo.sweep(older_than=0) == 0
    assert len(chunk_docs(mongo, raw_db)) == 5


def test_idle_writer_reclaimed_by_sweep_does_not_commit(
    mongo: MongoBackend, raw_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer idle for longer than a sweep's grace may lose its chunks: close() then
    refuses to commit a revision without them (the old object stays)."""
    monkeypatch.setattr(mongo_backend, "TOUCH_S", 0.2)
    old = mongo.put("obj", b"old")
    writer = mongo.open_write("obj")
    writer.write(payload(2 * BATCH_CHUNKS * CS, 6))
    time.sleep(2.2)
    assert mongo.sweep(older_than=1) == 1
    writer.write(b"tail")
    with pytest.raises(IntegrityError, match="reclaimed by sweep"):
        writer.close()
    assert mongo.get("obj") == b"old" and mongo.head("obj") == old
    assert only_chunks_of(mongo, raw_db, old.version)


# -- processes killed mid-write -------------------------------------------------------------

_KILLED_WRITER = """
import base64, pickle, sys
import dcstore.backends.mongodb.backend as mongo_backend
mongo_backend.BATCH_BYTES = 4 * 65536  # many inserts: many places to be killed at
backend = pickle.loads(base64.b64decode(sys.argv[1]))
total = int(sys.argv[2])
piece = bytes(range(256)) * 193  # 49408 bytes: not a divisor of the chunk size
with backend.open_write("obj") as writer:
    written = 0
    while written < total:
        n = min(len(piece), total - written)
        writer.write(piece[:n])
        written += n
        print(written, flush=True)
print("committed", flush=True)
"""


@pytest.mark.slow
def test_writers_killed_at_random_points(mongo: MongoBackend, raw_db: Any) -> None:
    old = mongo.put("obj", b"previous version")
    pickled = base64.b64encode(pickle.dumps(mongo)).decode()
    total = 48 * CS + 17
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    killed = 0
    for _ in range(5):
        kill_at = rng.randrange(total)  # bytes written when the kill is sent
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, pickled, str(total)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        deadline = time.monotonic() + 120
        committed = False
        for line in child.stdout:
            if line.strip() == "committed":
                committed = True
                break
            if int(line) >= kill_at:
                time.sleep(rng.random() * 0.05)  # somewhere inside the next write / insert
                break
            assert time.monotonic() < deadline, f"seed {seed}: writer stalled"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL, f"seed {seed}: writer failed"
        killed += not committed
        # A commit the writer sent just before it died may still be applied by the server
        # after the process is gone: let it land before comparing.
        time.sleep(0.5)
        # never a part: the old object, or (killed after its commit) the whole new one
        expected = (bytes(range(256)) * 193 * (total // 49408 + 1))[:total]
        data = mongo.get("obj")
        assert data in (b"previous version", expected), f"seed {seed}"
        if data == expected and mongo.head("obj") != old:
            old = mongo.head("obj")
        assert [m.key for m in mongo.list_objects()] == ["obj"], f"seed {seed}"
    assert killed >= 3, f"seed {seed}: too few writers were killed before their commit"
    leftovers = {c["files_id"] for c in chunk_docs(mongo, raw_db)} - {ObjectId(old.version)}
    assert leftovers, f"seed {seed}: the killed writers left no chunks"
    time.sleep(1.1)  # upload start times (ObjectId) have one-second resolution
    assert mongo.sweep(older_than=0) == len(leftovers), f"seed {seed}"
    assert mongo.sweep(older_than=0) == 0, f"seed {seed}"
    assert only_chunks_of(mongo, raw_db, old.version), f"seed {seed}"
    assert mongo.head("obj") == old


# -- bounded memory --------------------------------------------------------------------------

_BIG_WRITER = """
import base64, hashlib, pickle, resource, sys

def peak():
    # VmHWM: this process image's peak RSS. ru_maxrss (printed too) would do, but Linux
    # carries the forking parent's peak across exec: under pytest it starts at pytest's.
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

backend = pickle.loads(base64.b64decode(sys.argv[1]))
total = int(sys.argv[2])
base = peak()
piece = bytearray(1 << 20)
digest = hashlib.sha256()
with backend.open_write("big") as writer:
    for i in range(total // len(piece)):
        piece[:8] = i.to_bytes(8, "little")
        piece[-8:] = (i * 7919).to_bytes(8, "little")
        writer.write(piece)
        digest.update(piece)
wrote = peak()
back = hashlib.sha256()
with backend.open_read("big") as reader:
    while block := reader.read(3 << 20):
        back.update(block)
read = peak()
print(base[0], wrote[0], read[0], digest.hexdigest(), back.hexdigest(), writer.meta.size,
      base[1], wrote[1], read[1])
"""


@pytest.mark.slow
def test_streaming_256_mib_keeps_memory_bounded(mongodb_url: str) -> None:  # noqa: F811
    """Default 4 MiB chunks and 16 MiB batches: the writer holds about one batch."""
    total = 256 * MiB
    backend = open_backend(mongodb_url, bucket=f"big{uuid.uuid4().hex[:8]}")
    assert isinstance(backend, MongoBackend)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _BIG_WRITER,
                base64.b64encode(pickle.dumps(backend)).decode(),
                str(total),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout.split()
        base, wrote, read = (int(x) * KiB for x in out[:3])  # both in KiB on Linux
        print(
            f"peak RSS (VmHWM): {base / MiB:.0f} MiB at start, {wrote / MiB:.0f} after "
            f"writing, {read / MiB:.0f} after reading back {total / MiB:.0f} MiB; "
            f"ru_maxrss {' '.join(f'{int(x) / KiB:.0f}' for x in out[6:9])} MiB"
        )
        assert out[3] == out[4], "read back a different object"
        assert int(out[5]) == total
        # about one 16 MiB batch, its BSON message and a 4 MiB chunk over the interpreter
        assert wrote - base < 96 * MiB, (base, wrote)
        assert read - base < 96 * MiB, (base, read)
        assert wrote < total // 2
    finally:
        backend.close()
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_url)
        for collection in ("files", "chunks"):  # faster than deleting 64 big chunks
            client[backend.database][f"{backend.bucket}.{collection}"].drop()
        client.close()


class _CountingFinds:
    """A chunks collection that counts ``find`` calls (queries, not batches) and records
    the filters of ``find_one`` calls."""

    def __init__(self, inner: Any):
        self.inner, self.finds = inner, 0
        self.find_ones: list[dict[str, Any]] = []

    def find(self, *args: Any, **kwargs: Any) -> Any:
        self.finds += 1
        return self.inner.find(*args, **kwargs)

    def find_one(self, filter: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.find_ones.append(filter)
        return self.inner.find_one(filter, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _gridfs_object(backend: MongoBackend, key: str, data: bytes) -> Any:
    """``key`` written by pymongo's own GridFS (chunks with ObjectId ids): read by cursor."""
    conn = backend._connection()
    bucket = gridfs.GridFSBucket(conn.files.database, backend.bucket, chunk_size_bytes=256 * KiB)
    bucket.upload_from_stream(key, data)
    return backend.head(key)


def test_dcstore_chunks_are_read_by_id(mongodb_url: str) -> None:  # noqa: F811
    """A revision dcstore wrote streams by one ``_id`` point lookup per chunk, no
    ``(files_id, n)`` query (FerretDB scans and sorts the collection in memory for
    those: 24 GB for a 10 GiB object), from several threads at once; a revision
    replaced while being read raises VersionChangedError, never bytes of the new one."""
    from dcstore.errors import VersionChangedError
    from dcstore.ops import read_chunks

    backend = open_backend(mongodb_url, bucket=f"id{uuid.uuid4().hex[:8]}", chunk_size=256 * KiB)
    assert isinstance(backend, MongoBackend)
    data = random.randbytes(6 * MiB + 5)
    meta = backend.put("k", data)
    conn = backend._connection()
    conn.chunks = counting = _CountingFinds(conn.chunks)  # type: ignore[assignment]
    try:
        assert b"".join(bytes(c) for c in read_chunks(backend, meta, chunk=MiB)) == data
        assert counting.finds == 0
        ids = [f["_id"] for f in counting.find_ones]
        assert sorted(ids) == sorted(f"{meta.version}.{n}" for n in range(25))
        with backend.open_read("k", version=meta.version) as reader:
            assert reader.read_range(5 * MiB, 6 * MiB) == data[5 * MiB : 6 * MiB]
            assert reader.read_range(0, 300 * KiB) == data[: 300 * KiB]
            backend.put("k", b"new")
            with pytest.raises(VersionChangedError, match="replaced while being read"):
                reader.read_range(MiB, 2 * MiB)
        assert counting.finds == 0
    finally:
        backend.delete("k")
        backend.close()


def test_ferretdb_finds_by_id_through_the_index(mongodb_url: str) -> None:  # noqa: F811
    """servers/ferretdb builds FerretDB with its `_id` lookup fixed to use the `_id`
    index: the plan searches the index instead of scanning the collection."""
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_url)
    try:
        db = client.get_default_database()
        name = f"ix{uuid.uuid4().hex[:8]}"
        db[name].insert_many([{"_id": f"x.{n}", "n": n} for n in range(50)])
        plan = db.command("explain", {"find": name, "filter": {"_id": "x.7"}})
        if "ferretdbVersion" not in plan.get("serverInfo", {}):
            pytest.skip("not FerretDB: its query plans are the server's own")
        steps = " ".join(plan["queryPlanner"]["Plan"])
        assert "USING INDEX" in steps and "SCAN" not in steps, steps
        db[name].drop()
    finally:
        client.close()


def test_a_gridfs_stream_reads_its_chunks_through_one_cursor(mongodb_url: str) -> None:  # noqa: F811
    """For a revision another GridFS tool wrote, ``read_chunks`` (two threads, ranges
    taken out of order) asks one chunk query for the whole stream instead of one per
    chunk (FerretDB scans the collection for every such query); the bytes are the
    object's, and a read behind the cursor reopens it."""
    from dcstore.ops import read_chunks

    backend = open_backend(mongodb_url, bucket=f"cur{uuid.uuid4().hex[:8]}", chunk_size=256 * KiB)
    assert isinstance(backend, MongoBackend)
    data = random.randbytes(6 * MiB + 5)
    meta = _gridfs_object(backend, "k", data)
    conn = backend._connection()
    conn.chunks = counting = _CountingFinds(conn.chunks)  # type: ignore[assignment]
    try:
        assert b"".join(bytes(c) for c in read_chunks(backend, meta, chunk=MiB)) == data
        assert counting.finds == 1
        counting.finds = 0
        with backend.open_read("k", version=meta.version) as reader:
            assert reader.read_range(5 * MiB, 6 * MiB) == data[5 * MiB : 6 * MiB]
            assert reader.read_range(0, 300 * KiB) == data[: 300 * KiB]  # behind: reopened
            assert reader.read_range(300 * KiB, 600 * KiB) == data[300 * KiB : 600 * KiB]
        assert counting.finds == 2
    finally:
        backend.delete("k")
        backend.close()


def test_ranges_taken_out_of_order_share_one_cursor(mongodb_url: str) -> None:  # noqa: F811
    """(A GridFS revision.) Read-ahead threads take turns in any order and encrypted
    ranges do not start on chunk boundaries: a range read before the one behind it keeps
    the chunk they share, and two threads starting a stream together open one cursor at
    the lower range (each extra query is a collection scan on FerretDB: 15 s for 512 MiB)."""
    backend = open_backend(mongodb_url, bucket=f"ooo{uuid.uuid4().hex[:8]}", chunk_size=256 * KiB)
    assert isinstance(backend, MongoBackend)
    data = random.randbytes(3 * MiB)
    meta = _gridfs_object(backend, "k", data)
    conn = backend._connection()
    conn.chunks = counting = _CountingFinds(conn.chunks)  # type: ignore[assignment]
    step = 600 * KiB + 100  # never a multiple of the chunk size
    spans = [(a, min(meta.size, a + step)) for a in range(0, meta.size, step)]
    try:
        with backend.open_read("k", version=meta.version) as reader:
            got = {}
            for behind, ahead in ((0, 1), (2, 3), (4, 5)):
                first_behind = spans[behind][0] // (256 * KiB)
                reader._queue(first_behind, +1)  # as a thread waiting for its turn
                got[ahead] = reader.read_range(*spans[ahead])  # its turn came first
                reader._queue(first_behind, -1)
                got[behind] = reader.read_range(*spans[behind])
            assert b"".join(got[i] for i in range(len(spans))) == data
        assert counting.finds == 1

        counting.finds = 0
        with backend.open_read("k", version=meta.version) as reader:
            results: dict[int, bytes] = {}
            threads = [
                threading.Thread(
                    target=lambda i=i: results.__setitem__(i, reader.read_range(*spans[i]))
                )
                for i in (1, 0)
            ]
            with reader._lock:  # both wait for their turn; either may get it first
                for t in threads:
                    t.start()
                while sum(reader._waiting.values()) < 2:
                    time.sleep(0.01)
            for t in threads:
                t.join()
            assert results == {0: data[slice(*spans[0])], 1: data[slice(*spans[1])]}
        assert counting.finds == 1
    finally:
        backend.delete("k")
        backend.close()
