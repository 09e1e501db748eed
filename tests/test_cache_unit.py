"""CachedBackend logic on the in-process LRU tier (no server needed)."""

from __future__ import annotations

import logging
import os
import pickle
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcstore.backends.base import Backend, Buffer
from dcstore.backends.memory import MemoryBackend
from dcstore.cache import (
    CachedBackend,
    CacheFullError,
    CachePolicy,
    CacheUnavailableError,
    LruTier,
    open_cache_tier,
)
from dcstore.cache.lru import ENTRY_OVERHEAD
from dcstore.errors import BackendUnavailableError, ConfigError, NotFoundError
from dcstore.testing.conformance import BackendConformance, payload
from dcstore.testing.instrumented import InstrumentedBackend

MiB = 1 << 20


def cached(chunk: int = 1000, **policy: object) -> tuple[CachedBackend, InstrumentedBackend]:
    origin = InstrumentedBackend(MemoryBackend(f"cache-{uuid.uuid4().hex}"))
    tier = LruTier(max_bytes=64 * MiB, policy=CachePolicy(chunk_bytes=chunk, **policy))  # type: ignore[arg-type]
    return CachedBackend(origin, tier), origin


class TestCachedLruConformance(BackendConformance):
    stores_across_processes = False  # a memory:// origin

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        tier = LruTier(max_bytes=512 * MiB, policy=CachePolicy(chunk_bytes=1 * MiB))
        yield CachedBackend(MemoryBackend(f"conf-{uuid.uuid4().hex}"), tier)


def test_second_read_is_served_from_the_tier() -> None:
    store, origin = cached()
    data = payload(10_500)
    store.put("a/b", data)
    assert store.get("a/b") == data
    first = origin.bytes_read
    assert first == len(data)
    for _ in range(3):
        assert store.get("a/b") == data
        assert store.get_range("a/b", 999, 2001) == data[999:2001]
    assert origin.bytes_read == first
    stats = store.stats()
    assert stats["hits"] == 6 and stats["misses"] == 1
    assert stats["bytes_from_cache"] == 3 * (len(data) + 1002)
    assert stats["hit_ratio"] == pytest.approx(6 / 7)


@given(
    size=st.integers(0, 200),
    chunk=st.integers(1, 40),
    ranges=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=8),
)
def test_ranges_are_exact_across_chunks(
    size: int, chunk: int, ranges: Sequence[tuple[int, int]]
) -> None:
    store, _ = cached(chunk)
    data = payload(size, size)
    store.put("k", data)
    for a, b in ranges:
        start, end = sorted((min(a, size), min(b, size)))
        assert store.get_range("k", start, end) == data[start:end]
    assert store.get("k") == data
    assert store.get("k") == data


def test_range_miss_fills_only_needed_chunks() -> None:
    store, origin = cached(100)
    data = payload(1000)
    store.put("k", data)
    assert store.get_range("k", 250, 420) == data[250:420]
    assert origin.bytes_read == 300  # chunks 2, 3, 4
    assert store.get_range("k", 200, 500) == data[200:500]
    assert origin.bytes_read == 300
    assert store.get("k") == data  # only the missing chunks: 0-1 and 5-9, two origin reads
    assert origin.bytes_read == 1000 and origin.reads == 3


def test_missing_chunk_is_a_miss_never_partial() -> None:
    store, origin = cached(100)
    data = payload(1000)
    store.put("k", data)
    store.get("k")
    tier = store.tier
    assert isinstance(tier, LruTier)
    evicted = sorted(tier._items)[3]  # drop one member of the chunk set
    tier.delete_many([evicted])
    assert store.get("k") == data
    assert origin.reads == 2 and origin.bytes_read == 1100  # only the evicted chunk again
    assert store.stats()["misses"] == 2
    assert store.stats()["bytes_from_cache"] == 900


def test_chunk_with_wrong_length_is_a_miss() -> None:
    store, origin = cached(100)
    data = payload(1000)
    store.put("k", data)
    store.get("k")
    tier = store.tier
    assert isinstance(tier, LruTier)
    tier.set_many([(k, b"short") for k in list(tier._items)[:1]])
    assert store.get("k") == data
    assert origin.reads == 2


def test_overwrite_through_the_stack_invalidates_and_frees() -> None:
    store, _ = cached(100)
    store.put("k", payload(1000, 1))
    store.get("k")
    tier = store.tier
    assert isinstance(tier, LruTier)
    assert tier.used_bytes == sum(len(k) + len(v) + ENTRY_OVERHEAD for k, (v, _) in items(tier))
    store.put("k", payload(500, 2))
    assert tier.used_bytes == 0
    assert store.get("k") == payload(500, 2)
    store.delete("k")
    assert tier.used_bytes == 0
    with pytest.raises(NotFoundError):
        store.get("k")


