"""The Backend conformance suite: one test class for every backend and wrapper stack.

Subclass :class:`BackendConformance` in a test module and override the
``backend`` fixture to yield a fresh backend (the suite writes only under
unique prefixes, so a shared namespace also works)::

    class TestLocal(BackendConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            yield LocalBackend(tmp_path)

Class attributes tune the cost for remote servers: ``large_object_size``
(a round trip above 64 MiB) and ``state_machine_examples``; a store that cannot
tell when an object was written sets ``reports_modified = False``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import pickle
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.errors import (
    ConfigError,
    IntegrityError,
    InvalidKeyError,
    InvalidRangeError,
    NotFoundError,
    VersionChangedError,
)
from dcstore.testing.streaming import StreamingConformance

MiB = 1 << 20
CLOCK_SKEW_S = 300.0
"""How far a store's clock may be from the test's (``ObjectMeta.modified``)."""

REJECTED_KEYS = [
    "",
    "/abs",
    "/",
    "a/",
    "a//b",
    "../escape",
    "a/../../escape",
    "a/./b",
    ".",
    "..",
    "nul\x00byte",
    "tab\there",
    "back\\slash",
    ".dcstore-tmp-x",
    "a/.dcstore/b",
    "x" * 1025,
]

AWKWARD_KEYS = [
    "données/ünïcødé-名前.bin",
    "dots.in.the.name.tar",
    "...three-dots",
    "a b c/with spaces",
    "percent%2Fencoded%00",
    "plus+equals=amp&q?hash#",
    "/".join(f"d{i}" for i in range(24)) + "/leaf",
    "emoji/🚀.tar",
    "UPPER/lower/MiXeD",
    ".hidden-but-fine",
    "x" * 200,
]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (no repeating pattern that hides offsets)."""
    return random.Random(seed).randbytes(size)


