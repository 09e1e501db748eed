"""Streaming objects: a file-like writer committed atomically, a seekable ranged reader.

:meth:`Backend.open_write` returns an :class:`ObjectWriter` and :meth:`Backend.open_read`
an :class:`ObjectReader`; ``put``/``get`` are conveniences on top of the same stores.

Guarantees:

* A writer commits on ``close()`` (or at the end of a ``with`` block) and nothing is
  visible before: readers see the old object or the whole new one, never a part.
  ``abort()``, a ``with`` block left by an exception, or a writer garbage-collected
  without ``close()`` discards the write; what a killed process leaves behind is
  reclaimed by the store's ``sweep``.
* ``write`` copies or sends what it is given before it returns: the caller may reuse
  its buffer at once. Memory stays bounded by a few chunks, whatever the object's size.
* A reader is one version of the object (``reader.version``): if that version is
  replaced while it is read, a read raises :class:`VersionChangedError` (or still
  returns that version, where the store keeps it, e.g. an open local file), never a
  mix of two versions. Reads are ranged: memory stays bounded by one block.
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from dcstore.errors import DcstoreError, IntegrityError

if TYPE_CHECKING:
    from typing import Self

    from dcstore.backends.base import Buffer, ObjectMeta

__all__ = [
    "ChunkedWriter",
    "CommitOnExit",
    "ForwardingWriter",
    "MemoryWriter",
    "ObjectReader",
    "ObjectWriter",
]

READ_BLOCK_BYTES = 8 << 20
"""A reader fetches at least this much (rounded to the store's read alignment) per request."""


class CommitOnExit:
    """A ``with`` block that commits (``close()``) when it ends normally and discards
    (``abort()``) when it ends by an exception: dcstore's atomic writers."""

    if TYPE_CHECKING:  # what a subclass provides (not defined here: io's close stays reachable)

        def close(self) -> object: ...

        def abort(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ObjectWriter(CommitOnExit, io.RawIOBase):
    """One atomic write of one object; see the module docstring."""

    meta: ObjectMeta | None
    """The committed object's metadata, set by a successful ``close()``."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.meta = None
        self._written = 0
        self._expected: int | None = None

    # -- what a store implements ----------------------------------------------------------

    @abc.abstractmethod
    def _write(self, view: memoryview) -> None:
        """Take ``view`` (non-empty); copy or send it before returning."""

    @abc.abstractmethod
    def _commit(self) -> ObjectMeta:
        """Make the object visible atomically; return its metadata."""

    @abc.abstractmethod
    def _abort(self) -> None:
        """Discard the write (idempotent, safe after a failed ``_commit``)."""

    # -- the file-like face ----------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError(f"{self.what}: write to a closed writer")
        view = memoryview(data).cast("B")
        if view:
            try:
                self._write(view)
            except BaseException:
                self.abort()
                raise
            self._written += len(view)
        return len(view)

    def expect_size(self, size: int) -> None:
        """Announce the object's total size (``put_stream`` does, before the first write).
        A writer may then send at once what it would otherwise hold back until it knew
        whether more follows, and ``close()`` commits nothing unless exactly ``size``
        bytes were written."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self._expected = size

    def tell(self) -> int:
        return self._written

    @property
    def bytes_written(self) -> int:
        return self._written

    def close(self) -> None:
        """Commit (once); on failure the write is discarded and the error raised."""
        if self.closed:
            return
        try:
            if self._expected is not None and self._written != self._expected:
                raise IntegrityError(
                    f"{self.what}: {self._written} bytes written, {self._expected} announced"
                )
            self.meta = self._commit()
        except BaseException:
            with contextlib.suppress(Exception):
                self._abort()
            raise
        finally:
            super().close()

    def abort(self) -> None:
        """Discard the write; nothing becomes visible. A no-op once closed."""
        if self.closed:
            return
        try:
            self._abort()
        finally:
            super().close()

    def __del__(self) -> None:
        # IOBase would close(), i.e. commit, a forgotten writer: discard it instead.
        if not self.closed:
            with contextlib.suppress(Exception):
                self.abort()

    def __repr__(self) -> str:
        state = "committed" if self.meta else "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.what} {state}, {self._written} bytes>"


class ChunkedWriter(ObjectWriter):
    """A writer that hands its store fixed-size chunks: ``_write_chunk(view, last)``
    gets every chunk but the last exactly ``chunk_size`` bytes; the last (possibly
    short, or empty for an empty object) comes with ``last=True`` from ``close()``.
    One chunk is held back until more data arrives, so the last one is known (unless the
    total was announced with :meth:`ObjectWriter.expect_size`).

    Whole chunks of a write go to the store straight from the caller's buffer; the one
    held back is copied, unless the caller's object is immutable ``bytes`` (then a view
    of it is held: nothing can change it). Memory: one chunk, plus that view."""

    def __init__(self, what: str, chunk_size: int):
        super().__init__(what)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.chunk_size = chunk_size
        self._buffer = bytearray(chunk_size)
        self._held = 0
        self._held_view: memoryview | None = None  # a whole chunk of immutable bytes

    @abc.abstractmethod
    def _write_chunk(self, view: memoryview, last: bool) -> None:
        """Store one chunk (copy or send it before returning)."""

    @abc.abstractmethod
    def _finish(self) -> ObjectMeta:
        """Commit after the last chunk was written."""

    def _pending(self) -> memoryview:
        """The chunk held back (possibly empty)."""
        if self._held_view is not None:
            return self._held_view
        return memoryview(self._buffer)[: self._held]

    def _write(self, view: memoryview) -> None:
        size, buf = self.chunk_size, self._buffer
        end = self._written + len(view)  # the stream offset where this write ends
        while view:
            if self._held == size:  # more data follows: the held chunk is not the last
                self._write_chunk(self._pending(), False)
                self._held, self._held_view = 0, None
            if self._held == 0 and len(view) >= size:
                if len(view) > size or self._more_follows(end):  # whole chunks, no copy
                    self._write_chunk(view[:size], False)
                    view = view[size:]
                    continue
                if type(view.obj) is bytes:  # immutable: hold it without a copy
                    self._held, self._held_view = size, view
                    return
            n = min(size - self._held, len(view))
            buf[self._held : self._held + n] = view[:n]
            self._held += n
            view = view[n:]

    def _more_follows(self, end: int) -> bool:
        """Whether the stream announced goes on after offset ``end``."""
        return self._expected is not None and end < self._expected

    def _commit(self) -> ObjectMeta:
        self._write_chunk(self._pending(), True)
        self._held, self._held_view = 0, None
        return self._finish()


class ForwardingWriter(ObjectWriter):
    """``inner``'s write, unchanged, with ``on_commit(meta)`` run after it commits (a
    wrapper that passes bytes through: the cache drops the replaced version)."""

    def __init__(self, inner: ObjectWriter, on_commit: Callable[[ObjectMeta], None]):
        super().__init__(inner.what)
        self._inner, self._on_commit = inner, on_commit

    def expect_size(self, size: int) -> None:
        super().expect_size(size)
        self._inner.expect_size(size)  # the same bytes go through

    def _write(self, view: memoryview) -> None:
        self._inner.write(view)

    def _commit(self) -> ObjectMeta:
        self._inner.close()
        meta = self._inner.meta
        assert meta is not None
        self._on_commit(meta)
        return meta

    def _abort(self) -> None:
        self._inner.abort()


class MemoryWriter(ObjectWriter):
    """Collects the object in memory and hands it to ``put`` on commit: the fallback of
    stores that cannot write incrementally (memory is the object's size)."""

    def __init__(self, what: str, put: Callable[[bytearray], ObjectMeta]):
        super().__init__(what)
        self._put = put
        self._data = bytearray()

    def _write(self, view: memoryview) -> None:
        self._data += view

    def _commit(self) -> ObjectMeta:
        return self._put(self._data)

    def _abort(self) -> None:
        self._data = bytearray()


class ObjectReader(io.RawIOBase):
    """A seekable, read-only file over one version of an object.

    ``read_range(start, end)`` returns bytes ``[start, end)`` of that version. Small
    reads are served from one block of ``block`` bytes starting on a multiple of
    ``align`` (an encrypted store's segment size), so neighbouring reads fetch once;
    reads of a block or more go straight to the store.
    """

    def __init__(
        self,
        meta: ObjectMeta,
        read_range: Callable[[int, int], Buffer],
        *,
        block: int = READ_BLOCK_BYTES,
        align: int | None = None,
        what: str = "",
        on_close: Callable[[], None] | None = None,
    ):
        super().__init__()
        self.meta = meta
        self.what = what or meta.key
        self._read_range = read_range
        self._on_close = on_close
        align = max(1, align or 1)
        self._align = align
        self._block = max(align, -(-block // align) * align)
        self._pos = 0
        self._cached_at = 0
        self._cached: memoryview = memoryview(b"")

    @property
    def size(self) -> int:
        return self.meta.size

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def align(self) -> int:
        """Reads starting on a multiple of this cost no more than they return."""
        return self._align

    def read_range(self, start: int, end: int) -> Buffer:
        """Bytes ``[start, end)`` of this version as the store returned them (no copy);
        the position does not move. Several threads may read ranges at once: every
        reader dcstore ships reads ranges independently (one opened file or session)."""
        if self.closed:
            raise ValueError(f"{self.what}: read from a closed reader")
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"{self.what}: range [{start}, {end}) outside 0..{self.size}")
        return self._fetch(start, end) if start < end else b""

    def map_range(self, start: int, end: int) -> memoryview | None:
        """Bytes ``[start, end)`` of this version as a read-only view of a memory mapping
        (the view owns it), or ``None``: only a reader of a local file maps."""
        return None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.closed:
            raise ValueError(f"{self.what}: seek on a closed reader")
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError(f"{self.what}: negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Buffer) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError(f"{self.what}: read from a closed reader")
        out = memoryview(buffer).cast("B")
        n = max(0, min(len(out), self.size - self._pos))
        if n == 0:
            return 0
        pos = self._pos
        if n >= self._block:  # large: straight from the store
            out[:n] = memoryview(self._fetch(pos, pos + n))
        else:  # small: from blocks (one, or two where the read crosses a block's end)
            done = 0
            while done < n:
                done += self._from_block(out[done:], pos + done, n - done)
        self._pos = pos + n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (the rest of the object when negative). A read of a block
        or more returns the store's bytes as fetched (``readinto`` would copy them twice)."""
        if self.closed:
            raise ValueError(f"{self.what}: read from a closed reader")
        if size is None or size < 0:
            return self.readall()
        n = max(0, min(size, self.size - self._pos))
        if n < self._block:
            out = bytearray(n)
            return bytes(out[: self.readinto(out)])
        data = self._fetch(self._pos, self._pos + n)
        self._pos += n
        return data if isinstance(data, bytes) else bytes(data)

    def _from_block(self, out: memoryview, pos: int, n: int) -> int:
        """Copy up to ``n`` bytes at ``pos`` from the block that holds ``pos``."""
        offset = pos - self._cached_at
        if not (0 <= offset < len(self._cached)):
            start = pos - pos % self._align
            end = min(self.size, start + self._block)
            self._cached = memoryview(self._fetch(start, end))
            self._cached_at, offset = start, pos - start
        n = min(n, len(self._cached) - offset)
        out[:n] = self._cached[offset : offset + n]
        return n

    def _fetch(self, start: int, end: int) -> Buffer:
        data = self._read_range(start, end)
        if memoryview(data).nbytes != end - start:
            raise DcstoreError(
                f"{self.what}: read [{start}, {end}) returned {memoryview(data).nbytes} bytes"
            )
        return data

    def readall(self) -> bytes:
        """The rest of the object (its whole size in memory: prefer ``read(n)``)."""
        out = bytearray(max(0, self.size - self._pos))
        view = memoryview(out)
        while view:
            n = self.readinto(view[: self._block])
            view = view[n:]
        return bytes(out)

    def close(self) -> None:
        """Idempotent; ``on_close`` (the source this reader's bytes come from) runs once."""
        self._cached = memoryview(b"")
        on_close, self._on_close = self._on_close, None
        try:
            if on_close is not None:
                on_close()
        finally:
            super().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.what} version {self.version}, {self.size} bytes>"