def test_overwrite_behind_the_cache_is_seen() -> None:
    store, origin = cached(100)
    store.put("k", payload(1000, 1))
    assert store.get("k") == payload(1000, 1)
    origin.inner.put("k", payload(1000, 2))  # same size, written around the cache
    assert store.get("k") == payload(1000, 2)
    assert store.get_range("k", 10, 20) == payload(1000, 2)[10:20]


def test_admission_limit() -> None:
    store, origin = cached(100, max_object_bytes=500)
    store.put("big", payload(501))
    store.put("small", payload(500))
    for _ in range(2):
        assert store.get("big") == payload(501)
        assert store.get("small") == payload(500)
    assert origin.bytes_read == 2 * 501 + 500
    assert store.stats()["not_admitted"] == 2


def test_ttl_expires_chunks() -> None:
    import time

    store, origin = cached(100, ttl=0.05)
    store.put("k", payload(300))
    store.get("k")
    store.get("k")
    assert origin.reads == 1
    time.sleep(0.1)
    store.get("k")
    assert origin.reads == 2


def test_lru_is_bounded_in_bytes() -> None:
    tier = LruTier(max_bytes=1000, policy=CachePolicy(chunk_bytes=100))
    store = CachedBackend(MemoryBackend(f"b-{uuid.uuid4().hex}"), tier)
    for i in range(20):
        store.put(f"k{i}", payload(300, i))
        assert store.get(f"k{i}") == payload(300, i)
        assert tier.used_bytes <= 1000


def items(tier: LruTier) -> list[tuple[str, tuple[bytes, float | None]]]:
    return list(tier._items.items())


def test_lru_bounds_the_memory_of_many_small_values() -> None:
    """Only values counted: 200,000 small entries held 52 MiB under max_bytes=1MiB."""
    import tracemalloc

    tier = LruTier(max_bytes=1 << 40)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5000):
            tier.set_many([(f"ns:{{0123456789abcdef0123456789abcdef}}:{i}", bytearray(b"xy"))])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= tier.used_bytes  # what is counted covers what is held
    small = LruTier(max_bytes=100_000)
    small.set_many([(f"k{i}", b"v") for i in range(10_000)])
    assert small.used_bytes <= 100_000 and len(small._items) < 100_000 // ENTRY_OVERHEAD
    small.set_many([("chunk", bytes(100_000))])  # as large as the tier: still cached (review)
    assert list(small._items) == ["chunk"]


@pytest.mark.parametrize("single_flight", [True, False])
def test_single_flight_between_threads(single_flight: bool) -> None:
    origin = InstrumentedBackend(MemoryBackend(f"sf-{uuid.uuid4().hex}"), latency=0.2)
    policy = CachePolicy(chunk_bytes=1000, single_flight=single_flight)
    store = CachedBackend(origin, LruTier(policy=policy))
    data = payload(5000)
    store.put("k", data)
    start = threading.Barrier(8)
    results: list[bytes] = []

    def read() -> None:
        start.wait()
        results.append(store.get("k"))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [data] * 8
    if single_flight:
        assert origin.reads == 1
        assert store.stats()["single_flight_waits"] == 7
    else:
        assert origin.reads == 8


class CheckedWritesTier(LruTier):
    """An LRU tier whose writes (chunks and leases) first call ``_check``."""

    def _check(self) -> None:
        raise NotImplementedError

    def set_many(self, items: Sequence[tuple[str, Buffer]]) -> None:
        self._check()
        super().set_many(items)

    def try_leases(self, keys: Sequence[str], token: str, ttl: float) -> list[bool]:
        self._check()
        return super().try_leases(keys, token, ttl)


class FlakyTier(CheckedWritesTier):
    """An LRU tier that fails every call while ``broken``."""

    broken = False

    def _check(self) -> None:
        if self.broken:
            raise CacheUnavailableError("cache tier flaky://: connection refused")

    def get_many(self, keys: Sequence[str], sizes: Sequence[int]) -> list[Buffer | None]:
        self._check()
        return super().get_many(keys, sizes)


def test_tier_faults_never_fail_reads(caplog: pytest.LogCaptureFixture) -> None:
    import time

    tier = FlakyTier(policy=CachePolicy(chunk_bytes=100, retry_interval=0.1))
    origin = InstrumentedBackend(MemoryBackend(f"flaky-{uuid.uuid4().hex}"))
    store = CachedBackend(origin, tier)
    data = payload(1000)
    store.put("k", data)
    store.get("k")
    caplog.set_level(logging.WARNING, logger="dcstore.cache")
    tier.broken = True
    for _ in range(20):
        assert store.get("k") == data
        assert store.get_range("k", 5, 505) == data[5:505]
    warnings = [r for r in caplog.records if "reading from the origin" in r.getMessage()]
    assert len(warnings) == 1  # one per episode
    assert store.stats()["errors"] == 1  # the circuit is open: no call, no new error
    time.sleep(0.15)
    store.get("k")  # the probe fails: still the same episode
    assert len([r for r in caplog.records if "reading from the origin" in r.getMessage()]) == 1
    assert store.stats()["errors"] == 2
    tier.broken = False
    time.sleep(0.15)
    reads = origin.reads
    assert store.get("k") == data  # probe succeeds: served from the tier again
    assert origin.reads == reads
    assert any("is back" in r.getMessage() for r in caplog.records)


