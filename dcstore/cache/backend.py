"""``CachedBackend``: a read-through hot tier in front of any backend.

Guarantees
----------
* Never stale: the cache key carries the object's version. A read without
  ``version=`` asks the origin for the current one (``head``, one small
  request), so an overwrite from any process is seen by the next read. A read
  with ``version=`` (the encryption layer above passes the version it learnt;
  a dataset's manifest pins its shards') asks the origin nothing when the tier
  holds that version and this process knows its size (a version's size is asked of
  the origin once per process, never taken from the tier, which anyone who can
  write to it could forge). Fills
  read the origin with ``version=``, so a fill of a replaced object raises
  :class:`VersionChangedError` instead of caching the wrong bytes.
* Never partial: objects are cached as chunks of ``policy.chunk_bytes``; a read
  is assembled from complete chunks only: each one it needs is present with its
  exact length, or fetched from the origin (only the missing ones).
* Faults never fail a read: any tier failure (down, restarted, timeout, cluster
  node gone) sends the read to the origin; a circuit breaker warns once per
  episode, counts errors and retries the tier every ``policy.retry_interval``
  seconds, so the cache recovers by itself. A tier out of memory that refuses
  writes still serves what it holds: the new data is just not cached.
* Single-flight per chunk: concurrent misses of the same chunks (threads,
  processes, nodes) take leases in the tier; each chunk is fetched by one reader
  while the others wait for it. A fetcher that dies leaves leases that expire
  after ``policy.lease_ttl``; then a waiter takes over.
* ``put`` and ``delete`` pass through and drop the previous version's chunks.
* Below encryption (see :func:`dcstore.store.open_store`) the tier holds
  ciphertext only.

Cost, counted at the origin: a read with ``version=`` that hits makes no
request once this process knows the version's size (one metadata lookup per version
and process); a miss makes that lookup and the fill reads. A read without
``version=`` adds one ``head``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import multiprocessing.util
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dcstore.backends.base import Backend, Buffer, ObjectMeta, ObjectWriter, Wrapper, check_range
from dcstore.backends.keys import validate_key
from dcstore.backends.objectio import ForwardingWriter, ObjectReader
from dcstore.cache.breaker import CircuitBreaker, TierSkipped
from dcstore.cache.chunks import Chunk, ChunkSpan, consecutive_runs
from dcstore.cache.leases import LeaseSweeper
from dcstore.cache.tier import (
    STAT_FIELDS,
    CacheFullError,
    CachePolicy,
    CacheTier,
    CacheUnavailableError,
    with_ratio,
)
from dcstore.errors import ConfigError, DcstoreError, NotFoundError, VersionChangedError

READ_ATTEMPTS = 3
"""A read of the current version that meets an overwrite starts again; after this many
attempts it reads the origin directly (its own read is atomic), so a reader of an object
rewritten faster than the tier fills still gets a whole version, never an error."""
SIZES_IN_PROCESS = 4096
"""Versions whose size this process remembers (a version's size never changes)."""

OriginRead = Callable[[int, int], Buffer]
"""Bytes ``[start, end)`` of one version, read from the origin."""


class CachedBackend(Wrapper):
    """Reads through ``cache`` (a tier or its URL, see :func:`open_cache_tier`).

    ``inner`` must not decrypt (a tier above the encryption would hold plaintext):
    an encrypted ``inner`` is a :class:`ConfigError`."""

    def __init__(
        self,
        inner: Backend,
        cache: CacheTier | str = "memory",
        policy: CachePolicy | None = None,
    ):
        from dcstore.cache.spec import open_cache_tier

        if inner.authenticates_reads:
            raise ConfigError(
                f"{inner.url}: this store decrypts, so a cache in front of it would hold "
                "plaintext; give the cache and the keys together (open_store(url, cache=..., "
                "keys=...) puts the cache below the encryption)"
            )
        self.inner = inner
        self.tier = open_cache_tier(cache)
        self.policy = policy or self.tier.policy
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._pending = dict.fromkeys(STAT_FIELDS, 0)
        self._totals = dict.fromkeys(STAT_FIELDS, 0)
        self._last_flush = time.monotonic()
        self._pid = 0
        self._sizes: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._breaker = CircuitBreaker(
            str(self.tier), self.policy.retry_interval, lambda: self._bump({"errors": 1}),
            self.tier.servers_out,
        )  # fmt: skip
        self._sweeper = LeaseSweeper(
            self.tier.release_leases, self.policy.retry_interval, self.policy.lease_ttl
        )

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def caches(self) -> bool:
        return True

    # -- reads -----------------------------------------------------------------------

    def get(self, key: str, *, version: str | None = None) -> bytes:
        return self._versioned(key, version, 0, None)

    def map_range(
        self, key: str, start: int, end: int, *, version: str | None = None
    ) -> memoryview | None:
        """Never maps: every read goes through the tier."""
        return None

    def map_object(self, key: str, *, version: str | None = None) -> memoryview | None:
        """Never maps: every read goes through the tier."""
        return None

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        return self._versioned(key, version, start, end)

    def _versioned(self, key: str, version: str | None, start: int, end: int | None) -> bytes:
        """Bytes ``[start, end)`` (``end=None``: the whole object) of ``version`` (or
        VersionChangedError), or of the current version (asked of the origin), started
        again if the object is replaced meanwhile and read from the origin directly after
        READ_ATTEMPTS such races. The key is validated by ``head``, the range checked
        against the version's size."""
        for _ in range(READ_ATTEMPTS):
            meta = self.head(key, version=version)
            if end is not None:
                check_range(key, start, end, meta.size)
            try:
                origin = functools.partial(self._origin, key, meta)
                return bytes(
                    self._read(key, meta, start, meta.size if end is None else end, origin)
                )
            except VersionChangedError:
                self._forget_size(key, meta.version)
                if version is not None:
                    raise
        self._bump({"misses": 1})  # an origin read, like a fill
        return self.inner.get(key) if end is None else self.inner.get_range(key, start, end)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        """Without ``version``, the origin's answer. With it, the version's size from
        this process's memory when it has it (no origin request), else the origin's
        answer for exactly that version. Never from the tier: anyone who can write to
        the tier could give a version a wrong size, which no check below this layer
        would catch (chunks are checked against the size they are read with)."""
        if version is None:
            return self.inner.head(key)
        validate_key(key)
        size = self._known_size(key, version)
        if size is not None:
            return ObjectMeta(key, size, version)
        meta = self.inner.head(key, version=version)
        self._remember_size(meta)
        return meta

    def _known_size(self, key: str, version: str) -> int | None:
        with self._lock:
            size = self._sizes.get((key, version))
            if size is not None:
                self._sizes.move_to_end((key, version))
            return size

    def _remember_size(self, meta: ObjectMeta) -> None:
        with self._lock:
            self._sizes[meta.key, meta.version] = meta.size
            while len(self._sizes) > SIZES_IN_PROCESS:
                self._sizes.popitem(last=False)

    def _forget_size(self, key: str, version: str) -> None:
        with self._lock:
            self._sizes.pop((key, version), None)

    def open_read(self, key: str, *, version: str | None = None) -> ObjectReader:
        """A seekable reader of one version whose ranges come from the tier; misses are
        read (and filled) through the origin's own reader of that version, opened at the
        first miss (a read the tier serves whole asks the origin nothing more than
        :meth:`head` does) and closed with this one. From then on it keeps to its version
        exactly as the origin's reader does (an open local file stays on it when the
        object is replaced; other stores raise :class:`VersionChangedError`)."""
        validate_key(key)
        meta = self.head(key, version=version)
        source = _OpenedAtFirstMiss(lambda: self.inner.open_read(key, version=meta.version))
        return ObjectReader(
            meta,
            lambda start, end: self._read(key, meta, start, end, source.read_range),
            align=self.read_alignment,
            what=f"{self.url}: {key!r}",
            on_close=source.close,
        )

    def _read(self, key: str, meta: ObjectMeta, start: int, end: int, origin: OriginRead) -> Buffer:
        """Bytes ``[start, end)`` of ``meta``'s version from the tier, what it lacks read
        with ``origin(start, end)`` (which returns exactly that version's bytes or raises)."""
        if start == end:
            return b""
        if meta.size > self.policy.max_object_bytes:
            self._count(not_admitted=1, misses=1, bytes_from_origin=end - start)
            return origin(start, end)
        span = ChunkSpan(self._object_id(key, meta), start, end, self.policy.chunk_bytes, meta.size)
        try:
            if (end - start) * self.tier.slice_ratio < span.bytes:  # slices move less
                sliced = self._lookup_slices(span)
                if sliced is not None:
                    self._count(hits=1, bytes_from_cache=end - start)
                    return sliced
            values = self._lookup(*span.names(span.indices))
            if None not in values:
                self._count(hits=1, bytes_from_cache=end - start)
                return span.join(values)  # type: ignore[arg-type]
            chunks = self._complete(span, values, origin)
        except TierSkipped:  # tier unusable: read the origin directly
            self._count(misses=1, bytes_from_origin=end - start)
            return origin(start, end)
        return span.join(chunks)

    def _origin(self, key: str, meta: ObjectMeta, start: int, end: int) -> bytes:
        if start == 0 and end == meta.size:
            return self.inner.get(key, version=meta.version)
        return self.inner.get_range(key, start, end, version=meta.version)

    def _object_id(self, key: str, meta: ObjectMeta) -> str:
        return self._digest(key, meta.version, meta.size, self.policy.chunk_bytes)

    def _digest(self, key: str, *parts: object) -> str:
        """A tier name for (origin URL, key, parts): one version of one object's data."""
        return _digest(self.inner.url, key, *parts)

    def _lookup(self, names: list[str], sizes: list[int]) -> list[Buffer | None]:
        """Each value if present with its exact length in ``sizes``, else ``None``: the
        tier checks the lengths (:meth:`CacheTier.get_many`'s contract, tested on every
        tier), so a short or long value is a miss, never part of a read.

        Values may be views into the tier's reused buffer: copy them before the
        next lookup in this thread.
        """
        with self._breaker:
            return self.tier.get_many(names, sizes)

    def _lookup_slices(self, span: ChunkSpan) -> bytes | None:
        """A small range read from the tier as slices of its chunks, or ``None``."""
        items = span.slices()
        with self._breaker:
            values = self.tier.get_slices(items)
        parts = []
        for value, (_, a, b) in zip(values, items, strict=True):
            if value is None or len(value) != b - a:
                return None
            parts.append(value)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _complete(
        self, span: ChunkSpan, values: list[Buffer | None], origin: OriginRead
    ) -> list[Chunk]:
        """Fill the missing chunks of ``span`` and return all of them.

        Single-flight per chunk: a reader takes the leases of the missing chunks it
        can, fetches each contiguous run of those from the origin, and waits for
        the chunks others hold leases on. A lease whose holder died expires after
        ``lease_ttl``; a holder that failed releases it; either way a waiter then
        takes over. A lease request or release that failed may have left leases in
        the tier (a paused server runs queued commands when it resumes): they are
        released with this reader's token once the tier answers (:mod:`.leases`).
        """
        chunks: list[Chunk | None] = [None if v is None else bytes(v) for v in values]
        from_tier = {i for i, v in enumerate(values) if v is not None}
        filled = waited = False
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.policy.wait_timeout
        while missing := [i for i, c in enumerate(chunks) if c is None]:
            leases = span.leases(missing)
            if self.policy.single_flight:
                got = self._take_leases(leases, token)
            else:
                got = [True] * len(missing)
            mine = [i for i, g in zip(missing, got, strict=True) if g]
            try:
                for lo, hi in consecutive_runs(mine):
                    chunks[lo : hi + 1] = self._fill(span, lo, hi, origin)
                    filled = True
            finally:
                if self.policy.single_flight and mine:
                    self._release(span.leases(mine), token)
            others = [i for i in missing if chunks[i] is None]
            if others:
                waited = True
                self._wait_for_leases(span.leases(others), deadline)
                for i, v in zip(others, self._lookup(*span.names(others)), strict=True):
                    if v is not None:
                        chunks[i] = bytes(v)
                        from_tier.add(i)
        cached = sum(span.overlap(i) for i in from_tier)
        self._count(
            hits=0 if filled else 1,
            misses=1 if filled else 0,
            bytes_from_cache=cached,
            single_flight_waits=1 if waited else 0,
        )
        return chunks  # type: ignore[return-value]

    def _take_leases(self, leases: list[str], token: str) -> list[bool]:
        """Which of ``leases`` this reader took; if the request was sent and failed, the
        tier may have taken them anyway: the sweeper releases them once it answers."""
        try:
            with self._breaker:
                return self.tier.try_leases(leases, token, self.policy.lease_ttl)
        except TierSkipped as exc:
            if exc.__cause__ is not None and not isinstance(exc.__cause__, CacheFullError):
                # sent and failed (not skipped, not refused): it may have been taken
                self._sweeper.add(leases, token)
            raise

    def _release(self, leases: list[str], token: str) -> None:
        """Drop our leases even while the circuit is open (a write may have failed
        while deletes still work, e.g. out of memory); if that fails, the sweeper
        releases them once the tier answers."""
        try:
            self.tier.release_leases(leases, token)
        except CacheUnavailableError:
            self._sweeper.add(leases, token)

    def _wait_for_leases(self, leases: list[str], deadline: float) -> None:
        delay = 0.001
        while True:
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
            with self._breaker:
                if not self.tier.leases_held(leases):
                    return
            if time.monotonic() > deadline:
                raise TierSkipped  # waited long enough: read the origin directly

    def _fill(self, span: ChunkSpan, lo: int, hi: int, origin: OriginRead) -> list[Chunk]:
        """Read chunks ``lo..hi`` of ``span`` with ``origin``, store them, return views."""
        size = span.chunk
        start = (span.first + lo) * size
        end = min(span.size, (span.first + hi + 1) * size)
        data = origin(start, end)  # exactly the span's version, or it raises
        self._count(bytes_from_origin=len(data))
        view = memoryview(data)
        chunks: list[Chunk] = [view[o : o + size] for o in range(0, len(data), size)]
        names, _ = span.names(range(lo, hi + 1))
        self._store(list(zip(names, chunks, strict=True)))
        return chunks

    def _store(self, items: list[tuple[str, Chunk]]) -> None:
        """Store filled chunks. A full tier refusing them is not a fault: its chunks are
        still served, only this data is not cached (see :mod:`.breaker`)."""
        try:
            with self._breaker:
                self.tier.set_many(items)
        except TierSkipped:
            return
        self._breaker.stored()

    # -- writes and metadata ------------------------------------------------------------

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        return self._replace(key, lambda: self.inner.put(key, data))

    def open_write(self, key: str) -> ObjectWriter:
        """The origin's writer; on commit the replaced version leaves the tier."""
        validate_key(key)
        old = self._head_or_none(key)

        def committed(_: ObjectMeta) -> None:
            if old is not None:
                self._forget(key, old)

        return ForwardingWriter(self.inner.open_write(key), committed)

    def _replace(self, key: str, write: Callable[[], ObjectMeta]) -> ObjectMeta:
        validate_key(key)
        old = self._head_or_none(key)
        meta = write()
        if old is not None:
            self._forget(key, old)
        return meta

    def delete(self, key: str) -> None:
        validate_key(key)
        old = self._head_or_none(key)
        self.inner.delete(key)
        if old is not None:
            self._forget(key, old)

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self.inner.list_objects(prefix)

    def _head_or_none(self, key: str) -> ObjectMeta | None:
        try:
            return self.inner.head(key)
        except NotFoundError:
            return None

    def drop_cached(self, key: str, version: str) -> bool:
        """Drop the version's size from this process and its chunks from the tier (the
        origin tells the size, which names the chunks); True."""
        validate_key(key)
        try:
            meta = self.inner.head(key, version=version)
        except DcstoreError:  # gone from the origin: what the tier may hold is dropped
            meta = ObjectMeta(key, 0, version)
        self._forget(key, meta)
        self.inner.drop_cached(key, version)
        return True

    def _forget(self, key: str, meta: ObjectMeta) -> None:
        """Drop a replaced version's size (this process) and chunks (the tier): reads
        pinned to it then ask the origin (and get :class:`VersionChangedError`); the
        memory is freed."""
        self._forget_size(key, meta.version)
        if 0 < meta.size <= self.policy.max_object_bytes:
            oid = self._object_id(key, meta)
            count = -(-meta.size // self.policy.chunk_bytes)
            names = [f"{{{oid}}}:{i}" for i in range(count)]
            self._quietly(lambda: self.tier.delete_many(names))

    # -- statistics and housekeeping ----------------------------------------------------

    def _quietly(self, op: Callable[[], Any]) -> None:
        """Run a tier operation whose failure must not affect the caller."""
        try:
            with self._breaker:
                op()
        except TierSkipped:
            pass

    def _bump(self, counts: Mapping[str, int]) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            _flush_at_exit(self)
        with self._lock:  # flush_stats swaps _pending under this lock: read it inside
            pending, totals = self._pending, self._totals
            for name, n in counts.items():
                pending[name] += n
                totals[name] += n

    def _count(self, **counts: int) -> None:
        self._bump(counts)
        if time.monotonic() - self._last_flush >= self.policy.stats_interval:
            self.flush_stats()

    def flush_stats(self) -> None:
        """Send this process's pending counters to the tier (kept if it is down)."""
        with self._lock:
            pending, self._pending = self._pending, dict.fromkeys(STAT_FIELDS, 0)
            self._last_flush = time.monotonic()
        if not any(pending.values()):
            return
        try:
            with self._breaker:
                self.tier.add_stats(pending)
        except TierSkipped:
            with self._lock:
                _add(self._pending, pending)

    def stats(self) -> dict[str, float | int]:
        """This process's counters since it opened the backend, with ``hit_ratio``."""
        with self._lock:
            return with_ratio(self._totals)

    def close(self) -> None:
        self._sweeper.close()
        self.flush_stats()
        self.tier.close()
        self.inner.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "tier": self.tier, "policy": self.policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()


class _OpenedAtFirstMiss:
    """The origin's reader of one version, opened when first read from, then kept."""

    def __init__(self, open_reader: Callable[[], ObjectReader]):
        self._open = open_reader
        self._reader: ObjectReader | None = None
        self._closed = False
        self._lock = threading.Lock()

    def read_range(self, start: int, end: int) -> Buffer:
        with self._lock:
            if self._closed:  # a read that was in the tier when the reader was closed
                raise ValueError("read from a closed reader")
            if self._reader is None:
                self._reader = self._open()
            reader = self._reader
        return reader.read_range(start, end)

    def close(self) -> None:
        with self._lock:
            reader, self._reader, self._closed = self._reader, None, True
        if reader is not None:
            reader.close()


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    """Add ``counts`` to the counters ``into`` (plain ints: cheaper than ``Counter``)."""
    for name, n in counts.items():
        into[name] += n


@functools.lru_cache(maxsize=SIZES_IN_PROCESS)
def _digest(*parts: object) -> str:
    """The blake2b digest of ``parts`` (as text), remembered: every read of a version
    names its chunks with it."""
    ident = "\0".join(map(str, parts))
    return hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()


_LIVE: weakref.WeakSet[CachedBackend] = weakref.WeakSet()
_HOOKED_PID = 0


def _flush_all() -> None:
    for backend in list(_LIVE):
        with contextlib.suppress(Exception):
            backend.flush_stats()


def _flush_at_exit(backend: CachedBackend) -> None:
    """Flush ``backend``'s counters when this process exits, including DataLoader
    workers, which end with ``os._exit`` (multiprocessing finalizers run; atexit does not)."""
    global _HOOKED_PID
    _LIVE.add(backend)
    if os.getpid() != _HOOKED_PID:
        _HOOKED_PID = os.getpid()
        atexit.register(_flush_all)
        multiprocessing.util.Finalize(None, _flush_all, exitpriority=100)
