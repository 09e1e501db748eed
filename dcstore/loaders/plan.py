"""The epoch plan: which samples each worker of each rank reads, as a pure function.

``plan_epoch(counts, seed=, epoch=, rank=, world=, worker=, workers=)`` depends
only on its arguments. Guarantees (tested directly):

* Every sample appears exactly once per epoch across all ranks and workers
  when ``world`` divides the sample count. Otherwise, with ``drop_last=False``
  (default) the first samples of the epoch order are repeated so every rank
  gets ``ceil(total / world)`` (fewer than ``world`` repeats in all, as
  ``DistributedSampler`` does); with ``drop_last=True`` the last ones are
  dropped and every rank gets ``floor(total / world)``.
* Every rank gets the same number of samples, and worker ``w`` of every rank
  the same number as worker ``w`` of any other rank, for any shard sizes: so
  DDP ranks run the same number of steps and never hang.
* Deterministic per ``seed``; ``shuffle=True`` changes the order each epoch:
  shard order is permuted, then samples are permuted inside blocks of
  consecutive shard spans holding at least ``window`` samples (at least one
  span), which bounds the memory a block needs.
* Ranks and workers read contiguous runs of the epoch order, so each reads
  whole shards except at most two partial ones (read by range).
* ``buffer=N`` also passes each worker's samples through a shuffle buffer of
  ``N`` samples (webdataset's ``.shuffle(N)``), computed here as a pure
  emission order over the read order: the ``k``-th sample handed out is among
  the first ``k + N`` read, so a reader holds at most ``N`` samples waiting.

The plan is lazy: ``plan_epoch`` costs O(shards of the rank) in time and
memory; a block's indices (and its permutation, seeded per block) are computed
when the block is accessed, so a reader holds only the blocks it has reached.
A shuffle buffer's order, and skipping through it, stay O(samples of the
worker): the buffer's emission order runs across all blocks.

Resumption composes: a *layer* ``(workers, positions)`` records how many
samples each worker of an earlier run handed out; the samples not yet handed
out are re-split among the current workers, in read order, so a run may resume
with a different worker count.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.ma  # np.isin imports it on first use; imported here, where the dataset is opened,
import numpy.random  # not in each DataLoader worker at its first batch

Layer = tuple[int, tuple[int, ...]]
"""``(workers, positions)``: samples consumed by each worker of one earlier run."""


@dataclass(frozen=True)
class Block:
    """Samples fetched together, held as O(runs) until :meth:`indices` is called.

    The block's order is its ``runs`` (``[start, end)`` global index ranges)
    concatenated, permuted by a generator seeded with ``key`` when set; the
    block is positions ``[lo, hi)`` of that order. Materialising it costs
    O(samples of the whole block), whichever slice it is.
    """

    runs: tuple[tuple[int, int], ...]
    key: tuple[int, ...] | None
    lo: int
    hi: int

    @classmethod
    def of(cls, runs: Sequence[tuple[int, int]], key: tuple[int, ...] | None = None) -> Block:
        """The whole block of ``runs`` (permuted with ``key`` when given)."""
        return cls(tuple(runs), key, 0, sum(e - s for s, e in runs))

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, part: slice) -> Block:
        """Positions ``part`` (no step) of this block's order, still lazy."""
        start, stop, _ = part.indices(len(self))
        return Block(self.runs, self.key, self.lo + start, self.lo + max(start, stop))

    def indices(self) -> np.ndarray:
        """The block's global sample indices, in order."""
        ids = np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in self.runs])
        if self.key is not None:
            ids = _rng(*self.key).permutation(ids)
        return ids[self.lo : self.hi]


Part = Block | np.ndarray
"""One block of a plan: lazy (:class:`Block`) or explicit global sample indices."""


class BlockTable(Sequence[Block]):
    """Consecutive blocks as arrays: block ``i`` is runs ``bounds[i]:bounds[i + 1]``
    of ``[first, end)`` global index ranges, permuted with ``key + (i, 0xB10C)``
    when ``key`` is set. O(runs) memory; a :class:`Block` is built on access."""

    def __init__(
        self, first: np.ndarray, end: np.ndarray, bounds: np.ndarray, key: tuple[int, ...] | None
    ) -> None:
        self.first, self.end, self.bounds, self.key = first, end, bounds, key

    @property
    def samples(self) -> int:
        """Samples in all the blocks."""
        return int(self.end.sum() - self.first.sum())

    def __len__(self) -> int:
        return len(self.bounds) - 1

    @overload
    def __getitem__(self, i: int) -> Block: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Block]: ...
    def __getitem__(self, i: int | slice) -> Block | Sequence[Block]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        lo, hi = int(self.bounds[i]), int(self.bounds[i + 1])
        runs = zip(self.first[lo:hi].tolist(), self.end[lo:hi].tolist(), strict=True)
        return Block.of(list(runs), None if self.key is None else (*self.key, i, 0xB10C))


def _ids(part: Part) -> np.ndarray:
    return part.indices() if isinstance(part, Block) else part


