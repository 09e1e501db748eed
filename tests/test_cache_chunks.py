"""Chunk arithmetic of the hot tier (pure logic, no server)."""

from __future__ import annotations

import pytest

from dcstore.cache.chunks import ChunkSpan, assemble, consecutive_runs


def test_span_names_leases_and_overlaps_cover_exactly_the_range() -> None:
    span = ChunkSpan("v1", start=5, end=23, chunk=8, size=26)
    assert span.first == 0 and list(span.indices) == [0, 1, 2]
    assert span.bytes == 24
    assert span.names(span.indices) == (["{v1}:0", "{v1}:1", "{v1}:2"], [8, 8, 8])
    assert span.leases([1]) == ["{v1}:lease:1"]
    assert [span.overlap(i) for i in span.indices] == [3, 8, 7]
    assert span.slices() == [("{v1}:0", 5, 8), ("{v1}:1", 0, 8), ("{v1}:2", 0, 7)]
    data = bytes(range(26))
    assert span.join([data[0:8], data[8:16], data[16:24]]) == data[5:23]


def test_last_chunk_is_short_and_indices_are_relative_to_the_first() -> None:
    span = ChunkSpan("v2", start=17, end=26, chunk=8, size=26)
    assert span.first == 2 and list(span.indices) == [0, 1]
    assert span.names(span.indices) == (["{v2}:2", "{v2}:3"], [8, 2])
    assert span.bytes == 10
    assert span.slices() == [("{v2}:2", 1, 8), ("{v2}:3", 0, 2)]


def test_consecutive_runs() -> None:
    assert consecutive_runs([]) == []
    assert consecutive_runs([0, 1, 2, 5, 7, 8]) == [(0, 2), (5, 5), (7, 8)]


@pytest.mark.parametrize(("start", "end"), [(0, 26), (3, 20), (8, 16), (25, 26)])
def test_assemble_returns_the_range_of_the_chunks_covering_it(start: int, end: int) -> None:
    data = bytes(range(26))
    span = ChunkSpan("v", start, end, chunk=8, size=26)
    offsets = [(span.first + i) * 8 for i in span.indices]
    base = span.first * 8
    pieces = [data[o : o + 8] for o in offsets]
    views = [memoryview(data)[o : o + 8] for o in offsets]
    for chunks in (pieces, [bytearray(p) for p in pieces], views):
        assert assemble(chunks, start - base, end - base) == data[start:end]


def test_assemble_of_views_of_one_whole_buffer_does_not_copy() -> None:
    data = bytes(range(26))
    views = [memoryview(data)[o : o + 8] for o in range(0, 26, 8)]
    assert assemble(views, 0, 26) is data