class BackendConformance(StreamingConformance):
    """The contract every :class:`Backend` keeps; see :mod:`dcstore.backends.base`."""

    large_object_size: int = 64 * MiB + 1
    state_machine_examples: int = 25
    concurrency: int = 8
    reports_modified: bool = True
    """``head`` and ``list_objects`` fill ``ObjectMeta.modified`` (False: may be None)."""

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        raise NotImplementedError("override the `backend` fixture")

    @pytest.fixture
    def ns(self) -> str:
        """A unique prefix per test, so tests never see each other's objects."""
        return f"conf-{uuid.uuid4().hex[:10]}/"

    # -- round trips -----------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1, 1000, 3 * MiB + 17])
    def test_round_trip(self, backend: Backend, ns: str, size: int) -> None:
        data = payload(size, size)
        meta = backend.put(ns + "obj", data)
        assert isinstance(meta, ObjectMeta)
        assert (meta.key, meta.size) == (ns + "obj", size)
        assert backend.get(ns + "obj") == data
        head = backend.head(ns + "obj")
        assert (head.size, head.version) == (size, meta.version)

    def test_put_accepts_buffers(self, backend: Backend, ns: str) -> None:
        data = payload(5000, 3)
        backend.put(ns + "ba", bytearray(data))
        backend.put(ns + "mv", memoryview(data)[100:])
        assert backend.get(ns + "ba") == data
        assert backend.get(ns + "mv") == data[100:]

    def test_put_refuses_what_is_not_bytes(self, backend: Backend, ns: str) -> None:
        """memory:// stored bytes(5) (five zero bytes) for 5, one byte per element for a
        list or an int64 tensor's values, where the other stores raised."""
        for value in (5, [1, 2, 3], "text"):
            with pytest.raises(TypeError):
                backend.put(ns + "bad", value)  # type: ignore[arg-type]
        assert not [m.key for m in backend.list_objects(ns + "bad")]

    @pytest.mark.parametrize("size", [0, 1, 9 * MiB + 5])
    def test_put_stream(self, backend: Backend, ns: str, size: int) -> None:
        data = payload(size, 13)
        cuts = [0, *range(1, size, MiB + 3), size]  # uneven chunks, and an empty one
        chunks = [data[a:b] for a, b in itertools.pairwise(cuts)] + [b""]
        meta = backend.put_stream(ns + "s", iter(chunks), size)
        assert (meta.key, meta.size) == (ns + "s", size)
        assert backend.get(ns + "s") == data
        assert backend.head(ns + "s").version == meta.version

    @pytest.mark.parametrize("given", [99, 101])
    def test_put_stream_of_wrong_length_writes_nothing(
        self, backend: Backend, ns: str, given: int
    ) -> None:
        backend.put(ns + "w", b"old")
        with pytest.raises(IntegrityError):
            backend.put_stream(ns + "w", iter([b"x" * given]), 100)
        assert backend.get(ns + "w") == b"old"
        assert [m.key for m in backend.list_objects(ns)] == [ns + "w"]

    @pytest.mark.slow
    def test_large_round_trip(self, backend: Backend, ns: str) -> None:
        data = payload(self.large_object_size, 7)
        backend.put(ns + "large", data)
        assert backend.head(ns + "large").size == len(data)
        got = backend.get(ns + "large")
        assert len(got) == len(data) and got == data
        start, end = len(data) // 2 - 5, min(len(data), len(data) // 2 + MiB)
        assert backend.get_range(ns + "large", start, end) == data[start:end]
        backend.delete(ns + "large")

    # -- ranges ----------------------------------------------------------------------

    def test_ranges(self, backend: Backend, ns: str) -> None:
        size = 9 * MiB + 7
        data = payload(size, 11)
        backend.put(ns + "r", data)
        edges = [0, 1, size - 1, size]
        for boundary in (256 * 1024, MiB, 4 * MiB, 8 * MiB):
            edges += [boundary - 1, boundary, boundary + 1]
        rng = random.Random(5)
        cases = [(0, 0), (0, size), (size, size), (0, 1), (size - 1, size)]
        cases += [(min(a, b), max(a, b)) for a, b in zip(edges, reversed(edges), strict=True)]
        pairs = [(rng.randrange(size), rng.randrange(size)) for _ in range(12)]
        cases += [(min(p), max(p)) for p in pairs]
        for start, end in cases:
            assert backend.get_range(ns + "r", start, end) == data[start:end], (start, end)

    @pytest.mark.parametrize("start,end", [(-1, 3), (5, 4), (0, 101), (101, 102), (200, 300)])
    def test_range_out_of_bounds(self, backend: Backend, ns: str, start: int, end: int) -> None:
        backend.put(ns + "small", payload(100))
        with pytest.raises(InvalidRangeError):
            backend.get_range(ns + "small", start, end)

    def test_range_of_empty_object(self, backend: Backend, ns: str) -> None:
        backend.put(ns + "empty", b"")
        assert backend.get_range(ns + "empty", 0, 0) == b""
        with pytest.raises(InvalidRangeError):
            backend.get_range(ns + "empty", 0, 1)

    # -- overwrite and atomicity -----------------------------------------------------

    def test_overwrite_changes_version(self, backend: Backend, ns: str) -> None:
        first = backend.put(ns + "o", b"same bytes")
        second = backend.put(ns + "o", b"same bytes")
        assert first.version != second.version
        assert backend.head(ns + "o").version == second.version
        third = backend.put(ns + "o", b"other")
        assert backend.get(ns + "o") == b"other"
        assert len({first.version, second.version, third.version}) == 3
        assert backend.head(ns + "o").size == 5

    def test_reads_of_a_version(self, backend: Backend, ns: str) -> None:
        data = bytes(range(256)) * 40
        meta = backend.put(ns + "v", data)
        v = backend.head(ns + "v").version
        assert v == meta.version
        assert backend.get(ns + "v", version=v) == data
        assert backend.get_range(ns + "v", 5, 4000, version=v) == data[5:4000]
        assert backend.head(ns + "v", version=v) == backend.head(ns + "v")
        view = backend.map_range(ns + "v", 1, 100, version=v)
        assert view is None or bytes(view) == data[1:100]
        whole = backend.map_object(ns + "v", version=v)
        assert whole is None or bytes(whole) == data

    def test_reads_of_a_replaced_version_fail(self, backend: Backend, ns: str) -> None:
        old = backend.put(ns + "v", b"first version").version
        assert backend.get(ns + "v", version=old) == b"first version"  # may fill a cache
        new = backend.put(ns + "v", b"second version!").version
        reads: list[Callable[[], object]] = [
            lambda: backend.get(ns + "v", version=old),
            lambda: backend.get_range(ns + "v", 0, 5, version=old),
            lambda: backend.head(ns + "v", version=old),
        ]
        for read in reads:
            with pytest.raises(VersionChangedError, match=r"changed"):
                read()
        maps: list[Callable[[], memoryview | None]] = [
            lambda: backend.map_range(ns + "v", 0, 5, version=old),
            lambda: backend.map_object(ns + "v", version=old),
        ]
        for mapped in maps:
            try:
                view = mapped()
            except VersionChangedError:
                view = None
            assert view is None, "a mapping served a replaced version"
        assert backend.get(ns + "v", version=new) == b"second version!"
        backend.delete(ns + "v")
        with pytest.raises(NotFoundError):
            backend.get(ns + "v", version=new)

    def test_reader_never_sees_a_mix(self, backend: Backend, ns: str) -> None:
        size = 2 * MiB + 3
        blobs = [bytes([i]) * size for i in range(2)]
        backend.put(ns + "atomic", blobs[0])
        stop = threading.Event()
        bad: list[str] = []

        def reader() -> None:  # every read returns one whole version, never an error
            while not stop.is_set():
                try:
                    got = backend.get(ns + "atomic")
                except Exception as exc:  # reported below
                    bad.append(f"read failed: {exc!r:.300}")
                    continue
                if got not in blobs:
                    bad.append(f"mixed read of {len(got)} bytes")

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for i in range(12):
                backend.put(ns + "atomic", blobs[i % 2])
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not bad, bad[:3]

    # -- keys ------------------------------------------------------------------------

    @pytest.mark.parametrize("key", REJECTED_KEYS, ids=repr)
    def test_rejected_keys(self, backend: Backend, key: str) -> None:
        for call in (
            lambda: backend.put(key, b"x"),
            lambda: backend.get(key),
            lambda: backend.get_range(key, 0, 0),
            lambda: backend.head(key),
            lambda: backend.delete(key),
        ):
            with pytest.raises(InvalidKeyError):
                call()
        assert issubclass(InvalidKeyError, ConfigError)

    def test_awkward_keys(self, backend: Backend, ns: str) -> None:
        keys = [ns + k for k in AWKWARD_KEYS]
        for i, key in enumerate(keys):
            backend.put(key, f"value {i}".encode())
        for i, key in enumerate(keys):
            assert backend.get(key) == f"value {i}".encode()
        listed = [m.key for m in backend.list_objects(ns)]
        assert listed == sorted(keys)

    # -- missing objects and delete ----------------------------------------------------

    def test_not_found(self, backend: Backend, ns: str) -> None:
        for call in (
            lambda: backend.get(ns + "missing"),
            lambda: backend.get_range(ns + "missing", 0, 1),
            lambda: backend.head(ns + "missing"),
        ):
            with pytest.raises(NotFoundError) as info:
                call()
            assert isinstance(info.value, FileNotFoundError)
            assert "missing" in str(info.value)

    def test_prefix_is_not_an_object(self, backend: Backend, ns: str) -> None:
        backend.put(ns + "dir/child", b"c")
        with pytest.raises(NotFoundError):
            backend.get(ns + "dir")
        with pytest.raises(NotFoundError):
            backend.head(ns + "dir")

    def test_delete_is_idempotent(self, backend: Backend, ns: str) -> None:
        backend.put(ns + "d", b"x")
        backend.delete(ns + "d")
        backend.delete(ns + "d")
        backend.delete(ns + "never-existed")
        backend.put(ns + "file", b"f")
        backend.delete(ns + "file/below/an/object")  # a path through an object: nothing there
        backend.delete(ns + "file")
        with pytest.raises(NotFoundError):
            backend.get(ns + "d")
        assert list(backend.list_objects(ns)) == []

    # -- list --------------------------------------------------------------------------

    def test_list_sorted_and_prefixed(self, backend: Backend, ns: str) -> None:
        keys = ["b", "a/b", "a.txt", "a", "ab", "a/c/d", "c-1", "c/1", "Z"]
        for key in keys:
            if key == "a":
                continue  # "a" would be a file and a directory at once on a filesystem
            backend.put(ns + key, key.encode())
        expected = sorted(ns + k for k in keys if k != "a")
        got = backend.list_objects(ns)
        assert iter(got) is got, "list must be lazy (an iterator)"
        metas = list(got)
        assert [m.key for m in metas] == expected
        assert all(m.size == len(m.key) - len(ns) for m in metas)
        assert [m.key for m in backend.list_objects(ns + "a")] == [
            ns + k for k in ("a.txt", "a/b", "a/c/d", "ab")
        ]
        assert [m.key for m in backend.list_objects(ns + "a/")] == [ns + "a/b", ns + "a/c/d"]
        assert [m.key for m in backend.list_objects(ns + "c")] == [ns + "c-1", ns + "c/1"]
        assert list(backend.list_objects(ns + "nothing")) == []
        everything = [m.key for m in backend.list_objects()]
        assert everything == sorted(everything)

    def test_list_versions_match_head(self, backend: Backend, ns: str) -> None:
        backend.put(ns + "v", b"1")
        (meta,) = list(backend.list_objects(ns))
        assert meta == backend.head(ns + "v")

    def test_modified_is_the_write_time(self, backend: Backend, ns: str) -> None:
        first = backend.put(ns + "t", b"1")
        head = backend.head(ns + "t")
        (listed,) = list(backend.list_objects(ns))
        assert listed.modified == head.modified
        assert first.modified in (None, head.modified)
        if head.modified is None:
            assert not self.reports_modified, f"{backend}: head() reports no modified time"
            return
        assert isinstance(head.modified, float)
        assert abs(head.modified - time.time()) < CLOCK_SKEW_S, (head.modified, time.time())
        second = backend.put(ns + "t", b"22")
        after = backend.head(ns + "t")
        assert after.version == second.version != first.version
        assert after.modified is not None and after.modified >= head.modified
        assert second.modified in (None, after.modified)
        (listed,) = list(backend.list_objects(ns))
        assert listed.modified == after.modified

    # -- pickle, str, close --------------------------------------------------------------

    def test_pickle_and_str(self, backend: Backend, ns: str) -> None:
        backend.put(ns + "p", b"pickled")
        clone = pickle.loads(pickle.dumps(backend))  # noqa: S301 - our own object
        assert str(clone) == str(backend) == backend.url
        assert clone.get(ns + "p") == b"pickled"
        userinfo = backend.url.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[0]
        assert ":" not in userinfo, "str(backend) must not carry a password"
        clone.close()

    def test_close_then_reuse(self, backend: Backend, ns: str) -> None:
        backend.put(ns + "c", b"1")
        backend.close()
        assert backend.get(ns + "c") == b"1"
        with backend as same:
            assert same is backend

    # -- concurrency -------------------------------------------------------------------

    def test_concurrent_puts_and_gets(self, backend: Backend, ns: str) -> None:
        def work(i: int) -> None:
            key = f"{ns}t/{i % 6}"
            data = payload(64 * 1024 + i, i)
            backend.put(f"{ns}own/{i}", data)
            assert backend.get(f"{ns}own/{i}") == data
            backend.put(key, data)
            got = backend.get(key)
            assert len(got) >= 64 * 1024

        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(work, range(48)))
        assert len(list(backend.list_objects(ns + "own/"))) == 48
        assert len(list(backend.list_objects(ns + "t/"))) == 6

    # -- model-based -------------------------------------------------------------------

    def test_state_machine(self, backend: Backend, ns: str) -> None:
        from dcstore.testing.model import run_model_test

        run_model_test(backend, ns, max_examples=self.state_machine_examples)
