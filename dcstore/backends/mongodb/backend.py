"""``mongodb://``: objects stored as GridFS files, readable by ``mongofiles`` and any GridFS driver.

URL: ``mongodb://[user[:password]@]host[:port][,host...]/DATABASE?bucket=fs&chunk_size=4194304``
plus the driver options in :data:`DRIVER_OPTIONS` (MongoDB's own names: ``w``,
``readPreference``, ``replicaSet``, ``tls``, ``authSource``, ...). The database
defaults to ``dcstore``, the bucket to ``fs`` (GridFS's default), so objects live
in ``<bucket>.files`` and ``<bucket>.chunks``.

Guarantees (beyond :mod:`dcstore.backends.base`):

* Layout is standard GridFS: one ``files`` document per revision (``_id``,
  ``filename`` = key, ``length``, ``chunkSize``, ``uploadDate``, ``metadata``)
  and chunk documents ``{_id, files_id, n, data}``. dcstore's chunk ``_id`` is
  ``"<files_id>.<n>"`` (see :mod:`dcstore.backends.mongodb.gc`) so it reads and
  deletes chunks by ``_id``; objects written by other GridFS tools are read with
  the standard ``(files_id, n)`` query (any chunk size).
* ``put`` and :meth:`MongoBackend.open_write` share one upload path: chunk documents
  go out ``BATCH_BYTES`` per ``insert_many`` under a fresh ``files_id`` as data
  arrives (a stream of unknown size holds about one batch plus one chunk in memory)
  and the ``files`` document is inserted last: that insert is the commit point.
  Readers resolve a key to its newest committed revision (``uploadDate`` then
  ``_id``, both descending), so they see the old object or the whole new one. A new
  revision is dated after the revision it replaces even if clocks disagree; the
  revisions it replaced are deleted after the commit. An empty object has no chunk.
* An interrupted upload (a failed insert, ``abort()``, an exception in the writer's
  ``with`` block, a writer garbage-collected unclosed) leaves the previous revision
  current and deletes the chunks it wrote at once. A failed ``files`` insert may still
  have committed, so its chunks stay. Chunks left by a killed process carry no
  ``files`` document and are removed by :meth:`MongoBackend.sweep` once idle for
  longer than its grace period.
* Each chunk dcstore inserts is stamped (``dcstore_written``) and a writer re-stamps
  its newest chunk on the first write :data:`TOUCH_S` (60 s) after the last stamp, so
  ``sweep`` judges an upload by its latest activity, not its start: a stream that
  runs for hours is never reclaimed while it is written to, if the grace period
  exceeds ``TOUCH_S`` plus its longest pause between writes (the default hour: any
  pause under 59 minutes).
  A writer idle for longer may be reclaimed: then ``close()`` raises
  :class:`IntegrityError` rather than commit a revision without its chunks.
* ``get_range`` fetches only the chunks that overlap the range.
* The version token is the ``_id`` (ObjectId) of the current revision; ``modified``
  is its ``uploadDate`` (milliseconds, the writer's clock, after the revision replaced).
* Unreachable servers raise :class:`BackendUnavailableError` after
  ``serverSelectionTimeoutMS`` (3 s by default, so retries stay quick).

Chunk cursors ask for batches of at most 16 MiB: servers that do not cap batch
size in bytes themselves (FerretDB v1) would otherwise exceed the 48 MB message
limit on large files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote, urlencode

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection

from dcstore.backends.base import (
    Backend,
    Buffer,
    ObjectMeta,
    ObjectWriter,
    check_range,
    check_version,
)
from dcstore.backends.keys import validate_key, validate_prefix
from dcstore.backends.mongodb.config import (
    DEFAULT_DRIVER_OPTIONS,
    DRIVER_OPTIONS,
    SECRET_OPTIONS,
    read_driver_options,
)
from dcstore.backends.mongodb.errors import map_errors
from dcstore.backends.mongodb.gc import (
    MARK,
    REVISION_FIELDS,
    WRITTEN,
    addressed,
    chunk_id,
    delete_chunks,
    drop_revisions,
    remove_orphans,
    upload_date,
)
from dcstore.backends.mongodb.reader import CursorReader, missing_chunk
from dcstore.backends.objectio import ChunkedWriter, ObjectReader
from dcstore.backends.options import Options, ParsedUrl
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    IntegrityError,
    NotFoundError,
)

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_CHUNK_SIZE = 4 * MiB
MAX_CHUNK_SIZE = 15 * MiB  # a chunk document must stay under the 16 MiB BSON limit
BATCH_BYTES = 16 * MiB  # bytes per reply batch and per insert_many call
READ_ATTEMPTS = 5  # re-resolutions when a concurrent overwrite removes the revision being read
TOUCH_S = 60.0
"""A writer re-stamps its upload (see ``sweep``) on the first write this long after the last."""


class _Conn:
    """One process's client and collections (recreated after fork or close)."""

    def __init__(self, client: MongoClient[Any], files: Collection[Any], chunks: Collection[Any]):
        self.pid = os.getpid()
        self.client = client
        self.files = files
        self.chunks = chunks
        self.indexed = False


