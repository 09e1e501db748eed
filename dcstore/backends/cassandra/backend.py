"""``cassandra://``: objects as bounded chunks plus a metadata row, on Apache Cassandra 4/5.

Layout: :mod:`dcstore.backends.cassandra.schema`; options:
:mod:`dcstore.backends.cassandra.settings`.

Guarantees (beyond :mod:`dcstore.backends.base`):

* ``put`` records an intent row, writes every chunk under a fresh version id
  (uuid4), then commits the metadata row with a lightweight transaction
  (compare-and-set on the previous version): the commit point. Readers follow
  committed metadata only, so they see the old object or the whole new one.
  The compare-and-set makes the winner of concurrent puts well defined and
  tells each writer exactly which version it replaced; that version's chunk
  partitions are deleted right after the commit.
* A reader that loses a race with an overwrite (its version's chunks were just
  deleted) re-reads the metadata and starts again; a chunk missing from the
  *current* version is :class:`IntegrityError`.
* A put that fails before its commit deletes its chunks at once. A put whose
  process dies leaves its intent row: the next ``put``/``delete`` of that key,
  or :meth:`CassandraBackend.sweep` (``dcstore maintenance sweep URL``), deletes
  those chunks once the intent is older than ``abandon_after`` (1 h). A writer
  that has not committed within ``abandon_after / 2`` gives up, so a slow writer
  never commits chunks a sweeper removed.
* Chunk requests use prepared statements, token-aware routing and
  ``execute_async`` with at most ``max_in_flight`` requests outstanding per backend
  (shared by its threads; :mod:`dcstore.backends.cassandra.session`);
  ``get_range`` fetches only the chunks it overlaps.
* Commits need ``serial_consistency`` (a quorum of replicas); reads and chunk
  writes use ``read_consistency`` / ``write_consistency``.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, NamedTuple

import cassandra
from cassandra.cluster import ResultSet
from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range, check_version
from dcstore.backends.cassandra import schema
from dcstore.backends.cassandra.errors import map_errors
from dcstore.backends.cassandra.schema import Layout, bucket_of
from dcstore.backends.cassandra.session import Session, connect
from dcstore.backends.cassandra.settings import CassandraSettings
from dcstore.backends.keys import validate_key, validate_prefix
from dcstore.backends.options import Options, ParsedUrl
from dcstore.errors import BackendUnavailableError, IntegrityError, NotFoundError

log = logging.getLogger(__name__)

READ_ATTEMPTS = 5  # restarts when a concurrent overwrite deletes the version being read
CAS_ATTEMPTS = 32  # compare-and-set rounds under contention


class Current(NamedTuple):
    """The committed version of a key."""

    version: uuid.UUID
    layout: Layout


class _StaleRead(Exception):
    """A chunk of the version being read is gone (overwritten meanwhile)."""


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

    def _connection(self) -> Session:
        conn = self._conn
        if conn is not None and conn.pid == os.getpid():
            return conn
        with self._lock:
            if self._conn is None or self._conn.pid != os.getpid():
                # a parent's cluster (after fork) is abandoned, never shut down
                self._conn = connect(self.settings, self.url)
            return self._conn

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
        return ObjectMeta(key, cur.layout.size, str(cur.version))

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        full = self._full(key)
        s = self.settings
        view = memoryview(data).cast("B")
        lay = Layout(view.nbytes, s.chunk_size, s.part_chunks)
        version, b = uuid.uuid4(), bucket_of(full)
        with map_errors(self.url, "put", key):
            conn = self._connection()
            t0 = time.monotonic()
            started = datetime.now(timezone.utc)
            # One round trip: earlier intents of this key, the current version, our intent.
            pending = [
                conn.submit("intents_of", (b, full)),
                conn.submit("head", (b, full)),
                conn.submit("intent_put", (b, full, version, started, *_layout_row(lay))),
            ]
            intents, head, _ = [conn.settle(p) for p in pending]
            self._sweep_rows(conn, [r for r in intents if r[1] != version], s.abandon_after)
            committed = False
            try:
                cs = s.chunk_size
                params = (
                    (version, lay.part_of(i), i, view[i * cs : (i + 1) * cs])
                    for i in range(lay.chunks)
                )
                for _ in conn.window("chunk_put", params):
                    pass
                if time.monotonic() - t0 > s.abandon_after / 2:
                    raise BackendUnavailableError(
                        f"{self.url}: put {key!r} took longer than abandon_after/2; abandoned"
                    )
                replaced = self._commit(conn, full, version, lay, _as_current(head.one()))
                committed = True
            finally:
                if not committed:
                    self._discard(conn, b, full, version, lay)
            intent_done = conn.submit("intent_drop", (b, full, version))
            if replaced is not None:
                self._drop_version(conn, replaced.version, replaced.layout)
            conn.settle(intent_done)
        return ObjectMeta(key, lay.size, str(version))

    def _discard(self, conn: Session, b: int, full: str, version: uuid.UUID, lay: Layout) -> None:
        """Best effort after a failed put: remove its chunks unless it might have committed."""
        try:
            cur = self._current(conn, full, serial=True)
            if cur is None or cur.version != version:
                self._drop_version(conn, version, lay)
                conn.run("intent_drop", (b, full, version))
        except Exception as exc:  # the intent row stays; a later sweep reclaims the chunks
            log.warning("%s: could not discard failed put of %r: %s", self.url, full, exc)

    def delete(self, key: str) -> None:
        full = self._full(key)
        b = bucket_of(full)
        with map_errors(self.url, "delete", key):
            conn = self._connection()
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
            conn = self._connection()
            futures = [
                conn.submit("list", (b, lower))
                if upper is None
                else conn.submit("list_to", (b, lower, upper))
                for b in range(schema.META_BUCKETS)
            ]
            # ResultSet.__iter__ restarts the page it is on: hand merge plain generators.
            pages = [_rows(conn.settle(f)) for f in futures]
            for full, size, version in heapq.merge(*pages):
                if full.startswith(lower):
                    yield ObjectMeta(full[len(root) :], size, str(version))

    # -- maintenance -----------------------------------------------------------------------

    def sweep(self, older_than: float | None = None) -> int:
        """Reclaim chunks of puts abandoned more than ``older_than`` seconds ago (default
        ``abandon_after``) anywhere in the keyspace; return the number of versions reclaimed.
        """
        limit = self.settings.abandon_after if older_than is None else older_than
        with map_errors(self.url, "sweep"):
            conn = self._connection()
            return sum(
                self._sweep_rows(conn, conn.run("intents_all", (b,)), limit)
                for b in range(schema.META_BUCKETS)
            )


def _rows(result: ResultSet) -> Iterator[Any]:
    yield from result


def _as_current(row: Any) -> Current | None:
    if row is None:
        return None
    version, size, chunk_size, part_chunks = row
    return Current(version, Layout(size, chunk_size, part_chunks))


def _layout_row(lay: Layout) -> tuple[int, int, int]:
    return lay.size, lay.chunk_size, lay.part_chunks
