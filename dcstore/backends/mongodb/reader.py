"""One GridFS revision written by another tool, read through one cursor
(:meth:`MongoBackend.open_read`; revisions dcstore wrote are read by ``_id`` instead).

Ranges asked for in order continue one query over the revision's chunks (the standard
``(files_id, n)`` query, sorted by ``n``, in batches of at most ``BATCH_BYTES``) instead
of one query per chunk: a round trip per batch on any server, and on a server that
scans a collection for every query but lookups by ``_id`` (FerretDB v1's SQLite handler)
one scan per stream instead of one per chunk.

Read-ahead threads ask for ranges in nearly sequential order but take turns in any
order, so:

* a cursor opens at the first chunk of the lowest range waiting for its turn, not only
  the one whose turn it is (two threads starting a stream open one cursor, not two);
* chunks passed on the way to a range ahead are kept for the range behind it, and so is
  a range's first chunk when it starts inside it and a range behind is waiting (that
  one ends there), at most ``STASH_BYTES`` in all, the lowest dropped first.

A range behind the cursor that the stash does not hold, or one further ahead than the
stash could hold, opens a new cursor there. Reads of one reader take turns (one cursor
is one stream). A chunk that is missing or short means the revision was deleted
meanwhile (:class:`VersionChangedError`) or is damaged (:class:`IntegrityError`).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from pymongo import ASCENDING

from dcstore.backends.base import ObjectMeta
from dcstore.backends.objectio import ObjectReader
from dcstore.errors import IntegrityError, VersionChangedError

STASH_BYTES = 16 << 20
"""Chunks kept for ranges behind the cursor (read-ahead asks out of order by a range or two)."""


class CursorReader(ObjectReader):
    """Ranges of revision ``doc`` from one cursor over its chunks (see the module doc)."""

    def __init__(
        self,
        files: Any,
        chunks: Any,
        doc: Mapping[str, Any],
        meta: ObjectMeta,
        *,
        batch_bytes: int,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
        what: str,
    ):
        self._files, self._chunks, self._doc = files, chunks, doc
        self._errors = errors
        self._chunk_size = int(doc["chunkSize"])
        self._batch = max(1, batch_bytes // self._chunk_size - 1)
        self._stash_chunks = max(2, STASH_BYTES // self._chunk_size)
        self._lock = threading.Lock()
        self._waiting: Counter[int] = Counter()  # first chunks of ranges waiting for the lock
        self._waiting_lock = threading.Lock()
        self._cursor: Any = None
        self._next = 0
        self._stash: dict[int, bytes] = {}
        super().__init__(meta, self._range, what=what, on_close=self._drop_cursor)

    def _range(self, start: int, end: int) -> bytes:
        cs = self._chunk_size
        first, last = start // cs, (end - 1) // cs
        self._queue(first, +1)
        queued = True
        try:
            with self._lock:
                self._queue(first, -1)
                queued = False
                try:
                    pieces = [self._chunk(n) for n in range(first, last + 1)]
                except BaseException:
                    self._drop_cursor()
                    raise
                if start % cs and self._waiting_below(first):  # it may end inside
                    self._keep(first, pieces[0])
                if end % cs and end < self.size:  # the next range may start inside it
                    self._keep(last, pieces[-1])
        finally:
            if queued:
                self._queue(first, -1)
        if len(pieces) == 1:
            return pieces[0][start - first * cs : end - first * cs]
        views = [memoryview(p) for p in pieces]
        views[0] = views[0][start - first * cs :]
        views[-1] = views[-1][: end - last * cs]
        return b"".join(views)

    def _chunk(self, n: int) -> bytes:
        kept = self._stash.pop(n, None)
        if kept is not None:
            return kept
        if self._cursor is None or not self._next <= n < self._next + self._stash_chunks:
            self._open(self._lowest_waiting(n))
        while True:
            got, data = self._pull()
            if got == n:
                return data
            self._keep(got, data)  # passed on the way: for the range behind this one

    def _queue(self, first: int, change: int) -> None:
        with self._waiting_lock:
            self._waiting[first] += change
            if not self._waiting[first]:
                del self._waiting[first]

    def _waiting_below(self, n: int) -> bool:
        with self._waiting_lock:
            return any(w < n for w in self._waiting)

    def _lowest_waiting(self, n: int) -> int:
        """Where a cursor for chunk ``n`` opens: at the first chunk of a range waiting
        for its turn a little behind ``n`` (within what the stash holds), else at ``n``."""
        with self._waiting_lock:
            behind = [w for w in self._waiting if n - self._stash_chunks < w < n]
        return min([n, *(w for w in behind if w not in self._stash)])

    def _keep(self, n: int, data: bytes) -> None:
        self._stash[n] = data
        while len(self._stash) > self._stash_chunks:
            del self._stash[min(self._stash)]

    def _open(self, n: int) -> None:
        self._drop_cursor()
        with self._errors():
            self._cursor = self._chunks.find(
                {"files_id": self._doc["_id"], "n": {"$gte": n}},
                projection={"_id": 0, "n": 1, "data": 1},
                sort=[("n", ASCENDING)],
                batch_size=self._batch,
            )
        self._next = n

    def _pull(self) -> tuple[int, bytes]:
        n = self._next
        with self._errors():
            chunk = next(self._cursor, None)
        want = min(self._chunk_size, self.size - n * self._chunk_size)
        if chunk is None or chunk["n"] != n or len(chunk["data"]) != want:
            self._missing(n)
        self._next = n + 1
        return n, bytes(chunk["data"])

    def _missing(self, n: int) -> NoReturn:
        missing_chunk(self._files, self._doc, f"chunk {n}", self._errors, self.what)

    def _drop_cursor(self) -> None:
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(Exception):
                cursor.close()


def missing_chunk(
    files: Any,
    doc: Mapping[str, Any],
    where: str,
    errors: Callable[[], contextlib.AbstractContextManager[None]],
    what: str,
) -> NoReturn:
    """Raise for a chunk of revision ``doc`` (``where``) missing or short:
    :class:`VersionChangedError` if the revision was deleted meanwhile (replaced), else
    :class:`IntegrityError`."""
    with errors():
        gone = files.find_one({"_id": doc["_id"]}, {"_id": 1}) is None
    if gone:
        raise VersionChangedError(f"{what}: revision {doc['_id']} was replaced while being read")
    raise IntegrityError(f"{what}: revision {doc['_id']} has a missing or short chunk ({where})")
