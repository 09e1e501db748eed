"""The streaming contract's pieces beyond the conformance suite: retries resume at the
failed range, encrypted streams of unknown length keep the format's checks, the CLI and
``copy_object`` stream one pinned version."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from dcstore.backends.base import Backend, ObjectMeta, ObjectWriter, Wrapper
from dcstore.backends.local import LocalBackend
from dcstore.backends.memory import MemoryBackend
from dcstore.backends.objectio import ChunkedWriter, ObjectReader
from dcstore.crypto import EncryptedBackend, FileKeySource, Keyring, write_key_file
from dcstore.crypto.segments import ObjectCipher
from dcstore.crypto.writer import EncryptingWriter
from dcstore.errors import BackendUnavailableError, IntegrityError, VersionChangedError
from dcstore.ops import copy_object, read_chunks
from dcstore.retry import RetryingBackend, RetryPolicy
from dcstore.testing.instrumented import InstrumentedBackend

MiB = 1 << 20


class FailingEveryThirdRange(Wrapper):
    """``inner`` whose every third ``get_range`` fails transiently (a unit-test fake)."""

    def __init__(self, inner: Backend):
        self.inner, self.calls = inner, 0

    url = property(lambda self: self.inner.url)

    def get(self, key, *, version=None):  # type: ignore[no-untyped-def]
        return self.inner.get(key, version=version)

    def get_range(self, key, start, end, *, version=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls % 3 == 0:
            raise BackendUnavailableError("injected: connection reset")
        return self.inner.get_range(key, start, end, version=version)

    def put(self, key, data):  # type: ignore[no-untyped-def]
        return self.inner.put(key, data)

    def head(self, key, *, version=None):  # type: ignore[no-untyped-def]
        return self.inner.head(key, version=version)

    def list_objects(self, prefix=""):  # type: ignore[no-untyped-def]
        return self.inner.list_objects(prefix)

    def delete(self, key):  # type: ignore[no-untyped-def]
        self.inner.delete(key)


class TrackingReaders(FailingEveryThirdRange):
    """Also keeps every reader it opens."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.readers: list[ObjectReader] = []

    def open_read(self, key, *, version=None):  # type: ignore[no-untyped-def]
        self.readers.append(super().open_read(key, version=version))
        return self.readers[-1]


def test_a_failed_range_is_retried_alone(tmp_path: Path) -> None:
    counted = InstrumentedBackend(LocalBackend(tmp_path / "s"))
    failing = TrackingReaders(counted)
    store = RetryingBackend(failing, RetryPolicy(base_delay=0.001))
    data = os.urandom(80 * MiB + 3)
    counted.put("big", data)
    with store.open_read("big") as reader:
        assert reader.read() == data
    # Every range was read once: the failures retried their own range, not the object,
    # each from a reader of the same version opened anew; every one of them is closed.
    assert counted.bytes_read == len(data)
    assert len(failing.readers) == 1 + failing.calls // 3
    assert {r.version for r in failing.readers} == {reader.version}
    assert all(r.closed for r in failing.readers)


class ListingFailsOnce(FailingEveryThirdRange):
    """``inner`` whose first listing fails at its first page, as a dropped connection."""

    failed = False

    def list_objects(self, prefix=""):  # type: ignore[no-untyped-def]
        if not self.failed:  # a generator: runs at the first next(), as every backend's
            self.failed = True
            raise BackendUnavailableError("connection reset")
        yield from self.inner.list_objects(prefix)


@pytest.mark.parametrize("objects", [0, 2])
def test_the_start_of_a_listing_is_retried(objects: int) -> None:
    """The retry wrapped iter() of a lazy generator, which asks the store nothing: ls,
    cp -r, rm -r, gc and sweep failed at the first dropped connection."""
    inner = MemoryBackend(f"list-retry-{os.getpid()}-{objects}")
    for i in range(objects):
        inner.put(f"k{i}", b"1")
    store = RetryingBackend(ListingFailsOnce(inner), RetryPolicy(base_delay=0.001))
    assert [m.key for m in store.list_objects()] == [f"k{i}" for i in range(objects)]


