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

Resumption composes: a *layer* ``(workers, positions)`` records how far each
worker of an earlier run got; the samples not yet read are re-split among the
current workers, in order, so a run may resume with a different worker count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Layer = tuple[int, tuple[int, ...]]
"""``(workers, positions)``: samples consumed by each worker of one earlier run."""


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker reads, in order: blocks of global sample indices.

    Samples of one block are fetched together; ``len(self)`` is the total.
    """

    blocks: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    def indices(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.empty(0, np.int64)

    def skip(self, n: int) -> WorkerPlan:
        """The plan without its first ``n`` samples."""
        return WorkerPlan(_split_blocks(self.blocks, [n])[1])


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng([int(e) for e in entropy])


def rank_spans(
    counts: Sequence[int],
    *,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[tuple[int, int, int]]:
    """The ``(shard, start, end)`` spans rank ``rank`` reads this epoch, in order."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return []
    order = _rng(seed, epoch, 0x5A4D).permutation(len(counts)) if shuffle else range(len(counts))
    order = [int(s) for s in order if counts[s] > 0]
    starts = np.concatenate([[0], np.cumsum(counts[order])])
    per_rank = total // world if drop_last else -(-total // world)
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    spans: list[tuple[int, int, int]] = []
    while lo < hi:
        p = lo % total
        i = int(np.searchsorted(starts, p, side="right")) - 1
        shard, begin = order[i], p - int(starts[i])
        take = min(int(counts[shard]) - begin, hi - lo)
        spans.append((shard, begin, begin + take))
        lo += take
    return spans


def _share(n: int, parts: int, part: int) -> tuple[int, int]:
    q, r = divmod(n, parts)
    lo = part * q + min(part, r)
    return lo, lo + q + (1 if part < r else 0)


def _split_blocks(
    blocks: Sequence[np.ndarray], cuts: Sequence[int]
) -> list[tuple[np.ndarray, ...]]:
    """Split a block sequence at sample positions ``cuts`` (ascending)."""
    out: list[tuple[np.ndarray, ...]] = []
    current: list[np.ndarray] = []
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
    counts: np.ndarray,
    starts: np.ndarray,
    spans: list[tuple[int, int, int]],
    *,
    seed: int,
    epoch: int,
    rank: int,
    worker: int,
    workers: int,
    shuffle: bool,
    window: int,
) -> list[np.ndarray]:
    n = sum(e - s for _, s, e in spans)
    lo, hi = _share(n, workers, worker)
    blocks: list[np.ndarray] = []
    group: list[np.ndarray] = []
    pos = 0
    for shard, s, e in spans:
        a, b = max(s, s + lo - pos), min(e, s + hi - pos)
        pos += e - s
        if a >= b:
            continue
        group.append(np.arange(starts[shard] + a, starts[shard] + b, dtype=np.int64))
        if sum(len(g) for g in group) >= window:
            blocks.append(np.concatenate(group))
            group = []
    if group:
        blocks.append(np.concatenate(group))
    if shuffle:
        blocks = [
            _rng(seed, epoch, rank, workers, worker, i, 0xB10C).permutation(b)
            for i, b in enumerate(blocks)
        ]
    return blocks


def plan_epoch(
    counts: Sequence[int],
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
    resume: Sequence[Layer] = (),
) -> WorkerPlan:
    """The blocks worker ``worker`` of ``workers`` on rank ``rank`` of ``world`` reads.

    ``resume`` lists earlier runs' layers (oldest first); the result then
    covers exactly the samples those runs had not consumed.
    """
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is outside {workers} workers")
    counts_arr = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts_arr)]).astype(np.int64)
    spans = rank_spans(
        counts_arr, seed=seed, epoch=epoch, rank=rank, world=world,
        shuffle=shuffle, drop_last=drop_last,
    )  # fmt: skip

    def blocks_for(w: int, nw: int) -> list[np.ndarray]:
        return _layer0_blocks(
            counts_arr, starts, spans, seed=seed, epoch=epoch, rank=rank,
            worker=w, workers=nw, shuffle=shuffle, window=window,
        )  # fmt: skip

    if not resume:
        return WorkerPlan(tuple(blocks_for(worker, workers)))
    layer_workers, positions = resume[0]
    parts = [blocks_for(w, layer_workers) for w in range(layer_workers)]
    for i, (layer_workers, positions) in enumerate(resume):
        if len(positions) != layer_workers:
            raise ValueError(f"resume layer {i} has {len(positions)} positions for {layer_workers}")
        remaining: list[np.ndarray] = []
        for blocks, pos in zip(parts, positions, strict=True):
            remaining.extend(_split_blocks(blocks, [pos])[1])
        nxt = resume[i + 1][0] if i + 1 < len(resume) else workers
        n = sum(len(b) for b in remaining)
        cuts = [_share(n, nxt, w)[1] for w in range(nxt - 1)]
        parts = [list(p) for p in _split_blocks(remaining, cuts)]
    return WorkerPlan(tuple(parts[worker]))