def test_pickle_keeps_configuration_not_contents() -> None:
    store, _ = cached(100, ttl=5.0)
    store.put("k", payload(300))
    store.get("k")
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone.tier, LruTier)
    assert clone.tier.used_bytes == 0
    assert clone.policy == store.policy
    assert str(clone) == str(store)


def test_open_cache_tier_specs() -> None:
    assert isinstance(open_cache_tier("memory"), LruTier)
    assert isinstance(open_cache_tier("lru"), LruTier)
    tier = open_cache_tier("lru://?max_bytes=1000&chunk_bytes=10&ttl=3&namespace=x")
    assert isinstance(tier, LruTier)
    assert tier.max_bytes == 1000 and tier.policy.chunk_bytes == 10 and tier.policy.ttl == 3
    assert open_cache_tier(tier) is tier
    assert str(open_cache_tier(str(tier))) == str(tier)
    for bad in ("lru://?nope=1", "ftp://x", "lru://?chunk_bytes=0", "lru://host", ""):
        with pytest.raises(ConfigError):
            open_cache_tier(bad)
    # a typo names what was given, never a password (in the netloc or the query)
    with pytest.raises(ConfigError, match=r"unknown cache 'redis//h:6379': give memory, or a"):
        open_cache_tier("redis//h:6379")
    with pytest.raises(ConfigError, match=r"unknown cache 'memroy'") as info:
        open_cache_tier("memroy")  # was: "unknown cache scheme 'file' ... a path"
    with pytest.raises(ConfigError, match=r"unknown cache '...@h:1/0'") as info:
        open_cache_tier("redis//:hunter2@h:1/0")
    with pytest.raises(ConfigError, match=r"\(cache=rediz://h:1/0\)") as info:
        open_cache_tier("rediz://:hunter2@h:1/0?password=hunter2")
    assert "hunter2" not in str(info.value)