class _Blocks(Sequence[np.ndarray]):
    """A plan's blocks as index arrays, each materialised when it is accessed."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self._parts = parts

    def __len__(self) -> int:
        return len(self._parts)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(i, slice):
            return _Blocks(self._parts[i])
        return _ids(self._parts[i])


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker reads, in order: blocks of global sample indices.

    ``parts`` hold each block lazily (O(shards) for a whole plan); ``blocks``
    materialises one block's indices when it is accessed, so a reader going
    block by block holds only the blocks it has reached. ``len(self)`` is the
    total. ``order``, when set, is the order samples are handed out in (a
    shuffle buffer's, O(samples)); otherwise they are handed out block by
    block, in block order.
    """

    parts: Sequence[Part]
    order: np.ndarray | None = None

    @property
    def blocks(self) -> Sequence[np.ndarray]:
        """Each block's sample indices, materialised on access."""
        return _Blocks(self.parts)

    def __len__(self) -> int:
        if isinstance(self.parts, BlockTable):
            return self.parts.samples
        return sum(len(p) for p in self.parts)

    def indices(self) -> np.ndarray:
        """Sample indices in the order they are handed out (materialises them all)."""
        if self.order is not None:
            return self.order
        return np.concatenate(self.blocks) if self.parts else np.empty(0, np.int64)

    def skip(self, n: int) -> WorkerPlan:
        """The plan without the first ``n`` samples handed out (read order kept).

        Without a shuffle buffer the blocks stay lazy (O(blocks) work, the
        cut block sliced); with one they are materialised (O(samples)).
        """
        if self.order is None:
            return WorkerPlan(_split_blocks(self.parts, [n])[1])
        out = self.order[:n]
        blocks = tuple(b[~np.isin(b, out)] for b in self.blocks)
        return WorkerPlan(tuple(b for b in blocks if len(b)), self.order[n:])


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng([int(e) for e in entropy])


