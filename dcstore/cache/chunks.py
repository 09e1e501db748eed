"""How a cached object version is cut into chunks: names, leases, ranges, reassembly.

Pure arithmetic, no I/O. A chunk ``n`` of a version with id ``oid`` is stored under
``{oid}:n`` (the braces keep every chunk of a version on one Redis Cluster slot) and
holds bytes ``[n * chunk, min(size, (n + 1) * chunk))``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Chunk = bytes | bytearray | memoryview


class ChunkSpan:
    """The chunks covering ``[start, end)`` of one object version; indices are relative
    to the first chunk."""

    def __init__(self, oid: str, start: int, end: int, chunk: int, size: int):
        self.oid, self.start, self.end, self.chunk, self.size = oid, start, end, chunk, size
        self.first = start // chunk
        self.indices = range((end - 1) // chunk - self.first + 1)
        self.bytes = min(size, (self.first + len(self.indices)) * chunk) - self.first * chunk
        """Bytes of the whole chunks covering the range."""

    def names(self, indices: Iterable[int]) -> tuple[list[str], list[int]]:
        """The tier keys of the chunks and their exact lengths (as ``get_many`` takes them)."""
        names, sizes = [], []
        for i in indices:
            n = self.first + i
            names.append(f"{{{self.oid}}}:{n}")
            sizes.append(min(self.chunk, self.size - n * self.chunk))
        return names, sizes

    def leases(self, indices: Iterable[int]) -> list[str]:
        return [f"{{{self.oid}}}:lease:{self.first + i}" for i in indices]

    def within(self, i: int) -> tuple[int, int]:
        """``(a, b)``: the part of chunk ``i`` inside ``[start, end)``, relative to the chunk."""
        lo = (self.first + i) * self.chunk
        return max(self.start - lo, 0), min(self.end - lo, self.chunk)

    def overlap(self, i: int) -> int:
        """Bytes of chunk ``i`` inside ``[start, end)``."""
        a, b = self.within(i)
        return b - a

    def slices(self) -> list[tuple[str, int, int]]:
        """(tier key, a, b) of every chunk: the range read as slices of its chunks."""
        names, _ = self.names(self.indices)
        return [(name, *self.within(i)) for i, name in zip(self.indices, names, strict=True)]

    def join(self, chunks: Sequence[Chunk]) -> bytes:
        """Bytes ``[start, end)`` of the object from all of this span's chunks."""
        base = self.first * self.chunk
        return assemble(chunks, self.start - base, self.end - base)


def consecutive_runs(indices: list[int]) -> list[tuple[int, int]]:
    """Maximal runs ``(lo, hi)`` of consecutive integers in sorted ``indices``."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def assemble(chunks: Sequence[Chunk], start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the concatenated chunks, with at most one copy.

    ``chunks`` are exactly those covering the range: ``end`` falls in the last one.
    Views that share one ``bytes`` and add up to its length (one origin read cut
    into chunks) are taken to tile it in order and are sliced from it directly;
    the whole range is that ``bytes`` itself, without a copy.
    """
    head = chunks[0]
    base = head.obj if isinstance(head, memoryview) else None
    if (
        isinstance(base, bytes)
        and all(isinstance(c, memoryview) and c.obj is base for c in chunks)
        and sum(len(c) for c in chunks) == len(base)
    ):
        return base if (start, end) == (0, len(base)) else base[start:end]
    if len(chunks) == 1:
        whole = (start, end) == (0, len(head))
        return head if whole and isinstance(head, bytes) else bytes(memoryview(head)[start:end])
    views = [memoryview(c) for c in chunks]
    tail = end - sum(len(v) for v in views[:-1])
    views[0], views[-1] = views[0][start:], views[-1][:tail]
    return b"".join(views)