def test_redis_urls_parse_without_connecting(tmp_path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret-from-file\n")
    tier = open_cache_tier(f"redis://10.0.0.1:6380/2?namespace=ds1&password_file={pw}")
    assert "s3cret" not in str(tier) + repr(tier)
    assert "s3cret" not in pickle.dumps(tier).decode("latin-1")
    tier = open_cache_tier("redis://user:s3cret@10.0.0.1:6380/2?chunk_bytes=1048576")
    assert str(tier) == "redis://user@10.0.0.1:6380/2?chunk_bytes=1048576"
    tier = open_cache_tier("redis+cluster://a:7000,b:7001")
    assert str(tier) == "redis+cluster://a:7000,b:7001"
    assert (
        str(open_cache_tier("rediss://h?tls_verify=false")) == "rediss://h:6379/0?tls_verify=false"
    )
    for bad in (
        "redis://a:1,b:2",
        "redis+cluster://a:1/3",
        "redis://h/x",
        "redis://h?namespace=a*b",
        f"redis://:pw@h?password_file={pw}",
        "redis://h?password_file=/nonexistent/pw",
        "redis://h?bogus=1",
    ):
        with pytest.raises(ConfigError):
            open_cache_tier(bad)


def test_a_password_file_path_is_quoted_and_a_url_password_beats_the_environment(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cache stats --password-file 'pw#1.txt'`` read ``pw`` (the path pasted into the
    URL unquoted: #, % and + broke it), and DCSTORE_CACHE_PASSWORD_FILE made a URL with
    its own password fail ("not both")."""
    import argparse

    from dcstore.cli.cache import _open

    for name in ("pw.txt", "pw#1.txt", "pw%41.txt", "pw+x.txt", "pw&x.txt"):
        (tmp_path / name).write_text("s3cret\n")
        args = argparse.Namespace(url="redis://h/0?namespace=x", password_file=str(tmp_path / name))
        assert _open(args).password_file == str(tmp_path / name)
    monkeypatch.setenv("DCSTORE_CACHE_PASSWORD_FILE", str(tmp_path / "pw#1.txt"))
    from_env = _open(argparse.Namespace(url="redis://h/0", password_file=None))
    assert from_env.password_file == str(tmp_path / "pw#1.txt")
    own = _open(argparse.Namespace(url="redis://:other@h/0", password_file=None))
    assert own.password_file is None


def _reply_through_socket(reply: bytes, sizes: list[int], piece: int = 7):
    """Feed ``reply`` in small pieces through a socket pair and parse it."""
    import socket

    from dcstore.cache.resp import read_mget, reply_capacity

    a, b = socket.socketpair()
    with a, b:

        def send() -> None:
            for i in range(0, len(reply), piece):
                b.sendall(reply[i : i + piece])
            b.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        buf = bytearray(10 + reply_capacity(sizes))
        try:
            offsets, end = read_mget(a, buf, 10, sizes)
        finally:
            sender.join()
    return [None if o is None else bytes(buf[o : o + n]) for o, n in offsets], end


def test_resp_mget_reader() -> None:
    from dcstore.cache.resp import Desync, ReplyError

    vals = [b"hello", b"", b"x" * 1000]
    reply = b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in vals)
    for piece in (1, 7, 4096):
        got, end = _reply_through_socket(reply, [5, 0, 1000], piece)
        assert got == vals and end == 10 + len(reply)
    for null in (b"$-1\r\n", b"_\r\n"):  # RESP2 and RESP3 nulls
        got, _ = _reply_through_socket(b"*2\r\n$5\r\nhello\r\n" + null, [5, 3])
        assert got == [b"hello", None]
    with pytest.raises(ReplyError, match="MOVED"):
        _reply_through_socket(b"-MOVED 3999 127.0.0.1:7001\r\n", [5])
    with pytest.raises(Desync):
        _reply_through_socket(b"*1\r\n$x\r\nhello\r\n", [5])
    with pytest.raises(Desync):
        _reply_through_socket(b"*2\r\n$5\r\nhello\r\n", [5])  # two values, one expected
    with pytest.raises(ConnectionError):
        _reply_through_socket(b"*2\r\n$5\r\nhello\r\n", [5, 5])  # truncated
    with pytest.raises(Desync, match="not followed by CRLF"):  # review: was taken as data
        _reply_through_socket(b"*2\r\n$5\r\nhelloXX$5\r\nworld\r\n", [5, 5])


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_resp_mget_reads_past_a_value_of_another_size(piece: int) -> None:
    """A damaged entry (truncated, or longer than the room the reply was given) was a
    Desync: every MGET of its object failed as if the tier were down. It is a miss of
    that key only; the values after it are read where they belong."""
    long = b"L" * 5000  # more than the whole reply's room: read past in pieces
    vals = [b"hello", b"hel", long, b"x" * 1000, b"world"]
    reply = b"*5\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in vals)
    got, _ = _reply_through_socket(reply, [5, 5, 5, 1000, 5], piece)
    assert got == [b"hello", None, None, b"x" * 1000, b"world"]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:1/0?connect_timeout=0.2",
        "redis+cluster://127.0.0.1:1,127.0.0.1:2?connect_timeout=0.2",
    ],
)
def test_unreachable_redis_reads_the_origin(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dcstore.cache")
    origin = InstrumentedBackend(MemoryBackend(f"down-{uuid.uuid4().hex}"))
    store = CachedBackend(origin, url)
    store.put("k", payload(1000))
    for _ in range(5):
        assert store.get("k") == payload(1000)
    assert origin.reads == 5
    assert store.stats()["errors"] == 1 and store.stats()["misses"] == 5
    assert episode_count(caplog) == 1


def episode_count(caplog: pytest.LogCaptureFixture) -> int:
    return sum("reading from the origin" in r.getMessage() for r in caplog.records)


def test_single_flight_is_per_chunk_for_overlapping_ranges() -> None:
    origin = InstrumentedBackend(MemoryBackend(f"ov-{uuid.uuid4().hex}"), latency=0.2)
    store = CachedBackend(origin, LruTier(policy=CachePolicy(chunk_bytes=100)))
    data = payload(1000)
    store.put("k", data)
    ranges = [(0, 550), (450, 1000), (120, 880), (0, 1000), (333, 667), (990, 1000)]
    start = threading.Barrier(len(ranges))
    results: dict[tuple[int, int], bytes] = {}

    def read(r: tuple[int, int]) -> None:
        start.wait()
        results[r] = store.get_range("k", *r)

    threads = [threading.Thread(target=read, args=(r,)) for r in ranges]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[(a, b)] == data[a:b] for a, b in ranges)
    assert origin.bytes_read == len(data)  # every chunk fetched exactly once
    assert store.stats()["single_flight_waits"] >= 1


def test_small_ranges_are_read_as_slices_of_chunks() -> None:
    store, origin = cached(1000)
    data = payload(5000)
    store.put("k", data)
    store.get("k")
    tier = store.tier
    assert isinstance(tier, LruTier)
    calls: list[int] = []
    real = tier.get_slices

    def spy(items):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        return real(items)

    tier.get_slices = spy  # type: ignore[method-assign]
    assert store.get_range("k", 10, 20) == data[10:20]  # inside one chunk
    assert store.get_range("k", 990, 1010) == data[990:1010]  # across two chunks
    assert store.get_range("k", 0, 1000) == data[0:1000]  # a whole chunk: plain lookup
    assert calls == [1, 2]
    tier.delete_many([sorted(tier._items)[0]])  # chunk 0 evicted: a miss, refilled
    assert store.get_range("k", 10, 20) == data[10:20]
    assert origin.bytes_read == 5000 + 1000
    assert store.stats()["hits"] == 3 and store.stats()["misses"] == 2


def test_pack_set_is_the_resp_command_without_copying_the_value() -> None:
    from dcstore.cache.resp import pack_set

    value = memoryview(b"hello world")
    pieces = pack_set(b"ns:{x}:0", value, None)
    assert pieces[1] is value
    assert b"".join(pieces) == b"*3\r\n$3\r\nSET\r\n$8\r\nns:{x}:0\r\n$11\r\nhello world\r\n"
    with_ttl = b"".join(pack_set(b"k", b"v", 1500))
    assert with_ttl == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1500\r\n"


def test_counters_flushed_from_many_threads_add_up() -> None:
    """Counts bumped while another thread flushes land in exactly one flush (the pending
    counters are swapped under the lock every bump takes)."""
    import sys

    tier = LruTier(policy=CachePolicy(chunk_bytes=1 * MiB, stats_interval=0))
    store = CachedBackend(MemoryBackend(f"stats-{uuid.uuid4().hex[:8]}"), tier)
    store.put("k", b"x" * 100)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen any race
    try:
        threads = [
            threading.Thread(target=lambda: [store.get("k") for _ in range(3000)]) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    store.flush_stats()
    sent, kept = tier.read_stats(), store.stats()
    assert sent["hits"] + sent["misses"] == kept["hits"] + kept["misses"] == 12000


def test_a_cache_is_never_put_above_the_encryption() -> None:
    """A tier in front of a store that decrypts would hold plaintext: every way of
    building one is refused, and open_store with both puts the cache below."""
    from dcstore import ShardedDataset, open_store
    from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource
    from dcstore.fsspec import DcstoreFileSystem

    origin = MemoryBackend(f"above-{uuid.uuid4().hex}")
    encrypted = EncryptedBackend(origin, StaticKeySource(Keyring.generate("k")))
    for build in (
        lambda: CachedBackend(encrypted, "memory"),
        lambda: open_store(encrypted, cache="memory"),
        lambda: ShardedDataset(encrypted, cache="memory"),
        lambda: DcstoreFileSystem(encrypted, cache="memory", skip_instance_cache=True),
    ):
        with pytest.raises(ConfigError, match="would hold plaintext"):
            build()
    with pytest.raises(ConfigError, match="already encrypts: give keys= once"):
        DcstoreFileSystem(encrypted, keys=StaticKeySource(Keyring.generate("k")))
    tier = LruTier(max_bytes=MiB)
    below = EncryptedBackend(CachedBackend(origin, tier), StaticKeySource(Keyring.generate("k")))
    below.put("x", b"MARKER" * 100)
    assert below.get("x") == b"MARKER" * 100


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("lru://?max_bytes=0", "max_bytes must be at least 1"),
        ("memcached://127.0.0.1:11211?item_size_max=0", "item_size_max must be at least 1KiB"),
        ("memcached://127.0.0.1:notaport", "malformed URL memcached://127.0.0.1:notaport"),
        ("memcached://127.0.0.1?socket_timeout=0", "timeouts must be positive.*socket_timeout=0"),
        # accepted before: every read failed (-1) or the tier looked down forever (0)
        ("redis://127.0.0.1/0?socket_timeout=-1", "timeouts must be positive.*socket_timeout=-1"),
        ("redis://127.0.0.1/0?socket_timeout=0", "timeouts must be positive.*socket_timeout=0"),
        ("redis://127.0.0.1/0?connect_timeout=0", "timeouts must be positive.*connect_timeout=0"),
        ("rediss+cluster://h:1?connect_timeout=-2", "timeouts must be positive"),
    ],
)
def test_tier_settings_that_cannot_work_are_named(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_cache_tier(url)


def _damaged_header(value: bytes, damage: str) -> bytes:
    """A cached first chunk whose header is damaged (its magic flipped) or forged (its
    key id or wrapped data key altered, the CRC recomputed, so it parses)."""
    import dataclasses

    from dcstore.crypto.format import parse_header

    if damage == "magic":
        return bytes([value[0] ^ 1]) + value[1:]
    header = parse_header(value, "x")
    if damage == "key_id":
        forged = dataclasses.replace(header, key_id="kek-attacker")
    else:
        wrapped = bytes([header.wrapped_dek[0] ^ 1]) + header.wrapped_dek[1:]
        forged = dataclasses.replace(header, wrapped_dek=wrapped)
    return forged.encode() + value[header.size :]


@pytest.mark.parametrize("damage", ["magic", "key_id", "wrapped_dek"])
def test_a_damaged_or_forged_cached_header_is_dropped_by_every_read_path(damage: str) -> None:
    """get and get_range dropped a damaged cached copy and read the origin; open_read
    (what cp streams through) failed on it for good. A forged key id or wrapped key
    failed every reader with a "wrong key" error, for good: only integrity errors
    dropped cached copies."""
    from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource

    keys = StaticKeySource(Keyring.generate("kek-original"))
    for read in ("get", "get_range", "open_read"):
        tier = LruTier(max_bytes=16 * MiB)
        cached = CachedBackend(MemoryBackend(f"hdr-{uuid.uuid4().hex}"), tier)
        EncryptedBackend(cached, keys, segment_size=4096).put("x", b"A" * 20000)
        EncryptedBackend(cached, keys).get("x")  # fills the tier
        (name,) = list(tier._items)  # one chunk: the header is at its start
        value, ttl = tier._items[name]
        tier._items[name] = (_damaged_header(value, damage), ttl)
        fresh = EncryptedBackend(cached, keys)
        if read == "get":
            assert fresh.get("x") == b"A" * 20000
        elif read == "get_range":
            assert fresh.get_range("x", 0, 10) == b"A" * 10
        else:
            with fresh.open_read("x") as f:
                assert f.read() == b"A" * 20000


def test_a_reader_with_the_wrong_keys_evicts_nothing() -> None:
    """Review: a key error dropped the version's cached copies and read it again whole
    from the origin, so one job with the wrong key file thrashed a shared tier for every
    job with the right one. Now only a header that differs from the stored one is."""
    from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource
    from dcstore.errors import KeyAccessError

    tier = LruTier(max_bytes=64 * MiB)
    origin = InstrumentedBackend(MemoryBackend(f"wrongkey-{uuid.uuid4().hex}"))
    right = StaticKeySource(Keyring.generate("kek-right"))
    EncryptedBackend(CachedBackend(origin, tier), right).put("x", payload(3 * MiB))
    EncryptedBackend(CachedBackend(origin, tier), right).get("x")  # fills the tier
    cached = dict(tier._items)
    reads, read_bytes = origin.reads, origin.bytes_read
    wrong = EncryptedBackend(CachedBackend(origin, tier), Keyring.generate("kek-other"))
    for read in (lambda: wrong.get("x"), lambda: wrong.get_range("x", 0, 10)):
        with pytest.raises(KeyAccessError, match="kek-right"):
            read()
    assert dict(tier._items) == cached  # nothing evicted
    assert origin.bytes_read - read_bytes < 4096 * (origin.reads - reads)  # headers only


def test_a_key_error_stands_when_the_stored_header_cannot_be_read() -> None:
    """Review of the fix above: with the origin's data reads failing, the comparison
    could not be made and the cached copies were dropped (and the wrong-key reader was
    told the store was down)."""
    from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource
    from dcstore.errors import KeyAccessError

    tier = LruTier(max_bytes=64 * MiB)
    origin = _StorageDown(f"datadown-{uuid.uuid4().hex}")
    right = StaticKeySource(Keyring.generate("kek-right"))
    EncryptedBackend(CachedBackend(origin, tier), right).put("x", payload(100_000))
    EncryptedBackend(CachedBackend(origin, tier), right).get("x")  # fills the tier
    cached = dict(tier._items)
    origin.down = True
    wrong = EncryptedBackend(CachedBackend(origin, tier), Keyring.generate("kek-other"))
    with pytest.raises(KeyAccessError):
        wrong.get("x")
    assert dict(tier._items) == cached


def test_a_cached_reader_closed_during_a_read_opens_nothing_at_the_origin() -> None:
    from dcstore.cache.backend import _OpenedAtFirstMiss

    opened: list[int] = []
    source = _OpenedAtFirstMiss(lambda: opened.append(1))  # type: ignore[arg-type, func-returns-value]
    source.close()
    with pytest.raises(ValueError, match="closed"):
        source.read_range(0, 1)
    assert opened == []


def test_the_tier_holds_no_object_sizes() -> None:
    """A version's size was kept in the tier: a forged one made pinned reads refuse
    valid ranges and a loader's fills fail (ValueError from zip) on every epoch. The
    size now comes from the origin, once per version and process."""
    origin = InstrumentedBackend(MemoryBackend(f"sizes-{uuid.uuid4().hex}"))
    tier = LruTier(max_bytes=16 * MiB)
    meta = CachedBackend(origin, tier).put("x", b"B" * 5000)
    CachedBackend(origin, tier).get("x", version=meta.version)
    assert not any(name.endswith(":size") for name in tier._items)
    assert all(len(v) == 5000 for v, _ in tier._items.values())  # the one chunk only
    fresh = CachedBackend(origin, tier)
    heads = origin.heads
    assert fresh.get_range("x", 4000, 5000, version=meta.version) == b"B" * 1000
    assert fresh.get_range("x", 0, 10, version=meta.version) == b"B" * 10
    assert origin.heads == heads + 1  # once for this process, then remembered


def test_a_hung_redis_costs_one_socket_timeout_per_read_not_two() -> None:
    """A Redis that accepts connections and never answers stalled a read for twice
    socket_timeout: the timed-out command was sent again on a new connection."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    origin = MemoryBackend(f"hung-{uuid.uuid4().hex}")
    origin.put("k", b"data")
    store = CachedBackend(origin, open_cache_tier(f"redis://127.0.0.1:{port}/0?socket_timeout=0.3"))
    try:
        assert store.get("k") == b"data"  # from the origin, the tier timing out
        assert len(accepted) == 1
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


class LateLeaseTier(LruTier):
    """Stores no chunks; runs a lease request, then fails it (a paused server resuming
    after the client gave up) ``late_leases`` times; fails ``failed_releases`` releases."""

    late_leases = 0
    failed_releases = 0

    def set_many(self, items: Sequence[tuple[str, Buffer]]) -> None:
        pass

    def try_leases(self, keys: Sequence[str], token: str, ttl: float) -> list[bool]:
        got = super().try_leases(keys, token, ttl)
        if self.late_leases:
            self.late_leases -= 1
            raise CacheUnavailableError("cache tier late://: lease failed: timeout")
        return got

    def release_leases(self, keys: Sequence[str], token: str) -> None:
        if self.failed_releases:
            self.failed_releases -= 1
            raise CacheUnavailableError("cache tier late://: lease release failed: timeout")
        super().release_leases(keys, token)


@pytest.mark.parametrize("late_leases, failed_releases", [(1, 0), (1, 2), (0, 1)])
def test_leases_of_failed_requests_are_released_when_the_tier_answers(
    late_leases: int, failed_releases: int
) -> None:
    """A lease taken by a request that failed (or kept by a failed release) made every
    later reader of its chunks wait for lease_ttl."""
    import time

    policy = CachePolicy(chunk_bytes=100, lease_ttl=60, wait_timeout=60, retry_interval=0.05)
    tier = LateLeaseTier(policy=policy)
    tier.late_leases, tier.failed_releases = late_leases, failed_releases
    origin = MemoryBackend(f"late-{uuid.uuid4().hex}")
    data = payload(1000)
    origin.put("k", data)
    assert CachedBackend(origin, tier).get("k") == data  # leaves its leases behind
    reader = CachedBackend(origin, tier)
    started = time.monotonic()
    assert reader.get("k") == data
    assert time.monotonic() - started < 10  # well under lease_ttl


def test_the_lease_sweeper_is_bounded_and_stops_with_its_backend() -> None:
    """Review: with a tier that never answered, the sweeper's list grew without end, and
    after close() its thread still ran (and reopened the tier's connection)."""
    import time

    from dcstore.cache import leases

    calls: list[str] = []

    def never_answers(keys: Sequence[str], token: str) -> None:
        calls.append(token)
        raise CacheUnavailableError("cache tier down://: connection refused")

    sweeper = leases.LeaseSweeper(never_answers, interval=0.01, ttl=0.2)
    for n in range(leases.MAX_PENDING + 10):
        sweeper.add([f"lease{n}"], f"t{n}")
    assert sweeper.pending == leases.MAX_PENDING  # the oldest left to expire by themselves
    deadline = time.monotonic() + 5
    while sweeper.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sweeper.pending == 0 and calls  # tried, then expired with their leases
    sweeper.add(["lease"], "t")
    sweeper.close()
    sweeper.add(["lease"], "t2")
    before = len(calls)
    time.sleep(0.1)
    assert sweeper.pending == 0 and len(calls) == before


def test_a_child_forked_while_the_sweeper_held_its_lock_can_still_use_it() -> None:
    """A fork (a DataLoader starting its workers) while the sweeper's thread held its
    lock left the child a lock no thread of it would release: its first failed lease
    request hung for good."""
    import signal

    from dcstore.cache import leases

    def never_answers(keys: Sequence[str], token: str) -> None:
        raise CacheUnavailableError("cache tier down://: connection refused")

    sweeper = leases.LeaseSweeper(never_answers, interval=0.01, ttl=5)
    sweeper.add(["parent's lease"], "parent")
    with sweeper._lock:  # as its thread holds it, for an instant, every interval
        pid = os.fork()
        if pid == 0:  # the child: add must return, and the parent's lease is not its own
            signal.alarm(10)
            try:
                sweeper.add(["lease"], "child")
                os._exit(0 if sweeper.pending == 1 else 2)
            finally:
                os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # else the alarm ended a child stuck in add
    sweeper.close()


class FullTier(CheckedWritesTier):
    """An LRU tier that refuses every write (chunks, leases, counters) while ``full``."""

    full = False

    def _check(self) -> None:
        if self.full:
            raise CacheFullError("cache tier full://: SET failed: OutOfMemoryError")

    def add_stats(self, counts: Mapping[str, int]) -> None:
        self._check()
        super().add_stats(counts)


def test_a_full_tier_still_serves_what_it_holds(caplog: pytest.LogCaptureFixture) -> None:
    """A write refused for want of memory opened the circuit: reads of cached data went
    to the origin for retry_interval, and the log flapped "failed" / "is back"."""
    import time

    tier = FullTier(policy=CachePolicy(chunk_bytes=100, retry_interval=0.05, stats_interval=0))
    origin = InstrumentedBackend(MemoryBackend(f"full-{uuid.uuid4().hex}"))
    store = CachedBackend(origin, tier)
    hot, cold = payload(1000, 1), payload(1000, 2)
    origin.put("hot", hot)
    origin.put("cold", cold)
    assert store.get("hot", version=origin.head("hot").version) == hot
    caplog.set_level(logging.INFO, logger="dcstore.cache")
    tier.full = True
    reads = origin.reads
    for _ in range(5):
        assert store.get("cold") == cold  # from the origin, not cached
        assert store.get("hot", version=origin.head("hot").version) == hot
        time.sleep(0.06)
    assert origin.reads - reads == 5  # the cold reads only
    messages = [r.getMessage() for r in caplog.records]
    assert sum("new data is not cached" in m for m in messages) == 1
    assert not any("reading from the origin" in m or "is back" in m for m in messages)
    tier.full = False
    assert store.get("cold") == cold
    assert any("stores again" in r.getMessage() for r in caplog.records)
    reads = origin.reads
    assert store.get("cold", version=origin.head("cold").version) == cold
    assert origin.reads == reads  # cached again


def test_open_read_keeps_to_its_version_as_the_origin_reader_does(tmp_path) -> None:
    """An open local file stays on its version; through a cache, open_read raised
    VersionChangedError when the object was replaced mid-read. The origin's reader is
    opened at the first miss: a read the tier serves whole does not open it (review)."""
    from dcstore.backends.local import LocalBackend

    origin = LocalBackend(tmp_path)
    opened: list[str] = []
    open_read = origin.open_read
    origin.open_read = lambda key, **kw: (opened.append(key), open_read(key, **kw))[1]  # type: ignore[method-assign]
    store = CachedBackend(origin, LruTier(policy=CachePolicy(chunk_bytes=1000)))
    old, new = payload(10_000, 1), payload(10_000, 2)
    meta = store.put("k", old)
    with store.open_read("k") as reader:
        assert bytes(reader.read_range(0, 1000)) == old[:1000]  # a miss: the file opened
        origin.put("k", new)  # another writer, behind the cache
        hits = store.stats()["hits"]
        assert bytes(reader.read_range(0, 1000)) == old[:1000]  # a hit in the tier
        assert store.stats()["hits"] == hits + 1
        assert bytes(reader.read_range(2000, 10_000)) == old[2000:]  # the opened file's
    assert store.get("k") == new and opened == ["k"]
    with store.open_read("k", version=store.head("k").version) as reader:
        assert reader.read() == new  # served whole by the tier
    assert opened == ["k"] and meta.version != store.head("k").version


class _StorageDown(MemoryBackend):
    """Data reads fail while ``down`` (heads answer): the storage's data nodes are out."""

    down = False

    def get(self, key: str, *, version: str | None = None) -> bytes:
        if self.down:
            raise BackendUnavailableError("memory://: data nodes down")
        return super().get(key, version=version)

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None):
        if self.down:
            raise BackendUnavailableError("memory://: data nodes down")
        return super().get_range(key, start, end, version=version)


def _roll_back(tier: LruTier, old: dict) -> None:
    """What a writer of the tier can do: the older version's entries over the new ones."""
    for name in set(tier._items) - set(old):
        tier._items[name] = next(iter(old.values()))


def test_a_header_taken_from_the_tier_during_an_outage_is_not_kept() -> None:
    """Review: while the storage's reads failed, the header read from the tier was
    remembered, so a rolled-back copy kept being served after the storage came back."""
    from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource

    keys = StaticKeySource(Keyring.generate("kek"))
    origin, tier = _StorageDown(f"outage-{uuid.uuid4().hex}"), LruTier(max_bytes=16 * MiB)
    store = EncryptedBackend(CachedBackend(origin, tier), keys, segment_size=4096)
    store.put("w", b"OLD-" * 5000)
    store.get("w")
    old = dict(tier._items)
    store.put("w", b"NEW-" * 5000)
    store.get("w")
    _roll_back(tier, old)
    reader = EncryptedBackend(CachedBackend(origin, tier), keys)
    origin.down = True
    assert reader.get_range("w", 0, 4) == b"OLD-"  # documented: unchecked while it is down
    origin.down = False
    assert reader.get("w") == b"NEW-" * 5000
    assert reader.get_range("w", 0, 4) == b"NEW-"


def test_head_and_list_read_no_header_from_the_storage() -> None:
    """Review: head and list (a plaintext size, which authenticates nothing) read every
    header from the storage past the tier: a whole 4 MiB chunk each on MongoDB."""
    from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource

    keys = StaticKeySource(Keyring.generate("kek"))
    origin = InstrumentedBackend(MemoryBackend(f"sizes-{uuid.uuid4().hex}"))
    tier = LruTier(max_bytes=16 * MiB)
    writer = EncryptedBackend(CachedBackend(origin, tier), keys)
    for i in range(5):
        writer.put(f"o{i}", b"x" * 10_000)
        writer.get(f"o{i}")  # fills the tier
    reader = EncryptedBackend(CachedBackend(origin, tier), keys)
    reads = origin.reads
    assert [m.size for m in reader.list_objects()] == [10_000] * 5
    assert reader.head("o1").size == 10_000
    assert origin.reads == reads  # sizes from the tier's headers: no data read
