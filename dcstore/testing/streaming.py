"""Conformance cases of the streaming contract (``open_write``/``open_read``); mixed
into :class:`dcstore.testing.conformance.BackendConformance`.

``streaming_object_size`` (or the environment variable
``DCSTORE_CONFORMANCE_STREAM_BYTES``) sets the object streamed through a child process
whose peak memory must stay under ``STREAM_PEAK_RSS`` whatever the size; objects are
generated, never stored in the test.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import itertools
import json
import os
import pickle
import random
import subprocess
import sys
import threading

import pytest

from dcstore.backends.base import Backend
from dcstore.errors import NotFoundError, VersionChangedError
from dcstore.testing.stream_child import generated

MiB = 1 << 20
STREAM_PEAK_RSS = 256 * MiB
"""The issue's bound on a streaming process's peak RSS, whatever the object's size."""


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at random points, with empty pieces among them."""
    cuts = sorted({0, len(data), *(rng.randrange(len(data) + 1) for _ in range(6))})
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)]
    return [*pieces, b""]


def run_child(
    backend: Backend, key: str, size: int, mode: str
) -> subprocess.CompletedProcess[bytes]:
    """Run :mod:`dcstore.testing.stream_child` on a pickled ``backend`` (skips the test
    when the backend does not pickle)."""
    try:
        request = pickle.dumps((backend, key, size, mode))
    except (TypeError, pickle.PicklingError) as exc:
        pytest.skip(f"{backend!r} does not pickle ({exc}): no child process can write to it")
    return subprocess.run(
        [sys.executable, "-m", "dcstore.testing.stream_child"],
        input=request,
        capture_output=True,
        timeout=1800,
        check=False,
    )


class StreamingConformance:
    """``open_write``/``open_read`` on every store (see :mod:`dcstore.backends.objectio`)."""

    streaming_object_size: int = 96 * MiB + 5
    stores_across_processes: bool = True
    """False for a store private to its process (memory://): no child can write to it."""

    @pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 4 * MiB, 9 * MiB + 5])
    def test_open_write_round_trip(self, backend: Backend, ns: str, size: int) -> None:
        data = random.Random(size).randbytes(size)
        with backend.open_write(ns + "w") as writer:
            for piece in _pieces(data, random.Random(size + 1)):
                assert writer.write(piece) == len(piece)
            assert writer.tell() == size
        assert writer.meta is not None and writer.closed
        assert (writer.meta.key, writer.meta.size) == (ns + "w", size)
        assert backend.head(ns + "w") == writer.meta
        assert backend.get(ns + "w") == data
        with backend.open_read(ns + "w") as reader:
            assert (reader.size, reader.version) == (size, writer.meta.version)
            assert reader.read() == data
            assert reader.read(10) == b""

    def test_writer_is_invisible_until_closed(self, backend: Backend, ns: str) -> None:
        backend.put(ns + "old", b"old")
        with backend.open_write(ns + "old") as a, backend.open_write(ns + "new") as b:
            a.write(b"x" * (3 * MiB))
            b.write(b"y" * 1000)
            assert backend.get(ns + "old") == b"old"
            with pytest.raises(NotFoundError):
                backend.head(ns + "new")
            assert [m.key for m in backend.list_objects(ns)] == [ns + "old"]
        assert backend.get(ns + "old") == b"x" * (3 * MiB)
        assert backend.get(ns + "new") == b"y" * 1000

    @pytest.mark.parametrize("how", ["abort", "exception", "forgotten"])
    def test_discarded_writes_leave_the_old_object(
        self, backend: Backend, ns: str, how: str
    ) -> None:
        backend.put(ns + "k", b"old")

        def start() -> None:
            writer = backend.open_write(ns + "k")
            writer.write(b"partial" * 300_000)
            backend.open_write(ns + "fresh").write(b"never committed")
            if how == "abort":
                writer.abort()
                writer.abort()  # idempotent
                assert writer.closed and writer.meta is None
                with pytest.raises(ValueError, match="closed"):
                    writer.write(b"more")
            elif how == "exception":
                with contextlib.suppress(RuntimeError), writer:
                    raise RuntimeError("the producer failed")

        start()
        gc.collect()
        assert backend.get(ns + "k") == b"old"
        assert [m.key for m in backend.list_objects(ns)] == [ns + "k"]

    def test_write_after_close_fails(self, backend: Backend, ns: str) -> None:
        writer = backend.open_write(ns + "c")
        writer.write(b"abc")
        writer.close()
        writer.close()  # idempotent: commits once
        with pytest.raises(ValueError, match="closed"):
            writer.write(b"d")
        assert backend.get(ns + "c") == b"abc"

    def test_seeks_and_reads_match_a_model(self, backend: Backend, ns: str) -> None:
        size = 9 * MiB + 7
        data = random.Random(3).randbytes(size)
        backend.put(ns + "s", data)
        rng = random.Random(4)
        model = io.BytesIO(data)
        with backend.open_read(ns + "s") as reader:
            assert reader.seekable() and reader.readable()
            for _ in range(60):
                whence = rng.choice([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])
                offset = {
                    os.SEEK_SET: rng.randrange(size + 10),
                    os.SEEK_CUR: rng.randrange(-model.tell(), size - model.tell() + 10),
                    os.SEEK_END: -rng.randrange(size + 1),
                }[whence]
                assert reader.seek(offset, whence) == model.seek(offset, whence)
                n = rng.choice([0, 1, 4095, 70_000, MiB + 3, 9 * MiB])
                if rng.random() < 0.5:
                    assert reader.read(n) == model.read(n)
                else:
                    buf, want = bytearray(n), model.read(n)
                    assert reader.readinto(buf) == len(want)
                    assert bytes(buf[: len(want)]) == want
                assert reader.tell() == model.tell()
            with pytest.raises(ValueError):
                reader.seek(-1)
        with pytest.raises(ValueError, match="closed"):
            reader.read(1)

    def test_reader_is_pinned_to_its_version(self, backend: Backend, ns: str) -> None:
        size = 17 * MiB + 3
        old = random.Random(5).randbytes(size)
        backend.put(ns + "p", old)
        with backend.open_read(ns + "p") as reader:
            first = reader.read(10)
            backend.put(ns + "p", random.Random(6).randbytes(size))
            reader.seek(size - 10 * MiB)
            try:
                rest = reader.read()
            except VersionChangedError:
                return  # the store no longer has that version: refused, not mixed
            assert first + rest == old[:10] + old[size - 10 * MiB :]

    def test_concurrent_readers_of_an_object_being_replaced(
        self, backend: Backend, ns: str
    ) -> None:
        size, key = 3 * MiB + 11, ns + "r"
        versions = [bytes([v]) * size for v in range(1, 7)]
        backend.put(key, versions[0])
        errors: list[BaseException] = []

        def read_whole() -> None:
            try:
                with backend.open_read(key) as reader:
                    chunks = []
                    while piece := reader.read(MiB // 2 + 1):
                        chunks.append(piece)
                data = b"".join(chunks)
                assert data in versions, "a read mixed two versions"
            except VersionChangedError:
                pass  # refused, never mixed
            except BaseException as exc:
                errors.append(exc)

        def replace() -> None:
            for data in versions[1:]:
                with backend.open_write(key) as writer:
                    for i in range(0, size, MiB):
                        writer.write(data[i : i + MiB])

        threads = [threading.Thread(target=replace)]
        threads += [threading.Thread(target=read_whole) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert backend.get(key) == versions[-1]

    def test_writer_killed_mid_write(self, backend: Backend, ns: str) -> None:
        if backend.sweep(older_than=3600) is None:
            pytest.skip(f"{backend!r} never leaves abandoned writes behind")
        old = b"the old object"
        backend.put(ns + "k", old)
        for written in [0, random.Random().randrange(1, 3 * MiB), 7 * MiB + 3]:
            done = run_child(backend, ns + "k", written, "kill")
            assert done.returncode == -9, done.stderr.decode()[-2000:]
            assert backend.get(ns + "k") == old
            assert [m.key for m in backend.list_objects(ns)] == [ns + "k"]
        # What the killed writers left (a store that batches its first writes may have
        # left nothing) goes in one sweep: a second finds nothing.
        backend.sweep(older_than=0)
        assert backend.sweep(older_than=0) == 0
        assert backend.get(ns + "k") == old

    @pytest.mark.slow
    def test_streams_in_bounded_memory(self, backend: Backend, ns: str) -> None:
        if not self.stores_across_processes:
            pytest.skip(f"{backend!r} is private to its process")
        size = int(os.environ.get("DCSTORE_CONFORMANCE_STREAM_BYTES", self.streaming_object_size))
        done = run_child(backend, ns + "big", size, "stream")
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        report = json.loads(done.stdout.decode().strip().splitlines()[-1])
        expected = hashlib.sha256()
        for piece in generated(size):
            expected.update(piece)
        assert report["wrote"] == report["read"] == expected.hexdigest()
        assert backend.head(ns + "big").size == size
        assert report["peak_rss"] < STREAM_PEAK_RSS, (
            f"streaming {size} bytes peaked at {report['peak_rss'] / MiB:.0f} MiB"
        )
        backend.delete(ns + "big")
