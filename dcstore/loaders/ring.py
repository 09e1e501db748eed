"""Batches collated straight into reusable shared-memory slots: workers write, the main views.

The stock ``DataLoader`` hand-off allocates a fresh shared-memory segment per
batch, writes it in the worker and faults it in again in the main process;
past a few thousand samples/s that, not the data, is the limit. Here each
worker owns a few *slots* it reuses. The protocol:

* The main process creates ``flags``, a shared int32 table ``[workers, slots + 1]``,
  before workers start. ``flags[w, s]`` is ``FREE`` (worker ``w`` may write slot
  ``s``), ``HELD`` (a batch in it is in flight or viewed by the main process) or
  ``RETIRED`` (the main process still had views of it when it stopped waiting:
  the worker allocates a new buffer and never writes the old memory again).
  ``flags[w, slots] != 0`` tells worker ``w`` to stop waiting.
* A worker allocates its slot buffers itself (shared tensors, created unlinked,
  so nothing outlives the processes, even after ``kill -9``), when first needed
  or when a batch does not fit, and sends a buffer once, with the first batch
  written into it; later batches carry only the slot number and the layout.
* A batch is collated into the slot in one pass, the way ``default_collate``
  shapes it: tensors and numpy arrays stacked, numbers become int64 / float64 /
  bool tensors, bytes-like fields are packed back to back and handed out as a
  list of uint8 tensors; strings and anything else pass through as lists.
* The main process hands out views of the slot. A slot is written again only
  after every view of its batch is gone (tracked by a finalizer on the batch's
  region, not guessed): a batch kept longer than the loader waits for it is
  *retired* instead, so kept tensors are never overwritten.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

FREE, HELD, RETIRED = 0, 1, 2
ALIGN = 64
_MAX_WAIT_S = 1e-3


class RingStopped(Exception):
    """The main process stopped the loader (or exited) while a worker waited for a slot."""


# -- layout -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorLeaf:
    """A stacked tensor at ``offset`` of the slot."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BytesLeaf:
    """Byte strings packed from ``offset``; ``ends[i]`` is where item ``i`` ends (relative)."""

    offset: int
    ends: list[int]


@dataclass(frozen=True, slots=True)
class Passed:
    """Values that do not go through the slot (strings, ``None``, other objects)."""

    values: list[Any]


Leaf = TensorLeaf | BytesLeaf | Passed
Job = Callable[[torch.Tensor, memoryview], None]

