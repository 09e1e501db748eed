"""Items of a token dataset as spans of its token stream: a pure function of the manifest.

An item is ``[start, start + length)`` in the concatenated stream. Blocks are
fixed-length items: across documents, block ``i`` starts at ``i * block_size``
(no table is built: a 100-billion-token corpus costs nothing to open); within
documents, each document yields ``length // block_size`` blocks from its
start (its remainder is dropped). Documents are items of their own length.
Items are sorted by start, so item ``i`` belongs to the shard its start is in,
which gives the per-shard counts the epoch plan needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spans:
    """Item ``i`` is tokens ``[start(i), start(i) + length(i))``: either every
    ``step`` tokens (``table`` None) or the ``table`` of starts and lengths."""

    count: int
    step: int = 0
    starts: np.ndarray | None = None
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count

    def bounds(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of items ``ids``, int64."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.starts is None or self.lengths is None:
            starts = ids * self.step
            return starts, starts + self.step
        starts = self.starts[ids]
        return starts, starts + self.lengths[ids]

    def counts(self, shard_starts: np.ndarray) -> np.ndarray:
        """Items whose start is in each shard (``shard_starts`` has one more entry)."""
        if self.starts is None:
            cuts = np.minimum(-(-shard_starts // self.step), self.count)  # first item per cut
        else:
            cuts = np.searchsorted(self.starts, shard_starts, side="left")
            if len(cuts) > 1:
                cuts[-1] = self.count  # an empty item at the very end is the last shard's
        return np.asarray(np.diff(cuts), dtype=np.int64)


def stream_blocks(num_tokens: int, block_size: int) -> Spans:
    """Blocks of ``block_size`` tokens over the whole stream (a short tail is dropped)."""
    return Spans(num_tokens // block_size, step=block_size)


def document_blocks(starts: np.ndarray, lengths: np.ndarray, block_size: int) -> Spans:
    """Blocks of ``block_size`` tokens that never cross a document boundary."""
    per_doc = lengths // block_size
    first = np.repeat(starts, per_doc)
    offset_in_doc = np.arange(len(first), dtype=np.int64) - np.repeat(
        np.cumsum(per_doc) - per_doc, per_doc
    )
    block_starts = first + offset_in_doc * block_size
    lengths = np.full_like(block_starts, block_size)
    return Spans(len(block_starts), starts=block_starts, lengths=lengths)


def documents(starts: np.ndarray, lengths: np.ndarray) -> Spans:
    """Each document as one item."""
    return Spans(len(starts), starts=starts, lengths=lengths)