def test_a_stream_through_retries_and_encryption_looks_its_version_up_once() -> None:
    """``read_chunks`` reads every range of an encrypted stream through one inner reader:
    one lookup of the version, not one per range (on HDFS each is a NameNode round trip
    plus an open)."""
    origin = InstrumentedBackend(MemoryBackend(f"stream-once-{os.getpid()}"))
    store = RetryingBackend(EncryptedBackend(origin, Keyring.generate(), segment_size=64 * 1024))
    data = os.urandom(5 * MiB + 7)
    meta = store.put("k", data)
    origin.heads = 0
    assert b"".join(bytes(c) for c in read_chunks(store, meta, chunk=MiB)) == data
    assert origin.heads == 1 and len(origin.ranges) >= 6


@pytest.fixture
def encrypted(tmp_path: Path) -> EncryptedBackend:
    key_file = tmp_path / "kek.json"
    write_key_file(key_file, Keyring.generate("stream-kek"))
    return EncryptedBackend(
        LocalBackend(tmp_path / "enc"), FileKeySource(key_file), segment_size=64 * 1024
    )


@pytest.mark.parametrize("size", [0, 64 * 1024, 3 * 64 * 1024, 3 * 64 * 1024 + 5])
def test_an_encrypted_stream_keeps_the_formats_checks(
    encrypted: EncryptedBackend, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    with encrypted.open_write("k") as writer:
        for i in range(0, size, 1000):
            writer.write(data[i : i + 1000])
    assert encrypted.get("k") == data
    stored = tmp_path / "enc" / "k"
    blob = stored.read_bytes()
    segments = max(1, -(-size // (64 * 1024)))
    header = len(blob) - size - 16 * segments
    # The final segment dropped (the others are not marked final), or one byte cut.
    for cut in (blob[: header + (segments - 1) * (64 * 1024 + 16)], blob[:-1]):
        stored.write_bytes(cut)
        with pytest.raises(IntegrityError):
            encrypted.get("k")


def test_copy_object_streams_one_version(tmp_path: Path) -> None:
    src, dst = LocalBackend(tmp_path / "a"), InstrumentedBackend(LocalBackend(tmp_path / "b"))
    data = os.urandom(20 * MiB + 1)
    src.put("k", data)
    seen: list[int] = []
    meta = copy_object(src, dst, "k", "copy", on_bytes=seen.append)
    assert dst.get("copy") == data and meta.size == len(data)
    assert sum(seen) == len(data) and max(seen) <= 8 * MiB


def test_local_sweep_removes_a_killed_writers_file(tmp_path: Path) -> None:
    from dcstore.testing.streaming import run_child

    store = LocalBackend(tmp_path / "s")
    store.put("d/k", b"old")
    done = run_child(store, "d/k", 3 * MiB, "kill")
    assert done.returncode == -9
    leftovers = [p for p in (tmp_path / "s" / "d").iterdir() if p.name != "k"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".dcstore-tmp-")
    assert leftovers[0].stat().st_size == 3 * MiB
    assert store.sweep() == 0  # a day by default: it may still be a live writer's
    assert store.sweep(older_than=0) == 1
    assert sorted(p.name for p in (tmp_path / "s" / "d").iterdir()) == ["k"]
    assert store.get("d/k") == b"old"


def test_local_sweep_leaves_a_live_writer_alone_whatever_its_age(tmp_path: Path) -> None:
    """A writer pausing longer than older_than (sweep --older-than 0 during a slow
    torch.save) lost its file: close() then failed with "no such object"."""
    store = LocalBackend(tmp_path / "s")
    store.put("k", b"old")
    writer = store.open_write("k")
    writer.write(b"new " * 1000)
    (tmp,) = (p for p in (tmp_path / "s").iterdir() if p.name != "k")
    os.utime(tmp, (0, 0))  # untouched since 1970
    assert store.sweep(older_than=0) == 0
    writer.write(b"more")
    writer.close()
    assert store.get("k") == b"new " * 1000 + b"more"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["k"]


def test_puts_racing_a_sweep_of_everything_never_fail(tmp_path: Path) -> None:
    """Review: a sweep between a writer's creation of its file and its lock removed the
    file or held the lock (a bare BlockingIOError, a leaked fd)."""
    store = LocalBackend(tmp_path / "s")
    stop = threading.Event()

    def sweep() -> None:
        while not stop.is_set():
            store.sweep(older_than=0)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        for i in range(600):
            store.put("k", b"v%d" % i)
    finally:
        stop.set()
        sweeper.join()
    assert store.get("k") == b"v599"
    assert os.listdir(tmp_path / "s") == ["k"]


def test_a_filesystem_without_locks_still_takes_writes(tmp_path: Path, monkeypatch) -> None:
    """NFS without lockd says ENOLCK: every put failed, leaking its fd and file."""
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    store = LocalBackend(tmp_path / "s")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    store.put("k", b"v")
    assert store.get("k") == b"v" and store.sweep(older_than=0) == 0


def test_read_chunks_maps_local_files_and_stays_on_one_version(tmp_path: Path) -> None:
    store = RetryingBackend(LocalBackend(tmp_path / "s"))
    data = os.urandom(20 * MiB + 1)
    meta = store.put("k", data)
    chunks = list(read_chunks(store, meta))
    assert all(isinstance(c, memoryview) and c.readonly for c in chunks)  # the page cache
    assert b"".join(chunks) == data and max(len(c) for c in chunks) == 8 * MiB
    chunks = read_chunks(store, meta)
    first = bytes(next(chunks))
    store.put("k", b"new")  # replaced mid-stream: the next window says so
    with pytest.raises(VersionChangedError):
        next(chunks)
    assert first == data[: 8 * MiB]
    kek = Keyring.generate()
    encrypted = EncryptedBackend(LocalBackend(tmp_path / "e"), kek)
    meta = encrypted.put("k", data)
    assert b"".join(bytes(c) for c in read_chunks(encrypted, meta)) == data  # decrypted bytes


class RecordingChunks(ChunkedWriter):
    """Records each chunk as the store would see it when handed over."""

    def __init__(self, chunk_size: int):
        super().__init__("test", chunk_size)
        self.chunks: list[tuple[bytes, bool, object]] = []

    def _write_chunk(self, view: memoryview, last: bool) -> None:
        self.chunks.append((bytes(view), last, view.obj))

    def _finish(self) -> ObjectMeta:
        return ObjectMeta("k", sum(len(c) for c, _, _ in self.chunks), "v")

    def _abort(self) -> None:
        pass


@pytest.mark.parametrize("announced", [False, True])
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_chunked_writer_chunks_any_writes_and_copies_only_what_it_must(
    kind: type, announced: bool
) -> None:
    rng = random.Random(5)
    for _ in range(200):
        size = rng.choice([1, 7, 64])
        data = rng.randbytes(rng.randrange(0, 5 * size + 3))
        w = RecordingChunks(size)
        if announced:
            w.expect_size(len(data))
        pos = 0
        while pos < len(data):
            n = rng.choice([1, size, 2 * size, size - 1 or 1, rng.randrange(1, 3 * size + 2)])
            piece = kind(data[pos : pos + n])
            w.write(piece)
            if kind is bytearray:
                piece[:] = b"\0" * len(piece)  # the caller reuses its buffer at once
            pos += n
        w.close()
        chunks = [c for c, _, _ in w.chunks]
        assert b"".join(chunks) == data
        assert all(len(c) == size for c in chunks[:-1]) and len(chunks[-1]) <= size
        assert [last for _, last, _ in w.chunks] == [False] * (len(chunks) - 1) + [True]
    # a write of exactly a chunk of immutable bytes is held without a copy
    w, piece = RecordingChunks(4), b"abcd"
    w.write(piece)
    w.write(b"efgh")
    w.close()
    assert w.chunks[0][2] is piece and [c for c, _, _ in w.chunks] == [b"abcd", b"efgh"]


def test_an_announced_size_lets_whole_chunks_of_a_reused_buffer_through_uncopied() -> None:
    """With the total known (``put_stream``), a chunk the caller's buffer holds exactly is
    not the last unless it ends the stream: it goes to the store from that buffer, not
    through a copy; only the final chunk is held back. A different total commits nothing."""
    buffer = bytearray(4)
    w = RecordingChunks(4)
    w.expect_size(12)
    for piece in (b"abcd", b"efgh", b"ijkl"):
        buffer[:] = piece
        w.write(buffer)
    w.close()
    assert [(c, last) for c, last, _ in w.chunks] == [
        (b"abcd", False), (b"efgh", False), (b"ijkl", True)
    ]  # fmt: skip
    assert [obj is buffer for _, _, obj in w.chunks] == [True, True, False]
    for written in (b"abcdefgh", b"abcdefghijklm"):
        w = RecordingChunks(4)
        w.expect_size(12)
        w.write(written)
        with pytest.raises(IntegrityError, match="announced"):
            w.close()
        assert w.meta is None and w.closed


def test_put_stream_of_a_reused_buffer_round_trips_encrypted(encrypted: EncryptedBackend) -> None:
    """The encrypted writer told the size marks exactly the final segment as last, also
    when the object is a whole number of segments (the edge the hold-back existed for)."""
    segment = 64 * 1024
    for size in (segment, 3 * segment, 3 * segment + 5):
        data = os.urandom(size)
        buffer = bytearray(2 * segment)

        def chunks(data: bytes = data, buffer: bytearray = buffer):  # type: ignore[no-untyped-def]
            for pos in range(0, len(data), len(buffer)):
                piece = data[pos : pos + len(buffer)]
                buffer[: len(piece)] = piece
                yield memoryview(buffer)[: len(piece)]

        encrypted.put_stream("k", chunks(), size)
        assert encrypted.get("k") == data
        assert encrypted.get_range("k", size - 3, size) == data[-3:]


class SlowRecordingWriter(ObjectWriter):
    """Records each write after a pause (a slow network); fails the ``fail_at``-th."""

    def __init__(self, fail_at: int | None = None):
        super().__init__("slow")
        self.parts: list[bytes] = []
        self.fail_at, self.running, self.overlapped, self.aborted = fail_at, 0, 0, False
        self.threads: set[str] = set()

    def _write(self, view: memoryview) -> None:
        self.threads.add(threading.current_thread().name)
        self.running += 1
        self.overlapped = max(self.overlapped, self.running)
        time.sleep(0.01)
        self.running -= 1
        if len(self.parts) == self.fail_at:
            raise BackendUnavailableError("injected: connection reset")
        self.parts.append(bytes(view))

    def _commit(self) -> ObjectMeta:
        return ObjectMeta("k", sum(map(len, self.parts)), "v1")

    def _abort(self) -> None:
        self.aborted = True


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dcstore-write-behind")]


def test_the_encrypting_writer_writes_behind_in_order_and_stops_cleanly() -> None:
    """Segments go to the inner writer from a background thread, one at a time and in
    order (the object decrypts); an inner write's failure surfaces on the next write or
    on close, aborts the inner writer, and no thread outlives the writer."""
    keyring = Keyring.generate("wb")
    header, dek = keyring.new_header(64 * 1024)
    data = os.urandom(10 * 64 * 1024 + 7)
    inner = SlowRecordingWriter()
    with EncryptingWriter("k", ObjectCipher(header, dek, "k", "k"), inner) as writer:
        for i in range(0, len(data), 50_000):
            writer.write(data[i : i + 50_000])
    assert inner.overlapped == 1 and not _writer_threads()
    assert any(name.startswith("dcstore-write-behind") for name in inner.threads)
    store = EncryptedBackend(MemoryBackend(), keyring)
    store.inner.put("k", b"".join(inner.parts))
    assert store.get("k") == data  # every segment, in order, authenticated
    for fail_at in (2, 9):  # a write in the middle; the last one in flight at close
        inner = SlowRecordingWriter(fail_at=fail_at)
        writer = EncryptingWriter("k", ObjectCipher(header, dek, "k", "k"), inner)
        with pytest.raises(BackendUnavailableError, match="injected"), writer:
            writer.write(data)
        assert inner.aborted and writer.meta is None and not _writer_threads()
