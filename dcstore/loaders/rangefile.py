"""A read-only, seekable file over one version of a stored object.

Lets pyarrow read a Parquet footer and single column chunks with range requests
instead of fetching the whole object. Guarantees: every read asks for exactly the
version given (a replaced object is a :class:`~dcstore.errors.VersionChangedError`),
and never past ``size``. :meth:`RangeFile.prefetch` fetches a span with one request
and serves the reads inside it (adjacent column chunks of a row group), doing what
Arrow's pre-buffering would without its I/O thread.
"""

from __future__ import annotations

import io

from dcstore.backends.base import Backend


class RangeFile(io.RawIOBase):
    """``store``'s object ``key`` (``size`` bytes, ``version``) as a binary file."""

    def __init__(self, store: Backend, key: str, size: int, version: str | None):
        super().__init__()
        self.store, self.key, self.size, self.version = store, key, size, version
        self.pos = 0
        self._start, self._data = 0, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def prefetch(self, start: int, end: int) -> None:
        """Fetch ``[start, end)`` now; reads inside it are served from memory."""
        start, end = max(0, start), min(self.size, end)
        self._start, self._data = start, b""
        if start < end:  # else (a damaged footer's span) reads ask the store themselves
            self._data = bytes(self.store.get_range(self.key, start, end, version=self.version))

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes from the position (all the rest when negative)."""
        end = self.size if size < 0 else min(self.size, self.pos + size)
        if end <= self.pos:
            return b""
        if self._start <= self.pos and end <= self._start + len(self._data):
            data = self._data[self.pos - self._start : end - self._start]
        else:
            data = bytes(self.store.get_range(self.key, self.pos, end, version=self.version))
        self.pos += len(data)
        return data