class MongoBackend(Backend):
    """Objects as GridFS files in ``database.<bucket>.files`` / ``.chunks``; thread-safe."""

    def __init__(
        self,
        hosts: str | list[str] = "127.0.0.1:27017",
        database: str = "dcstore",
        bucket: str = "fs",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        username: str | None = None,
        password: str | None = None,
        scheme: str = "mongodb",
        driver_options: Mapping[str, Any] | None = None,
    ):
        if not 1024 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(f"chunk_size must be 1 KiB..15 MiB, got {chunk_size}")
        unknown = set(driver_options or {}) - set(DRIVER_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown MongoDB driver option(s): {', '.join(sorted(unknown))}")
        if not database or any(c in database for c in '/\\. "$\x00'):
            raise ConfigError(f"invalid MongoDB database name {database!r}")
        if not bucket or any(c in bucket for c in "$/\x00"):
            raise ConfigError(f"invalid GridFS bucket name {bucket!r} (no '$', '/' or NUL)")
        self.hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        self.database = database
        self.bucket = bucket
        self.chunk_size = chunk_size
        self.scheme = scheme
        self.username = username
        self._password = password
        self._given_options = dict(driver_options or {})
        self.driver_options = {**DEFAULT_DRIVER_OPTIONS, **self._given_options}
        self._lock = threading.Lock()
        self._conn: _Conn | None = None
        self._url = self._render_url()

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> MongoBackend:
        if not url.hosts:
            raise ConfigError("mongodb:// URL needs a host, e.g. mongodb://127.0.0.1:27017/dcstore")
        return cls(
            url.hosts,
            url.path.strip("/") or "dcstore",
            _bucket(options),
            chunk_size=options.size("chunk_size", DEFAULT_CHUNK_SIZE),
            username=url.username,
            password=url.password,
            scheme=url.scheme,
            driver_options=read_driver_options(options),
        )

    @property
    def url(self) -> str:
        return self._url

    def _render_url(self) -> str:
        query: dict[str, Any] = {"bucket": self.bucket}
        if self.chunk_size != DEFAULT_CHUNK_SIZE:
            query["chunk_size"] = self.chunk_size
        for name, value in sorted(self._given_options.items()):
            if name not in SECRET_OPTIONS:
                query[name] = str(value).lower() if isinstance(value, bool) else value
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        return f"{self.scheme}://{user}{','.join(self.hosts)}/{self.database}?{urlencode(query)}"

    # -- connection ------------------------------------------------------------------

    def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.pid == os.getpid():
            return conn
        with self._lock:
            if self._conn is None or self._conn.pid != os.getpid():
                # After fork the parent's client is unusable: leave it, open a new one.
                with self._errors("connect"):
                    try:
                        client: MongoClient[Any] = MongoClient(
                            f"{self.scheme}://{','.join(self.hosts)}/",
                            username=self.username,
                            password=self._password,
                            **self.driver_options,
                        )
                    except ValueError as exc:  # pymongo checks option values so
                        raise ConfigError(f"{self.url}: bad MongoDB option ({exc})") from None
                    db = client[self.database]
                    self._conn = _Conn(
                        client, db[f"{self.bucket}.files"], db[f"{self.bucket}.chunks"]
                    )
            return self._conn

    def _writable(self) -> _Conn:
        """The connection, with the GridFS indexes created once per process."""
        conn = self._connection()
        if not conn.indexed:
            with self._errors("create indexes"):
                conn.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
                conn.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
            conn.indexed = True
        return conn

    def _errors(self, op: str, key: str = "") -> contextlib.AbstractContextManager[None]:
        return map_errors(self.url, op, key)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and conn.pid == os.getpid():
            conn.client.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_conn"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- reads -----------------------------------------------------------------------

    def _current(self, conn: _Conn, key: str, op: str = "head") -> dict[str, Any]:
        with self._errors(op, key):
            doc = conn.files.find_one(
                {"filename": key},
                projection=REVISION_FIELDS,
                sort=[("uploadDate", DESCENDING), ("_id", DESCENDING)],
            )
        if doc is None:
            raise NotFoundError(f"{self.url}: no object {key!r}")
        return cast("dict[str, Any]", doc)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        validate_key(key)
        doc = self._current(self._connection(), key)
        check_version(self.url, key, version, str(doc["_id"]))
        return _meta(key, doc)

    def get(self, key: str, *, version: str | None = None) -> bytes:
        return self._read(key, 0, None, version)

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        return self._read(key, start, end, version)

    def open_read(self, key: str, *, version: str | None = None) -> ObjectReader:
        """One revision. Chunks dcstore wrote are read by ``_id`` point lookups (one
        index read per chunk on every server, concurrent read-ahead threads run in
        parallel); a revision another GridFS tool wrote streams through one cursor over
        its chunks (:mod:`dcstore.backends.mongodb.reader`)."""
        validate_key(key)
        conn = self._connection()
        doc = self._current(conn, key, "get")
        check_version(self.url, key, version, str(doc["_id"]))
        what = f"{self.url}: {key!r}"
        if addressed(doc):
            return ObjectReader(
                _meta(key, doc),
                lambda start, end: self._pinned_range(conn, key, doc, start, end),
                what=what,
            )
        return CursorReader(
            conn.files,
            conn.chunks,
            doc,
            _meta(key, doc),
            batch_bytes=BATCH_BYTES,
            errors=lambda: self._errors("get", key),
            what=what,
        )

    def _pinned_range(
        self, conn: _Conn, key: str, doc: Mapping[str, Any], start: int, end: int
    ) -> bytes:
        """Bytes ``[start, end)`` of revision ``doc``, which an open reader holds."""
        data = self._read_chunks(conn, key, doc, start, end)
        if data is None:
            cs = int(doc["chunkSize"])
            missing_chunk(
                conn.files,
                doc,
                f"chunks {start // cs}-{(end - 1) // cs}",
                lambda: self._errors("get", key),
                f"{self.url}: {key!r}",
            )
        return data

    def _read(self, key: str, start: int, end: int | None, version: str | None) -> bytes:
        validate_key(key)
        conn = self._connection()
        for _ in range(READ_ATTEMPTS):
            doc = self._current(conn, key, "get")
            check_version(self.url, key, version, str(doc["_id"]))
            size = int(doc["length"])
            stop = size if end is None else end
            check_range(key, start, stop, size)
            if start == stop:
                return b""
            data = self._read_chunks(conn, key, doc, start, stop)
            if data is not None:
                return data
            # Chunks missing: usually a concurrent overwrite or delete removed this
            # revision after we resolved it (or a lagging secondary answered): try again.
            with self._errors("get", key):
                vanished = conn.files.find_one({"_id": doc["_id"]}, {"_id": 1}) is None
        if vanished:
            raise BackendUnavailableError(
                f"{self.url}: {key!r} was replaced {READ_ATTEMPTS} times while being read"
            )
        raise IntegrityError(
            f"{self.url}: object {key!r} revision {doc['_id']} has missing or truncated chunks"
        )

    def _read_chunks(
        self, conn: _Conn, key: str, doc: Mapping[str, Any], start: int, end: int
    ) -> bytes | None:
        """Bytes ``[start, end)`` of revision ``doc``; None if a chunk is missing or short."""
        size, cs = int(doc["length"]), int(doc["chunkSize"])
        first, last = start // cs, (end - 1) // cs
        pieces: list[Any] = []
        with self._errors("get", key):
            if addressed(doc):
                # One indexed point lookup per chunk: served without scans by every server.
                for n in range(first, last + 1):
                    chunk = conn.chunks.find_one({"_id": chunk_id(doc["_id"], n)}, {"data": 1})
                    if chunk is None or len(chunk["data"]) != min(cs, size - n * cs):
                        return None
                    pieces.append(chunk["data"])
            else:
                # Written by another GridFS tool: the standard (files_id, n) range query.
                cursor = conn.chunks.find(
                    {"files_id": doc["_id"], "n": {"$gte": first, "$lte": last}},
                    projection={"_id": 0, "n": 1, "data": 1},
                    sort=[("n", ASCENDING)],
                    batch_size=max(1, BATCH_BYTES // cs - 1),
                )
                for expected, chunk in enumerate(cursor, start=first):
                    data = chunk["data"]
                    if chunk["n"] != expected or len(data) != min(cs, size - expected * cs):
                        break
                    pieces.append(data)
                cursor.close()
        if len(pieces) != last - first + 1:
            return None
        head_cut, last_keep = start - first * cs, end - last * cs
        if len(pieces) == 1:
            return bytes(pieces[0][head_cut:last_keep])
        views = [memoryview(p) for p in pieces]
        views[0] = views[0][head_cut:]
        views[-1] = views[-1][:last_keep]
        return b"".join(views)

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectMeta]:
        conn = self._connection()
        previous = None
        with self._errors("list", prefix):
            cursor = conn.files.find(
                {"filename": {"$gte": prefix}} if prefix else {},
                projection={"filename": 1, "length": 1, "uploadDate": 1},
                sort=[("filename", ASCENDING), ("uploadDate", DESCENDING), ("_id", DESCENDING)],
                batch_size=1000,
            )
            try:
                for doc in cursor:
                    name = doc["filename"]
                    if not isinstance(name, str) or not name.startswith(prefix):
                        if isinstance(name, str) and name > prefix:
                            break
                        continue
                    if name == previous:
                        continue  # an older revision of the key just yielded
                    previous = name
                    yield _meta(name, doc)
            finally:
                cursor.close()

    # -- writes ----------------------------------------------------------------------

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        validate_key(key)
        view = memoryview(data).cast("B")
        upload = _Upload(self, self._writable(), key)
        try:
            for offset in range(0, view.nbytes, self.chunk_size):
                upload.add(view[offset : offset + self.chunk_size])
            return upload.commit()
        except BaseException:
            upload.discard()
            raise

    def open_write(self, key: str) -> ObjectWriter:
        """Inserts chunk documents as data arrives (``BATCH_BYTES`` per insert, so memory
        stays about one batch plus one chunk), commits with the ``files`` document on
        close; an abort or a failure deletes the chunks written so far."""
        validate_key(key)
        return _MongoWriter(_Upload(self, self._writable(), key))

    def _revisions(self, conn: _Conn, key: str) -> tuple[list[dict[str, Any]], dt.datetime]:
        """The committed revisions of ``key`` and an ``uploadDate`` later than all of them:
        now (BSON millisecond precision), or 1 ms after the newest if clocks disagree."""
        revisions = list(conn.files.find({"filename": key}, REVISION_FIELDS))
        now = dt.datetime.now(dt.timezone.utc)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        for doc in revisions:
            now = max(now, upload_date(doc) + dt.timedelta(milliseconds=1))
        return revisions, now

    def _drop_replaced(self, conn: _Conn, key: str, replaced: list[dict[str, Any]]) -> None:
        """Delete the revisions the new one replaced (best effort: the put is committed)."""
        try:
            with self._errors("put (removing replaced revisions)", key):
                drop_revisions(conn.files, conn.chunks, replaced)
        except DcstoreError as exc:
            # Leftovers are invisible; the next put of the key or sweep drops them.
            log.warning("%s; replaced revisions stay until sweep", exc)

    def _drop_chunks(self, conn: _Conn, ids: list[str]) -> None:
        try:
            with self._errors("put (removing chunks of a failed upload)"):
                delete_chunks(conn.chunks, ids)
        except DcstoreError as exc:  # never hide the error that failed the upload
            log.warning("%s; orphan chunks stay until sweep", exc)

    def delete(self, key: str) -> None:
        validate_key(key)
        conn = self._connection()
        with self._errors("delete", key):
            revisions = list(conn.files.find({"filename": key}, REVISION_FIELDS))
            drop_revisions(conn.files, conn.chunks, revisions)

    # -- maintenance -----------------------------------------------------------------

    def sweep(self, older_than: float | None = None) -> int:
        """Delete chunks no ``files`` document refers to, and superseded revisions.

        Only uploads idle for more than ``older_than`` seconds (default an hour) are
        touched: an upload counts as idle when it started that long ago *and* its newest
        chunk stamp is that old (writers refresh it every :data:`TOUCH_S` while written
        to), so uploads in flight are safe whenever ``older_than`` exceeds ``TOUCH_S``
        plus the writer's longest pause between writes. Returns the number of revisions
        removed.
        """
        conn = self._writable()
        with self._errors("sweep"):
            return remove_orphans(
                conn.files, conn.chunks, 3600.0 if older_than is None else older_than
            )


class _Upload:
    """One revision of ``key`` being written, shared by ``put`` and ``open_write``: chunk
    documents (copied to bytes) inserted ``BATCH_BYTES`` at a time under a fresh
    ``files_id``, each stamped with :data:`WRITTEN`; committed by the ``files`` document.
    """

    def __init__(self, store: MongoBackend, conn: _Conn, key: str):
        self.store, self.conn, self.key = store, conn, key
        self.files_id = ObjectId()
        self.chunk_size = store.chunk_size
        self.per_call = max(1, BATCH_BYTES // self.chunk_size)
        self.size = 0
        self.count = 0  # chunks numbered so far: inserted, being inserted or pending
        self.pending: list[dict[str, Any]] = []
        self.started = self.touched = time.monotonic()
        self.committing = False
        self.discarded = False

    def add(self, view: memoryview) -> None:
        """Take one chunk (``chunk_size`` bytes, but for the last); inserts a full batch."""
        n = self.count
        self.pending.append(
            {
                "_id": chunk_id(self.files_id, n),
                "files_id": self.files_id,
                "n": n,
                "data": bytes(view),
            }
        )
        self.count += 1
        self.size += view.nbytes
        if len(self.pending) >= self.per_call:
            self.flush()

    def flush(self) -> None:
        """Insert the pending chunks, stamped now."""
        if not self.pending:
            return
        docs, self.pending = self.pending, []
        stamp = _utcnow()
        for doc in docs:
            doc[WRITTEN] = stamp
        with self.store._errors("put", self.key):
            self.conn.chunks.insert_many(docs, ordered=True)
        self.touched = time.monotonic()

    def keep_alive(self) -> None:
        """Refresh the upload's stamp if it is :data:`TOUCH_S` old (called on every write):
        insert the pending chunks, or re-stamp the newest inserted one."""
        if time.monotonic() - self.touched < TOUCH_S:
            return
        if self.pending:
            self.flush()
        elif self.count:
            with self.store._errors("put", self.key):
                self.conn.chunks.update_one(
                    {"_id": chunk_id(self.files_id, self.count - 1)},
                    {"$set": {WRITTEN: _utcnow()}},
                )
            self.touched = time.monotonic()

    def commit(self) -> ObjectMeta:
        """Insert what is pending, then the ``files`` document (the commit point), then
        drop the revisions it replaced."""
        store, conn, key = self.store, self.conn, self.key
        self.flush()
        with store._errors("put", key):
            # Long enough for a sweep to have judged it abandoned (a writer idle for longer
            # than its older_than)? Then never commit a revision without its chunks.
            long = self.count and time.monotonic() - self.started > TOUCH_S
            if (
                long
                and conn.chunks.find_one({"_id": chunk_id(self.files_id, 0)}, {"_id": 1}) is None
            ):
                raise IntegrityError(
                    f"{store.url}: upload of {key!r} was reclaimed by sweep while idle"
                )
            replaced, upload = store._revisions(conn, key)
        # Commit point. If this raises, the revision may or may not be committed, so its
        # chunks stay (discard() keeps them); sweep deletes them if nothing refers to them.
        self.committing = True
        with store._errors("put", key):
            conn.files.insert_one(
                {
                    "_id": self.files_id,
                    "length": self.size,
                    "chunkSize": self.chunk_size,
                    "uploadDate": upload,
                    "filename": key,
                    "metadata": {MARK: True},
                }
            )
        store._drop_replaced(conn, key, replaced)
        return ObjectMeta(key, self.size, str(self.files_id), upload.timestamp())

    def discard(self) -> None:
        """Delete the chunks of an upload that did not reach its commit point (once)."""
        self.pending = []
        if self.committing or self.discarded:
            return
        self.discarded = True
        if self.count:
            ids = [chunk_id(self.files_id, n) for n in range(self.count)]
            self.store._drop_chunks(self.conn, ids)


class _MongoWriter(ChunkedWriter):
    """:meth:`MongoBackend.open_write`: whole chunks go to an :class:`_Upload`."""

    def __init__(self, upload: _Upload):
        super().__init__(f"{upload.store.url}: put {upload.key!r}", upload.chunk_size)
        self._upload = upload

    def _write(self, view: memoryview) -> None:
        self._upload.keep_alive()
        super()._write(view)

    def _write_chunk(self, view: memoryview, last: bool) -> None:
        if view:  # an empty object has no chunk
            self._upload.add(view)

    def _finish(self) -> ObjectMeta:
        return self._upload.commit()

    def _abort(self) -> None:
        self._upload.discard()


def _meta(key: str, doc: Mapping[str, Any]) -> ObjectMeta:
    """The metadata of the revision ``doc`` (a ``files`` document)."""
    return ObjectMeta(key, int(doc["length"]), str(doc["_id"]), upload_date(doc).timestamp())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _bucket(options: Options) -> str:
    """The ``bucket`` option: default ``fs`` (GridFS's), never empty."""
    bucket = options.text("bucket", "fs")
    if not bucket:
        raise ConfigError("bucket= is empty: name a GridFS bucket, or leave the option out (fs)")
    return bucket