def rank_spans(
    counts: Sequence[int] | np.ndarray,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[tuple[int, int, int]]:
    """The ``(shard, start, end)`` spans rank ``rank`` reads this epoch, in order."""
    shard, begin, end = _span_arrays(
        np.asarray(counts, dtype=np.int64), seed=seed, epoch=epoch, rank=rank, world=world,
        shuffle=shuffle, drop_last=drop_last,
    )  # fmt: skip
    return list(zip(shard.tolist(), begin.tolist(), end.tolist(), strict=True))


def _span_arrays(
    sizes: np.ndarray, *, seed: int, epoch: int, rank: int, world: int, shuffle: bool,
    drop_last: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`rank_spans` as ``(shard, start, end)`` arrays, in O(shards) numpy work."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    total = int(sizes.sum())
    empty = np.empty(0, np.int64)
    if total == 0:
        return empty, empty, empty
    shards = _rng(seed, epoch, 0x5A4D).permutation(len(sizes)) if shuffle else np.arange(len(sizes))
    order = shards[sizes[shards] > 0]
    starts = np.concatenate([[0], np.cumsum(sizes[order])])
    per_rank = total // world if drop_last else -(-total // world)
    first = rank * per_rank % total  # the rank's run of the epoch order wraps at most once
    ends = [min(first + per_rank, total), first + per_rank - total]
    pieces = [(first, ends[0]), (0, ends[1])] if ends[1] > 0 else [(first, ends[0])]
    parts = [_order_spans(order, starts, lo, hi) for lo, hi in pieces]
    cols = [np.concatenate([part[k] for part in parts]) for k in range(3)]
    return cols[0], cols[1], cols[2]


def _order_spans(
    order: np.ndarray, starts: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spans covering positions ``[lo, hi)`` of the epoch order (shards ``order``)."""
    i = np.arange(np.searchsorted(starts, lo, side="right") - 1, np.searchsorted(starts, hi))
    if lo >= hi:
        i = i[:0]
    base = starts[i]
    return order[i], np.maximum(lo - base, 0), np.minimum(hi, starts[i + 1]) - base


def shuffle_buffer_order(ids: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``ids`` (read order) in the order a shuffle buffer of ``size`` hands them out.

    webdataset's algorithm: each sample read enters the buffer; while the
    buffer holds ``size``, a uniformly drawn one leaves; at the end the rest
    leave in random order. Linear (about 0.7 s per million samples here),
    computed once per worker and epoch.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if size <= 1 or len(ids) <= 1:
        return ids.copy()
    out = np.empty(len(ids), dtype=np.int64)
    draws = rng.random(len(ids))
    buf: list[int] = []
    k = 0
    for sample in ids.tolist():
        buf.append(sample)
        if len(buf) >= size:
            j = int(draws[k] * len(buf))
            out[k] = buf[j]
            buf[j] = buf[-1]
            buf.pop()
            k += 1
    out[k:] = np.asarray(buf, dtype=np.int64)[rng.permutation(len(buf))]
    return out


def _share(n: int, parts: int, part: int) -> tuple[int, int]:
    q, r = divmod(n, parts)
    lo = part * q + min(part, r)
    return lo, lo + q + (1 if part < r else 0)


def _split_blocks(blocks: Sequence[Part], cuts: Sequence[int]) -> list[tuple[Part, ...]]:
    """Split a block sequence at sample positions ``cuts`` (ascending); blocks stay lazy."""
    out: list[tuple[Part, ...]] = []
    current: list[Part] = []
    pos = 0
    cuts = list(cuts)
    for block in blocks:
        start = 0
        while cuts and cuts[0] < pos + len(block):
            cut = cuts.pop(0) - pos
            if cut > start:
                current.append(block[start:cut])
            out.append(tuple(current))
            current, start = [], max(start, cut)
        if start < len(block):
            current.append(block[start:])
        pos += len(block)
    for _ in cuts:
        out.append(tuple(current))
        current = []
    out.append(tuple(current))
    return out


def _layer0_blocks(
    starts: np.ndarray,
    spans: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    seed: int,
    epoch: int,
    rank: int,
    worker: int,
    workers: int,
    shuffle: bool,
    window: int,
) -> BlockTable:
    """Worker ``worker``'s share of the rank's ``spans`` as lazy blocks: O(spans).

    Each block gathers consecutive runs until it holds ``window`` samples; with
    ``shuffle`` its order is a permutation seeded by (seed, epoch, rank,
    workers, worker, block), drawn only when the block is materialised.
    """
    shard, begin, end = spans
    pos = np.concatenate([[0], np.cumsum(end - begin)]).astype(np.int64)
    lo, hi = _share(int(pos[-1]), workers, worker)
    a = begin + np.maximum(lo - pos[:-1], 0)
    b = np.minimum(end, begin + hi - pos[:-1])
    keep = a < b
    first, last = starts[shard[keep]] + a[keep], starts[shard[keep]] + b[keep]
    key = (seed, epoch, rank, workers, worker) if shuffle else None
    return BlockTable(first, last, _group_bounds(last - first, window), key)


def _group_bounds(sizes: np.ndarray, window: int) -> np.ndarray:
    """Greedy groups of consecutive ``sizes`` each summing to at least ``window``
    (the last one may hold less): their boundaries, O(groups) steps."""
    if window <= 1:
        return np.arange(len(sizes) + 1)
    cum = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    bounds = [0]
    while bounds[-1] < len(sizes):
        nxt = bisect.bisect_left(cum, cum[bounds[-1]] + window)
        bounds.append(min(max(nxt, bounds[-1] + 1), len(sizes)))
    return np.asarray(bounds, dtype=np.int64)


def plan_epoch(
    counts: Sequence[int] | np.ndarray,
    *,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world: int = 1,
    worker: int = 0,
    workers: int = 1,
    shuffle: bool = True,
    drop_last: bool = False,
    window: int = 0,
    buffer: int = 0,
    resume: Sequence[Layer] = (),
) -> WorkerPlan:
    """The blocks worker ``worker`` of ``workers`` on rank ``rank`` of ``world`` reads.

    ``buffer`` > 1 sets the plan's hand-out order to a shuffle buffer's of that
    many samples. ``resume`` lists earlier runs' layers (oldest first); the
    result then covers exactly the samples those runs had not handed out.
    """
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is outside {workers} workers")
    counts_arr = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts_arr)]).astype(np.int64)
    spans = _span_arrays(
        counts_arr, seed=seed, epoch=epoch, rank=rank, world=world,
        shuffle=shuffle, drop_last=drop_last,
    )  # fmt: skip

    def plan_for(blocks: Sequence[Part], layer: int, w: int, nw: int) -> WorkerPlan:
        plan = WorkerPlan(blocks)
        if buffer <= 1:
            return plan
        rng = _rng(seed, epoch, rank, nw, w, layer, 0xB0FF)
        return WorkerPlan(plan.parts, shuffle_buffer_order(plan.indices(), buffer, rng))

    def layer0(w: int, nw: int) -> WorkerPlan:
        blocks = _layer0_blocks(
            starts, spans, seed=seed, epoch=epoch, rank=rank,
            worker=w, workers=nw, shuffle=shuffle, window=window,
        )  # fmt: skip
        return plan_for(blocks, 0, w, nw)

    if not resume:
        return layer0(worker, workers)
    layer_workers, positions = resume[0]
    parts = [layer0(w, layer_workers) for w in range(layer_workers)]
    for i, (layer_workers, positions) in enumerate(resume):
        if len(positions) != layer_workers:
            raise ValueError(f"resume layer {i} has {len(positions)} positions for {layer_workers}")
        remaining: list[Part] = []
        for part, pos in zip(parts, positions, strict=True):
            remaining.extend(part.skip(pos).parts)
        nxt = resume[i + 1][0] if i + 1 < len(resume) else workers
        n = sum(len(b) for b in remaining)
        cuts = [_share(n, nxt, w)[1] for w in range(nxt - 1)]
        parts = [plan_for(p, i + 1, w, nxt) for w, p in enumerate(_split_blocks(remaining, cuts))]
    return parts[worker]
