"""Free helpers over any backend (dcstore.ops) on the real local and memory backends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

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


def test_read_ahead_keeps_order_and_finishes_the_read_in_flight_when_stopped() -> None:
    """One read runs ahead of the caller; stopping early waits for it, so the reader
    the reads come from is never closed under a read (and no thread is left behind)."""
    data = bytes(range(256)) * 40
    pos = 0
    started: list[int] = []
    finished: list[int] = []
    second_started = threading.Event()

    def read(n: int) -> bytes:
        nonlocal pos
        started.append(pos)
        if len(started) == 2:
            second_started.set()
            time.sleep(0.2)  # still reading when the caller stops
        piece, pos = data[pos : pos + n], pos + n
        finished.append(len(piece))
        return piece

    chunks = _read_ahead(read, 1000)
    assert next(chunks) == data[:1000]
    assert second_started.wait(5)
    chunks.close()
    assert finished == [1000, 1000]  # the read in flight completed before close returned
    assert not [t for t in threading.enumerate() if t.name.startswith("dcstore-read-ahead")]
    pos = 0
    assert b"".join(_read_ahead(read, 1000)) == data


def test_read_ahead_raises_the_reads_error_to_the_caller() -> None:
    calls = 0

    def read(n: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise VersionChangedError("replaced meanwhile")
        return b"x" * n

    chunks = _read_ahead(read, 4)
    assert next(chunks) == b"xxxx"
    with pytest.raises(VersionChangedError, match="replaced meanwhile"):
        next(chunks)
