"""A read-only, seekable file over one version of a stored object.

Lets pyarrow read a Parquet footer and single column chunks with range requests
instead of fetching the whole object. Guarantees: every read asks for exactly the
version given (a replaced object is a :class:`~dcstore.errors.VersionChangedError`),
and never past ``size``.
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
        self.requests = 0

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
        end = min(self.size, self.pos + len(buffer))
        if end <= self.pos:
            return 0
        data = self.store.get_range(self.key, self.pos, end, version=self.version)
        self.requests += 1
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        self.pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        """One range request for ``size`` bytes (all the rest when negative)."""
        end = self.size if size < 0 else min(self.size, self.pos + size)
        if end <= self.pos:
            return b""
        data = bytes(self.store.get_range(self.key, self.pos, end, version=self.version))
        self.requests += 1
        self.pos += len(data)
        return data
