"""``cassandra://``: objects as bounded chunks plus a metadata row, on Apache Cassandra 4/5.

Layout: :mod:`dcstore.backends.cassandra.schema`; options:
:mod:`dcstore.backends.cassandra.settings`.

Guarantees (beyond :mod:`dcstore.backends.base`):

* A write (``open_write``; ``put`` is one write of a known size) records an intent
  row, streams chunk rows under a fresh version id (uuid4) as data comes, then
  commits the metadata row with a lightweight transaction (compare-and-set on the
  previous version): the commit point. Readers follow committed metadata only, so
  they see the old object or the whole new one. The compare-and-set makes the
  winner of concurrent writes well defined and tells each writer exactly which
  version it replaced; that version's chunk partitions are deleted right after the
  commit (a failure of that cleanup is logged, not raised: the write did commit).
* A writer holds at most ``max_in_flight`` chunk inserts (each a copy of its chunk)
  plus one held-back chunk: memory is a few chunks whatever the size.
* The intent row always covers every chunk row the writer may have sent: ``put``
  records the exact size; a stream of unknown size records an upper bound one
  partition ahead, raised (and acknowledged) before any chunk of a new partition
  is sent, so a killed writer's chunks are always within its intent.
* The intent's ``started`` is a heartbeat: a writer refreshes it at least every
  ``abandon_after / 4`` while it writes, and gives up (raising
  :class:`BackendUnavailableError`, dropping its chunks) once no heartbeat was
  acknowledged for ``abandon_after / 2``, e.g. after its caller stalled that long
  between writes, so it never commits chunks a sweeper removed.
* A reader that loses a race with an overwrite (its version's chunks were just
  deleted) re-reads the metadata and starts again; a chunk missing from the
  *current* version is :class:`IntegrityError`.
* A write that fails, is aborted, leaves its ``with`` block by an exception or is
  garbage-collected unclosed deletes its chunks and intent at once. A writer whose
  process dies leaves its intent row: the next ``put``/``open_write``/``delete`` of
  that key, or :meth:`CassandraBackend.sweep` (``dcstore maintenance sweep URL``),
  deletes the chunks it covers once its heartbeat is older than ``abandon_after``
  (1 h).
* Chunk requests use prepared statements, token-aware routing and
  ``execute_async`` with at most ``max_in_flight`` requests outstanding per backend
  (shared by its threads; :mod:`dcstore.backends.cassandra.session`);
  ``get_range`` fetches only the chunks it overlaps.
* ``modified`` is the commit's write timestamp (``WRITETIME`` of the metadata row,
  the Paxos ballot's time: later for every overwrite of a key). ``head`` and
  ``list_objects`` report it; ``put`` and a writer's ``close`` return None there (the
  compare-and-set does not return it, and reading it back costs a serial read).
* Commits need ``serial_consistency`` (a quorum of replicas); reads and chunk
  writes use ``read_consistency`` / ``write_consistency``.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, NamedTuple

import cassandra
from cassandra.cluster import ResponseFuture, ResultSet
from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range, check_version
from dcstore.backends.cassandra import schema
from dcstore.backends.cassandra.errors import map_errors
from dcstore.backends.cassandra.schema import Layout, bucket_of
from dcstore.backends.cassandra.session import Session, connect
from dcstore.backends.cassandra.settings import CassandraSettings
from dcstore.backends.keys import validate_key, validate_prefix
from dcstore.backends.objectio import ChunkedWriter, ObjectWriter
from dcstore.backends.options import Options, ParsedUrl
from dcstore.errors import BackendUnavailableError, IntegrityError, NotFoundError

log = logging.getLogger(__name__)

READ_ATTEMPTS = 5  # restarts when a concurrent overwrite deletes the version being read
CAS_ATTEMPTS = 32  # compare-and-set rounds under contention


class Current(NamedTuple):
    """The committed version of a key."""

    version: uuid.UUID
    layout: Layout
    modified: float | None
    """When the metadata row was committed (its ``WRITETIME``), in seconds."""


class _StaleRead(Exception):
    """A chunk of the version being read is gone (overwritten meanwhile)."""


class _NoTables(NotFoundError):
    """The keyspace (or its tables) does not exist yet: no object can be there."""


class CassandraBackend(Backend):
    """Chunked objects in a Cassandra keyspace; thread-safe, picklable (reconnects lazily)."""

    def __init__(self, settings: CassandraSettings | None = None, **kwargs: Any):
        self.settings = settings or CassandraSettings(**kwargs)
        self._url = self.settings.url
        self._lock = threading.Lock()
        self._conn: Session | None = None

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> CassandraBackend:
        return cls(CassandraSettings.from_url(url, options))

    @property
    def url(self) -> str:
        return self._url

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"])  # type: ignore[misc]

    # -- connection ------------------------------------------------------------------------

    def _connection(self, *, write: bool = False) -> Session:
        """This process's session. Without the keyspace's tables, a write creates them
        and anything else raises :class:`_NoTables` (a store with no objects yet)."""
        conn = self._conn
        if conn is None or conn.pid != os.getpid():
            with self._lock:
                if self._conn is None or self._conn.pid != os.getpid():
                    # a parent's cluster (after fork) is abandoned, never shut down
                    self._conn = connect(self.settings, self.url)
                conn = self._conn
        if not conn.stmts and not conn.found_schema():
            if not write:
                raise _NoTables(
                    f"{self.url}: no objects (keyspace {self.settings.keyspace!r} "
                    "has no dcstore tables yet: the first write creates them)"
                )
            conn.create_schema()
        return conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- helpers ---------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self.settings.root + validate_key(key)

    @staticmethod
    def _current(conn: Session, full: str, serial: bool = False) -> Current | None:
        return _as_current(
            conn.run("head_serial" if serial else "head", (bucket_of(full), full)).one()
        )

    def _require(self, conn: Session, key: str, full: str) -> Current:
        cur = self._current(conn, full)
        if cur is None:
            raise NotFoundError(f"{self.url}: no object {key!r}")
        return cur

    def _read_chunks(self, conn: Session, cur: Current, first: int, last: int) -> list[bytes]:
        lay, v = cur.layout, cur.version
        params = ((v, lay.part_of(i), i) for i in range(first, last + 1))
        out = []
        for idx, rs in enumerate(conn.window("chunk_get", params), first):
            row = rs.one()
            if row is None:
                raise _StaleRead(idx)
            if len(row[0]) != lay.chunk_len(idx):
                raise IntegrityError(
                    f"{self.url}: chunk {idx} of version {v} has {len(row[0])} bytes,"
                    f" expected {lay.chunk_len(idx)}"
                )
            out.append(row[0])
        return out

    def _read(self, key: str, span: tuple[int, int] | None, version: str | None) -> bytes:
        full = self._full(key)
        with map_errors(self.url, "get", key):
            conn = self._connection()
            cur = self._require(conn, key, full)
            for _ in range(READ_ATTEMPTS):
                check_version(self.url, key, version, str(cur.version))
                size, cs = cur.layout.size, cur.layout.chunk_size
                start, end = span if span is not None else (0, size)
                check_range(key, start, end, size)
                if start == end:
                    return b""
                first, last = start // cs, (end - 1) // cs
                try:
                    parts = self._read_chunks(conn, cur, first, last)
                except _StaleRead as stale:
                    now = self._require(conn, key, full)
                    if now.version == cur.version:
                        raise IntegrityError(
                            f"{self.url}: chunk {stale.args[0]} of {key!r} (version"
                            f" {cur.version}) is missing"
                        ) from None
                    cur = now
                    continue
                if len(parts) == 1:
                    return parts[0][start - first * cs : end - first * cs]
                head = memoryview(parts[0])[start - first * cs :]
                tail = memoryview(parts[-1])[: end - last * cs]
                return b"".join([head, *parts[1:-1], tail])
            raise BackendUnavailableError(f"{self.url}: {key!r} kept changing while being read")

    def _drop_version(self, conn: Session, version: uuid.UUID, layout: Layout) -> None:
        params = ((version, part) for part in range(layout.parts))
        for _ in conn.window("part_drop", params):
            pass

    def _commit(
        self, conn: Session, full: str, version: uuid.UUID, lay: Layout, cur: Current | None
    ) -> Current | None:
        """Compare-and-set the metadata row from ``cur`` (as last read) to ``version``;
        return the version it replaced."""
        b = bucket_of(full)
        params: tuple[Any, ...]
        for _ in range(CAS_ATTEMPTS):
            if cur is None:
                name, params = (
                    "create",
                    (b, full, version, lay.size, lay.chunk_size, lay.part_chunks),
                )
            else:
                name = "replace"
                params = (version, lay.size, lay.chunk_size, lay.part_chunks, b, full, cur.version)
            try:
                applied = conn.run(name, params).one()[0]
            except (cassandra.Timeout, cassandra.OperationTimedOut):
                applied = False  # outcome unknown: a serial read settles it
            if applied:
                return cur
            now = self._current(conn, full, serial=True)
            if now is not None and now.version == version:
                return cur
            cur = now
        raise BackendUnavailableError(f"{self.url}: gave up committing {full!r} under contention")

    def _sweep_rows(self, conn: Session, rows: Iterable[Any], older_than: float) -> int:
        """Reclaim the chunks of intents older than ``older_than`` seconds; return how many."""
        cutoff = time.time() - older_than
        reclaimed = 0
        for full, version, started, size, chunk_size, part_chunks in rows:
            if started.replace(tzinfo=timezone.utc).timestamp() > cutoff:
                continue
            cur = self._current(conn, full, serial=True)
            if cur is None or cur.version != version:  # never committed: its chunks are garbage
                self._drop_version(conn, version, Layout(size, chunk_size, part_chunks))
                reclaimed += 1
                log.info("%s: reclaimed abandoned version %s of %r", self.url, version, full)
            conn.run("intent_drop", (bucket_of(full), full, version))
        return reclaimed

    # -- the contract ----------------------------------------------------------------------

    def get(self, key: str, *, version: str | None = None) -> bytes:
        return self._read(key, None, version)

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        return self._read(key, (start, end), version)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        full = self._full(key)
        with map_errors(self.url, "head", key):
            cur = self._require(self._connection(), key, full)
        check_version(self.url, key, version, str(cur.version))
        return ObjectMeta(key, cur.layout.size, str(cur.version), cur.modified)

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        view = memoryview(data).cast("B")
        with self._writer(key, view.nbytes) as writer:
            writer.write(view)
        assert writer.meta is not None
        return writer.meta

    def open_write(self, key: str) -> ObjectWriter:
        """Streams chunk rows as data comes (a window of ``max_in_flight`` inserts); the
        metadata row is committed on close. See the module docstring."""
        return self._writer(key, None)

    def _writer(self, key: str, size: int | None) -> _ChunkWriter:
        full = self._full(key)
        with map_errors(self.url, "put", key):
            return _ChunkWriter(self, self._connection(write=True), key, full, size)

    def delete(self, key: str) -> None:
        full = self._full(key)
        b = bucket_of(full)
        with map_errors(self.url, "delete", key):
            try:
                conn = self._connection()
            except _NoTables:
                return  # nothing can be there
            pending = [conn.submit("intents_of", (b, full)), conn.submit("head", (b, full))]
            intents, head = [conn.settle(p) for p in pending]
            self._sweep_rows(conn, intents, self.settings.abandon_after)
            cur = _as_current(head.one())
            for _ in range(CAS_ATTEMPTS):
                if cur is None:
                    return
                if conn.run("remove", (b, full, cur.version)).one()[0]:
                    self._drop_version(conn, cur.version, cur.layout)
                    return
                cur = self._current(conn, full, serial=True)
            raise BackendUnavailableError(f"{self.url}: gave up deleting {key!r} under contention")

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectMeta]:
        root = self.settings.root
        lower = root + prefix
        upper = schema.prefix_successor(lower)
        with map_errors(self.url, "list", prefix):
            try:
                conn = self._connection()
            except _NoTables:
                return
            futures = [
                conn.submit("list", (b, lower))
                if upper is None
                else conn.submit("list_to", (b, lower, upper))
                for b in range(schema.META_BUCKETS)
            ]
            # ResultSet.__iter__ restarts the page it is on: hand merge plain generators.
            pages = [_rows(conn.settle(f)) for f in futures]
            for full, size, version, written in heapq.merge(*pages):
                if full.startswith(lower):
                    yield ObjectMeta(full[len(root) :], size, str(version), _seconds(written))

    # -- maintenance -----------------------------------------------------------------------

    def sweep(self, older_than: float | None = None) -> int:
        """Reclaim chunks of puts abandoned more than ``older_than`` seconds ago (default
        ``abandon_after``) anywhere in the keyspace; return the number of versions reclaimed.
        """
        limit = self.settings.abandon_after if older_than is None else older_than
        with map_errors(self.url, "sweep"):
            try:
                conn = self._connection()
            except _NoTables:
                return 0
            return sum(
                self._sweep_rows(conn, conn.run("intents_all", (b,)), limit)
                for b in range(schema.META_BUCKETS)
            )


def _rows(result: ResultSet) -> Iterator[Any]:
    yield from result


def _as_current(row: Any) -> Current | None:
    if row is None:
        return None
    version, size, chunk_size, part_chunks, written = row
    return Current(version, Layout(size, chunk_size, part_chunks), _seconds(written))


def _seconds(writetime: int | None) -> float | None:
    """A CQL ``WRITETIME`` (microseconds since the epoch) in seconds."""
    return None if writetime is None else writetime / 1e6


class _ChunkWriter(ChunkedWriter):
    """One put of a fresh version: chunk rows streamed as data comes, the metadata row
    committed on close (the module docstring has the rules). Used by one thread.

    ``size`` (``put``: known in advance) makes the first intent row exact; a stream of
    unknown size records an upper bound one partition ahead of the chunks instead.
    """

    def __init__(
        self,
        store: CassandraBackend,
        conn: Session,
        key: str,
        full: str,
        size: int | None,
    ):
        s = store.settings
        super().__init__(f"{store.url}: put {key!r}", s.chunk_size)
        self._store, self._conn, self._key, self._full = store, conn, key, full
        self._b, self._version = bucket_of(full), uuid.uuid4()
        self._part_chunks, self._part_bytes = s.part_chunks, s.part_chunks * s.chunk_size
        self._beat_every, self._stale_after = s.abandon_after / 4, s.abandon_after / 2
        self._known = size is not None
        self._chunks = 0  # chunk rows sent
        self._size = 0  # their bytes
        self._inflight: deque[tuple[str, Any, ResponseFuture]] = deque()
        self._state = "open"  # -> "committing" -> "committed" | "discarded"
        # The intent row: acknowledged with bound ``_bound`` (bytes), sent at ``_beat``
        # (monotonic: the last confirmed heartbeat); ``_intent`` is the one in flight.
        self._bound, self._beat = 0, time.monotonic()
        self._intent: tuple[float, int, tuple[str, Any, ResponseFuture]] | None = None
        self._head: Current | None = None
        try:
            # One round trip: earlier intents of this key, the current version, our intent.
            intents = conn.submit("intents_of", (self._b, full))
            head = conn.submit("head", (self._b, full))
            self._send_intent(size if size is not None else 2 * self._part_bytes)
            rows = conn.settle(intents)
            self._head = _as_current(conn.settle(head).one())
            self._settle_intent()
            store._sweep_rows(conn, [r for r in rows if r[1] != self._version], s.abandon_after)
        except BaseException:
            self.abort()
            raise

    # -- the intent row: an upper bound of the chunks written, and a heartbeat ---------------

    def _send_intent(self, bound: int) -> None:
        """Upsert our intent row (``bound`` bytes at most, heartbeat now), not waiting."""
        self._settle_intent()
        sent_at, now = time.monotonic(), datetime.now(timezone.utc)
        row = (self._b, self._full, self._version, now, bound, self.chunk_size, self._part_chunks)
        self._intent = sent_at, bound, self._conn.submit("intent_put", row)

    def _settle_intent(self) -> None:
        if self._intent is not None:
            sent_at, bound, pending = self._intent
            self._intent = None
            self._conn.settle(pending)
            self._beat, self._bound = sent_at, max(self._bound, bound)

    def _check_alive(self) -> None:
        """Raise unless a heartbeat was acknowledged within ``abandon_after / 2``: past
        that a sweeper may have reclaimed our chunks, so the write must not commit."""
        if time.monotonic() - self._beat > self._stale_after:
            self._settle_intent()  # a heartbeat in flight may be recent enough
            if time.monotonic() - self._beat > self._stale_after:
                raise BackendUnavailableError(
                    f"{self.what}: no heartbeat for abandon_after/2"
                    f" ({self._stale_after:g} s); abandoned"
                )

    def _keep_alive(self, part: int) -> None:
        """Before the first chunk row of ``part`` (and every other): the acknowledged
        intent covers ``part`` and is fresh; the next bound or heartbeat goes ahead."""
        covered = -(-self._bound // self._part_bytes)
        if part >= covered:
            self._settle_intent()  # the bound sent ahead
            covered = -(-self._bound // self._part_bytes)
            if part >= covered:
                self._send_intent((part + 1) * self._part_bytes)
                self._settle_intent()
                covered = part + 1
        self._check_alive()
        if self._intent is None:
            if not self._known and part + 1 >= covered:
                self._send_intent((part + 2) * self._part_bytes)
            elif time.monotonic() - self._beat > self._beat_every:
                self._send_intent(self._bound)

    # -- ChunkedWriter ---------------------------------------------------------------------

    def _write_chunk(self, view: memoryview, last: bool) -> None:
        if not view:
            return
        conn = self._conn
        with map_errors(self._store.url, "put", self._key):
            part = self._chunks // self._part_chunks
            self._keep_alive(part)
            if len(self._inflight) >= conn.limit:
                conn.settle(self._inflight.popleft())
            # bytes: the caller may reuse its buffer, and a resent request re-reads it
            params = (self._version, part, self._chunks, bytes(view))
            self._inflight.append(conn.submit("chunk_put", params))
            self._chunks += 1
            self._size += len(view)

    def _finish(self) -> ObjectMeta:
        store, conn = self._store, self._conn
        lay = Layout(self._size, self.chunk_size, self._part_chunks)
        with map_errors(store.url, "put", self._key):
            while self._inflight:
                conn.settle(self._inflight.popleft())
            self._check_alive()
            self._state = "committing"
            replaced = store._commit(conn, self._full, self._version, lay, self._head)
            self._state = "committed"
        try:  # committed: what is left is cleanup, and a failure there is no failed put
            with map_errors(store.url, "put", self._key):
                intent_done = conn.submit("intent_drop", (self._b, self._full, self._version))
                if replaced is not None:
                    store._drop_version(conn, replaced.version, replaced.layout)
                conn.settle(intent_done)
        except Exception as exc:
            log.warning("%s: committed, but cleanup failed: %s", self.what, exc)
        return ObjectMeta(self._key, lay.size, str(self._version))

    def _abort(self) -> None:
        """Drop our chunk rows and intent unless the commit went through (best effort:
        what fails stays covered by the intent row, for a sweep)."""
        if self._state in ("committed", "discarded"):
            return
        committing, self._state = self._state == "committing", "discarded"
        conn = self._conn
        for pending in self._inflight:
            with contextlib.suppress(Exception):
                conn.settle(pending)
        self._inflight.clear()
        with contextlib.suppress(Exception):
            self._settle_intent()
        try:
            with map_errors(self._store.url, "put", self._key):
                if committing:  # outcome unknown: a serial read settles it
                    cur = self._store._current(conn, self._full, serial=True)
                    if cur is not None and cur.version == self._version:
                        self._state = "committed"
                        return
                if self._chunks:
                    lay = Layout(self._size, self.chunk_size, self._part_chunks)
                    self._store._drop_version(conn, self._version, lay)
                conn.run("intent_drop", (self._b, self._full, self._version))
        except Exception as exc:
            log.warning("%s: could not discard the failed write: %s", self.what, exc)