_NUMBER_DTYPES: dict[type, torch.dtype] = {bool: torch.bool, int: torch.int64, float: torch.float64}


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class _Planner:
    """Lays a batch out in slot bytes: the tree handed to the main process, and the copy jobs."""

    def __init__(self) -> None:
        self.size = 0
        self.jobs: list[Job] = []

    def _take(self, nbytes: int) -> int:
        offset = self.size
        self.size = _aligned(offset + nbytes)
        return offset

    def plan(self, column: Sequence[Any]) -> Any:
        first = column[0]
        if isinstance(first, Mapping):
            return {k: self.plan([item[k] for item in column]) for k in first}
        if isinstance(first, tuple | list):
            if any(len(item) != len(first) for item in column):
                raise ValueError("each element in a batch should be of equal size")
            planned = [self.plan(list(part)) for part in zip(*column, strict=True)]
            return tuple(planned) if isinstance(first, tuple) else planned
        if isinstance(first, np.ndarray) and first.dtype.kind in "biuf":
            return self._arrays(list(column))
        if isinstance(first, torch.Tensor):
            return self._tensors(list(column))
        if isinstance(first, bytes | bytearray | memoryview):
            return self._bytes(column)
        dtype = _NUMBER_DTYPES.get(type(first))
        if dtype is not None and all(type(v) is type(first) for v in column):
            return self._tensors([torch.tensor(list(column), dtype=dtype)], stacked=True)
        return Passed(list(column))

    def _tensors(self, items: list[torch.Tensor], stacked: bool = False) -> TensorLeaf:
        first = items[0]
        shape = tuple(first.shape) if stacked else (len(items), *first.shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * first.element_size()
        leaf = TensorLeaf(self._take(nbytes), first.dtype, shape)

        def copy(slot: torch.Tensor, _: memoryview) -> None:
            out = leaf_view(slot, leaf)
            if stacked:
                out.copy_(first)
            else:
                torch.stack(items, out=out)

        self.jobs.append(copy)
        return leaf

    def _arrays(self, items: list[np.ndarray]) -> TensorLeaf:
        """Numpy arrays stacked with numpy (read-only inputs, e.g. views of bytes, are fine)."""
        first = items[0]
        shape = (len(items), *first.shape)
        dtype = torch.from_numpy(np.empty(0, dtype=first.dtype)).dtype
        leaf = TensorLeaf(self._take(len(items) * first.nbytes), dtype, shape)

        def copy(slot: torch.Tensor, _: memoryview) -> None:
            out = slot.numpy()[leaf.offset : leaf.offset + len(items) * first.nbytes]
            np.stack(items, out=out.view(first.dtype).reshape(shape))

        self.jobs.append(copy)
        return leaf

    def _bytes(self, column: Sequence[Any]) -> BytesLeaf:
        views = [memoryview(v).cast("B") for v in column]
        ends = np.cumsum([v.nbytes for v in views]).tolist()
        offset = self._take(ends[-1] if ends else 0)

        def copy(_: torch.Tensor, mv: memoryview) -> None:
            pos = offset
            for v in views:
                mv[pos : pos + v.nbytes] = v
                pos += v.nbytes

        self.jobs.append(copy)
        return BytesLeaf(offset, ends)


def leaf_view(region: torch.Tensor, leaf: TensorLeaf) -> torch.Tensor:
    """The typed tensor ``leaf`` describes, a view of the uint8 ``region``."""
    count = int(np.prod(leaf.shape, dtype=np.int64))
    size = count * torch.empty(0, dtype=leaf.dtype).element_size()
    return region[leaf.offset : leaf.offset + size].view(leaf.dtype).view(leaf.shape)


def rebuild(tree: Any, region: torch.Tensor) -> Any:
    """The batch ``tree`` describes, its tensors views of ``region``."""
    if isinstance(tree, TensorLeaf):
        return leaf_view(region, tree)
    if isinstance(tree, BytesLeaf):
        sizes = np.diff(tree.ends, prepend=0).tolist()
        span = region[tree.offset : tree.offset + (tree.ends[-1] if sizes else 0)]
        return list(torch.split(span, sizes))
    if isinstance(tree, Passed):
        return tree.values
    if isinstance(tree, dict):
        return {k: rebuild(v, region) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(rebuild(v, region) for v in tree)
    if isinstance(tree, list):
        return [rebuild(v, region) for v in tree]
    return tree


# -- the worker's side --------------------------------------------------------------------


@dataclass
class Delivery:
    """What travels through the ``DataLoader`` queue for one batch (no payload)."""

    worker: int
    slot: int
    used: int
    tree: Any
    buffer: torch.Tensor | None = None
    """The slot's buffer, sent only when it is new."""
    state: dict[str, Any] | None = None
    """The dataset's position after this batch (for resumption)."""


class SlotWriter:
    """Worker ``worker``'s slots: waits for a free one and collates a batch into it."""

    def __init__(self, flags: torch.Tensor, worker: int, *, shared: bool, min_bytes: int):
        self.flags = flags.numpy()[worker]
        self.worker = worker
        self.shared = shared
        self.min_bytes = min_bytes
        self.buffers: list[torch.Tensor | None] = [None] * (len(self.flags) - 1)
        self.views: list[memoryview | None] = [None] * len(self.buffers)
        self.next = 0
        self.parent = os.getppid()
        self.allocations = 0

    def write(self, samples: list[Any]) -> Delivery:
        planner = _Planner()
        tree = planner.plan(samples)
        slot = self._acquire()
        fresh = self._ensure(slot, planner.size)
        buffer, view = self.buffers[slot], self.views[slot]
        assert buffer is not None and view is not None
        for job in planner.jobs:
            job(buffer, view)
        self.flags[slot] = HELD
        return Delivery(self.worker, slot, planner.size, tree, buffer if fresh else None)

    def _acquire(self) -> int:
        slot = self.next
        self.next = (slot + 1) % len(self.buffers)
        delay = 20e-6
        while True:
            state = self.flags[slot]
            if state == FREE or self.buffers[slot] is None:  # never wait for memory not ours
                return slot
            if state == RETIRED:
                self.buffers[slot] = self.views[slot] = None
                return slot
            if self.flags[-1] or (self.shared and os.getppid() != self.parent):
                raise RingStopped
            time.sleep(delay)
            delay = min(2 * delay, _MAX_WAIT_S)

    def _ensure(self, slot: int, size: int) -> bool:
        """Whether slot ``slot`` got a new buffer to hold ``size`` bytes."""
        buffer = self.buffers[slot]
        if buffer is not None and buffer.numel() >= size:
            return False
        capacity = max(self.min_bytes, _aligned(size + size // 4))
        buffer = torch.empty(capacity, dtype=torch.uint8)
        if self.shared:  # moving it into shared memory copies it: every page faulted in once
            buffer.share_memory_()  # type: ignore[no-untyped-call]
        else:
            buffer.zero_()  # pre-faulted here
        self.buffers[slot] = buffer
        self.views[slot] = memoryview(buffer.numpy())  # type: ignore[arg-type]
        self.allocations += 1
        return True


# -- the main process's side --------------------------------------------------------------


@dataclass
class _Slot:
    buffer: torch.Tensor
    array: np.ndarray
    generation: int
    live: bool = False
    age: int = 0
    """The batch number (main-process count) it was handed out at, while live."""


class SlotViews:
    """The main process's view of every worker's slots: hands out batches, frees slots."""

    def __init__(self, flags: torch.Tensor):
        self.flags = flags.numpy()
        self.slots: dict[tuple[int, int], _Slot] = {}
        self.count = 0
        self.retired = 0
        self.buffers = 0
        self._lock = threading.Lock()

    def receive(self, delivery: Delivery) -> Any:
        """The batch of ``delivery``, as views of its slot."""
        key = (delivery.worker, delivery.slot)
        with self._lock:
            slot = self.slots.get(key)
            if delivery.buffer is not None:
                self.buffers += 1
                slot = _Slot(delivery.buffer, delivery.buffer.numpy(), self.buffers)
                self.slots[key] = slot
            if slot is None:
                raise RuntimeError(f"worker {delivery.worker} used slot {delivery.slot} unsent")
            slot.live, slot.age = True, self.count
            self.count += 1
            region = slot.array[: delivery.used]  # every view of the batch keeps it alive
            weakref.finalize(region, self._dropped, key, slot.generation)
        return rebuild(delivery.tree, torch.from_numpy(region))

    def _dropped(self, key: tuple[int, int], generation: int) -> None:
        """Every view of a batch is gone: its slot may be written again."""
        with self._lock:
            slot = self.slots.get(key)
            if slot is not None and slot.generation == generation and slot.live:
                slot.live = False
                self.flags[key] = FREE

    def retire_older(self, hold: int) -> None:
        """Stop waiting for batches handed out ``hold`` or more batches ago that are
        still referenced: their workers write new buffers instead."""
        horizon = self.count - hold
        with self._lock:
            for key, slot in list(self.slots.items()):
                if slot.live and slot.age <= horizon:
                    self.flags[key] = RETIRED
                    del self.slots[key]
                    self.retired += 1

    def stop(self) -> None:
        """Tell every worker to stop waiting for a slot."""
        self.flags[:, -1] = 1


def new_flags(workers: int, slots: int) -> torch.Tensor:
    """The shared slot-state table for ``workers`` workers of ``slots`` slots each."""
    flags = torch.zeros((max(1, workers), slots + 1), dtype=torch.int32)
    flags.share_memory_()  # type: ignore[no-untyped-call]
    return flags
