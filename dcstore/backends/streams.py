"""Streamed writes: an object given as an iterable of buffers and its total size.

:meth:`Backend.put_stream` takes such a stream. These helpers check that the
stream holds exactly the announced number of bytes (a file that grows or
shrinks while it is read fails the put instead of storing a mix) and cut it
into blocks of the sizes a writer needs (cipher segments).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dcstore.errors import IntegrityError

Buffer = bytes | bytearray | memoryview


def sized(chunks: Iterable[Buffer], size: int, what: str) -> Iterator[memoryview]:
    """The non-empty chunks of ``chunks`` as byte views; :class:`IntegrityError`
    (raised before the writer commits) unless they add up to exactly ``size`` bytes."""
    total = 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        total += len(view)
        if total > size:
            raise IntegrityError(f"{what}: the data is longer than the announced {size} bytes")
        if view:
            yield view
    if total != size:
        raise IntegrityError(f"{what}: the data ended after {total} of the announced {size} bytes")


def join(chunks: Iterable[Buffer], size: int, what: str) -> bytearray:
    """The whole stream in one buffer (for writers that cannot stream)."""
    out = bytearray(size)
    pos = 0
    for view in sized(chunks, size, what):
        out[pos : pos + len(view)] = view
        pos += len(view)
    return out


class BlockReader:
    """Reads blocks of exact sizes from a stream of views of any sizes."""

    def __init__(self, views: Iterator[memoryview]):
        self._views = views
        self._pending = memoryview(b"")

    def read_into(self, out: memoryview) -> int:
        """Fill ``out``; return the bytes written (fewer only at the end of the stream)."""
        pos = 0
        while pos < len(out):
            if not self._pending:
                nxt = next(self._views, None)
                if nxt is None:
                    break
                self._pending = nxt
            n = min(len(out) - pos, len(self._pending))
            out[pos : pos + n] = self._pending[:n]
            self._pending = self._pending[n:]
            pos += n
        return pos

    def finish(self) -> None:
        """Consume the rest of the stream, so that :func:`sized` checks its length."""
        for _ in self._views:
            pass
