"""Free helpers over any backend (dcstore.ops) on the real local and memory backends."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dcstore import ops
from dcstore.backends.registry import open_backend
from dcstore.errors import VersionChangedError
from dcstore.ops import _read_ahead, copy_object, copy_prefix, exists, get_many


def test_exists_and_copies(tmp_path: Path) -> None:
    src = open_backend(f"file://{tmp_path / 'src'}")
    dst = open_backend("memory://ops-copies")
    for i in range(5):
        src.put(f"d/{i}", bytes([i]) * 100)
    src.put("other", b"x")
    assert exists(src, "d/0") and not exists(src, "d") and not exists(src, "nope")
    copied = copy_prefix(src, dst, "d/", workers=3)
    assert sorted(m.key for m in copied) == [f"d/{i}" for i in range(5)]
    assert [m.key for m in dst.list_objects()] == [f"d/{i}" for i in range(5)]
    assert copy_object(src, dst, "other", "renamed").size == 1 and dst.get("renamed") == b"x"


def test_copy_prefix_streams_few_large_objects_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large objects stream at most LARGE_STREAMS at a time (memory stays bounded
    whatever ``workers`` is) while small ones are copied beside them; every object
    arrives, in listing order."""
    src = open_backend(f"file://{tmp_path / 'src'}")
    dst = open_backend(f"file://{tmp_path / 'dst'}")
    big = ops.COPY_CHUNK_BYTES + 1
    for i in range(5):
        src.put(f"big/{i}", bytes([i]) * big)
        src.put(f"small/{i}", bytes([i]) * 10)
    active, most, small_while_large = [0], [0], []
    lock = threading.Lock()
    real = ops.read_chunks

    def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.05)  # long enough for the others to start
            yield from real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    real_put = dst.put

    def put(key: str, data: Any) -> Any:
        small_while_large.append(active[0])
        return real_put(key, data)

    monkeypatch.setattr(ops, "read_chunks", counted)
    monkeypatch.setattr(dst, "put", put)
    copied = copy_prefix(src, dst, workers=8)
    assert [m.key for m in copied] == [m.key for m in src.list_objects()]
    assert all(dst.get(m.key) == src.get(m.key) for m in copied)
    assert most[0] == ops.LARGE_STREAMS
    assert any(small_while_large), "small objects waited for the large ones"

    # One worker: everything in turn, nothing left out.
    for m in copied:
        dst.delete(m.key)
    most[0] = 0
    assert len(copy_prefix(src, dst, workers=1)) == 10 and most[0] == 1


def test_get_many_keeps_order_and_closes_without_waiting(tmp_path: Path) -> None:
    store = open_backend(f"file://{tmp_path}")
    keys = [f"k{i:02d}" for i in range(20)]
    for key in keys:
        store.put(key, key.encode())
    assert list(get_many(store, keys, workers=4)) == [k.encode() for k in keys]

    # Closing from inside one of its own fetches, as the garbage collector may do with an
    # abandoned generator, must neither block nor fail.
    box: list = []
    suspended, closed = threading.Event(), threading.Event()

    class ClosingStore:  # get_many only calls get()
        def get(self, key: str) -> bytes:
            if key == "k01":
                suspended.wait(5)
                box[0].close()
                closed.set()
            return store.get(key)

    gen = get_many(ClosingStore(), keys, workers=1)  # type: ignore[arg-type]
    box.append(gen)
    assert next(gen) == b"k00"
    suspended.set()
    assert closed.wait(5), "closing get_many from its own fetch blocked"


def test_read_ahead_keeps_order_runs_reads_concurrently_and_finishes_them_when_stopped() -> None:
    """Two reads run at once, two more queued behind them (results still in order);
    stopping early cancels what has not started and waits for what has, so no thread is
    left behind writing into anything the caller has let go of."""
    data = bytes(range(256)) * 40
    spans = [(a, min(len(data), a + 1000)) for a in range(0, len(data), 1000)]
    started: list[int] = []
    finished: list[int] = []
    both_running = threading.Barrier(2, timeout=5)
    release, reading_2000 = threading.Event(), threading.Event()

    def read(span: tuple[int, int]) -> bytes:
        started.append(span[0])
        if span[0] in (0, 1000):
            both_running.wait()  # the first two reads overlap, or this times out
        if span[0] == 2000:
            reading_2000.set()
            release.wait(5)  # still reading when the caller stops
            time.sleep(0.1)
        finished.append(span[0])
        return data[span[0] : span[1]]

    chunks = _read_ahead(read, spans)
    assert next(chunks) == data[:1000]
    assert next(chunks) == data[1000:2000]
    assert reading_2000.wait(5)
    release.set()
    chunks.close()
    assert 2000 in finished  # the read in flight completed before close returned
    assert len(started) <= 6  # never more than four reads ahead of the two taken
    assert not [t for t in threading.enumerate() if t.name.startswith("dcstore-read-ahead")]
    assert b"".join(_read_ahead(lambda s: data[s[0] : s[1]], spans)) == data


def test_read_ahead_raises_the_reads_error_to_the_caller() -> None:
    def read(span: tuple[int, int]) -> bytes:
        if span[0] == 4:
            raise VersionChangedError("replaced meanwhile")
        return b"x" * (span[1] - span[0])

    chunks = _read_ahead(read, [(0, 4), (4, 8), (8, 12)])
    assert next(chunks) == b"xxxx"
    with pytest.raises(VersionChangedError, match="replaced meanwhile"):
        next(chunks)


def test_an_interrupted_copy_prefix_writes_no_streamed_object(tmp_path: Path) -> None:
    """^C during `cp -r` used to leave the streamed copies running to their commit (48 s
    and a whole 1 GB object on MongoDB after "interrupted"), or a temp file behind."""
    src = open_backend(f"file://{tmp_path / 'src'}")
    dst = open_backend(f"file://{tmp_path / 'dst'}")
    for name in ("a", "b", "c"):
        src.put(name, bytes(5 * ops.COPY_CHUNK_BYTES))
    before = threading.active_count()
    interrupted = threading.Event()

    def on_bytes(_n: int) -> None:
        if not interrupted.is_set():
            interrupted.set()
            os.kill(os.getpid(), signal.SIGINT)  # ^C, while the main thread waits on them
        time.sleep(0.05)

    with pytest.raises(KeyboardInterrupt):
        copy_prefix(src, dst, workers=2, on_bytes=on_bytes)
    deadline = time.monotonic() + 10  # a thread the ^C caught starting is not joined
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before, threading.enumerate()
    assert [p.name for p in (tmp_path / "dst").rglob("*") if p.is_file()] == []
