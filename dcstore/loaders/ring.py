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
  Slot 0 may instead be made by the main process before the workers start
  (:func:`slot_buffer`; both sides hold it from the start, so a worker's first
  batch needs no buffer handed over: that hand-off, a file descriptor sent
  through torch's resource sharer, is the slowest step of a first batch). It
  writes its lowest-numbered free slot (a retired one is renewed before a slot never
  used), so it holds only as many buffers as the training loop keeps busy.
* A batch is collated into the slot the way ``default_collate`` shapes it:
  tensors and numpy arrays stacked (samples of different dtypes promoted as
  ``torch.stack`` promotes them, never written into the first one's narrower type),
  numbers become int64 / float64 / bool tensors (mixed ones, and numpy scalars, typed
  as ``default_collate`` types them),
  bytes-like fields are packed and handed out as a list of uint8 tensors; strings
  and anything else pass through as lists. Byte strings are copied as each sample
  arrives (:meth:`SlotWriter.add`), while the bytes the dataset just read or checked
  are still in the CPU's cache; the rest when the batch is complete.
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

from dcstore.loaders.stages import different_fields, different_shapes

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
    """Byte strings from ``offset``; ``ends[i]`` is where item ``i`` ends (relative). Items
    are back to back unless ``starts`` gives where each begins (relative)."""

    offset: int
    ends: list[int]
    starts: list[int] | None = None


@dataclass(frozen=True, slots=True)
class Passed:
    """Values that do not go through the slot (strings, ``None``, other objects)."""

    values: list[Any]


Leaf = TensorLeaf | BytesLeaf | Passed
Job = Callable[[torch.Tensor, memoryview], None]

_NUMBER_DTYPES: dict[type, torch.dtype] = {bool: torch.bool, int: torch.int64, float: torch.float64}
_REAL = (int, float, np.bool_, np.integer, np.floating)
"""Numbers a column of Python numbers may mix (``bool`` is an ``int``)."""
_SCALARS = frozenset({*_NUMBER_DTYPES, str, type(None)})
"""Types that are never a ``Mapping`` (checked without the ABC's ``isinstance``)."""


def _is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, without the ABC's check for dicts and scalars."""
    return isinstance(value, dict) or (type(value) not in _SCALARS and isinstance(value, Mapping))


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


Path = tuple[Any, ...]
"""Where a field sits in a sample: the keys and positions leading to it."""


class _Planner:
    """Lays a batch out in slot bytes: the tree handed to the main process, and the copy jobs.

    ``placed`` holds the byte-string columns already copied into the slot (by path),
    which end before ``start``."""

    def __init__(self, placed: Mapping[Path, BytesLeaf] | None = None, start: int = 0) -> None:
        self.size = _aligned(start)
        self.jobs: list[Job] = []
        self.placed = placed or {}

    def _take(self, nbytes: int) -> int:
        offset = self.size
        self.size = _aligned(offset + nbytes)
        return offset

    def plan(self, column: Sequence[Any], path: Path = ()) -> Any:
        first = column[0]
        if isinstance(first, Mapping):
            if error := different_fields("RingLoader", column, _where(path) if path else ""):
                raise error
            return {k: self.plan([item[k] for item in column], (*path, k)) for k in first}
        if isinstance(first, tuple | list):
            if any(len(item) != len(first) for item in column):
                raise ValueError("each element in a batch should be of equal size")
            parts = enumerate(zip(*column, strict=True))
            planned = [self.plan(list(part), (*path, i)) for i, part in parts]
            return tuple(planned) if isinstance(first, tuple) else planned
        if isinstance(first, np.ndarray) and first.dtype.kind in "biufc":
            if any(type(a) is not np.ndarray or a.dtype != first.dtype for a in column):
                return self._promoted(column, path)
            return self._arrays(list(column), path)
        if isinstance(first, torch.Tensor):
            stacked = first.dtype  # torch's dtypes are singletons
            if any(getattr(t, "dtype", None) is not stacked for t in column):
                return self._promoted(column, path)
            return self._tensors(list(column), path=path)
        if isinstance(first, bytes | bytearray | memoryview):
            placed = self.placed.get(path)
            if placed is not None and len(placed.ends) == len(column):  # each item placed
                return placed
            return self._bytes(column, path)
        dtype = _NUMBER_DTYPES.get(type(first))
        if dtype is not None and all(type(v) is type(first) for v in column):
            return self._tensors([torch.tensor(list(column), dtype=dtype)], stacked=True)
        if isinstance(first, np.bool_ | np.number):  # default_collate: torch.as_tensor
            return self._built(torch.as_tensor, column, path)
        if dtype is not None and all(isinstance(v, _REAL) for v in column):
            # mixed int / float / bool: default_collate's torch.tensor, typed by the first
            kind = torch.float64 if dtype is torch.float64 else None
            return self._built(lambda c: torch.tensor(c, dtype=kind), column, path)
        return Passed(list(column))

    def _built(
        self, make: Callable[[list[Any]], torch.Tensor], column: Sequence[Any], path: Path
    ) -> TensorLeaf:
        """The tensor ``make`` builds of ``column``, copied into the slot."""
        try:
            tensor = make(list(column))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"RingLoader: {_where(path)}: {exc}") from exc
        return self._tensors([tensor], stacked=True)

    def _tensors(
        self, items: list[torch.Tensor], stacked: bool = False, path: Path = ()
    ) -> TensorLeaf:
        first = items[0]
        shape = tuple(first.shape) if stacked else (len(items), *first.shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * first.element_size()
        leaf = TensorLeaf(self._take(nbytes), first.dtype, shape)

        def copy(slot: torch.Tensor, _: memoryview) -> None:
            out = leaf_view(slot, leaf)
            if stacked:
                out.copy_(first)
                return
            try:
                torch.stack(items, out=out)
            except RuntimeError:
                _refuse_ragged(items, path)
                raise

        self.jobs.append(copy)
        return leaf

    def _promoted(self, column: Sequence[Any], path: Path) -> TensorLeaf:
        """A column whose samples differ in dtype, stacked as ``default_collate`` stacks
        it (numpy arrays as tensors, then torch's type promotion), then copied into the
        slot: typed from the first sample, wider values were truncated (300 as uint8: 44)."""
        try:
            items = [torch.as_tensor(item) for item in column]
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"RingLoader: {_where(path)}: {exc}") from exc
        try:
            stacked = torch.stack(items)
        except RuntimeError as exc:  # ragged, or dtypes torch does not promote (uint16)
            _refuse_ragged(items, path)
            raise TypeError(f"RingLoader: {_where(path)}: {exc}") from exc
        return self._tensors([stacked], stacked=True)

    def _arrays(self, items: list[np.ndarray], path: Path) -> TensorLeaf:
        """Numpy arrays stacked with numpy (read-only inputs, e.g. views of bytes, are fine)."""
        first = items[0]
        shape = (len(items), *first.shape)
        dtype = torch.from_numpy(np.empty(0, dtype=first.dtype)).dtype
        leaf = TensorLeaf(self._take(len(items) * first.nbytes), dtype, shape)

        def copy(slot: torch.Tensor, _: memoryview) -> None:
            out = slot.numpy()[leaf.offset : leaf.offset + len(items) * first.nbytes]
            try:
                np.stack(items, out=out.view(first.dtype).reshape(shape))
            except ValueError:
                _refuse_ragged(items, path)
                raise

        self.jobs.append(copy)
        return leaf

    def _bytes(self, column: Sequence[Any], path: Path) -> BytesLeaf:
        for i, v in enumerate(column):
            if not isinstance(v, bytes | bytearray | memoryview):
                raise TypeError(
                    f"RingLoader: {_where(path)}: sample {i} is a {type(v).__name__}, not "
                    f"bytes-like as sample 0 is; give the field one type in a .map() stage"
                )
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


def _refuse_ragged(column: Sequence[Any], path: Path) -> None:
    """After a failed stack: if ``column``'s arrays differ in shape, the error that says
    which field and what to do (checked only then: nothing is spent on batches that stack)."""
    shape = tuple(column[0].shape)
    other = next((item.shape for item in column if tuple(item.shape) != shape), None)
    if other is not None:
        raise different_shapes("RingLoader", f"{_where(path)}: {shape} and {tuple(other)}")


def _where(path: Path) -> str:
    """Where a field sits, for an error: ``['x'][0]``, or the samples themselves."""
    return "".join(f"[{p!r}]" for p in path) or "the samples"


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
        span = region[tree.offset : tree.offset + (tree.ends[-1] if tree.ends else 0)]
        if tree.starts is not None:
            return [span[a:b] for a, b in zip(tree.starts, tree.ends, strict=True)]
        return list(torch.split(span, np.diff(tree.ends, prepend=0).tolist()))
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


class _Placed:
    """Where the items of one byte-string column went in the slot (absolute offsets)."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def leaf(self) -> BytesLeaf:
        base = self.starts[0] if self.starts else 0
        ends = [e - base for e in self.ends]
        packed = all(a == b for a, b in zip(self.starts[1:], self.ends, strict=False))
        return BytesLeaf(base, ends, None if packed else [a - base for a in self.starts])


class SlotWriter:
    """Worker ``worker``'s slots: waits for a free one and collates a batch into it,
    sample by sample (:meth:`add`) then as a whole (:meth:`finish`)."""

    def __init__(
        self, flags: torch.Tensor, worker: int, *, shared: bool, min_bytes: int, batch_size: int,
        first: torch.Tensor | None = None,
    ):  # fmt: skip
        """``first``: slot 0's buffer, made by the main process (which holds it already)."""
        self.flags = flags.numpy()[worker]
        self.worker = worker
        self.shared = shared
        self.min_bytes = min_bytes
        self.buffers: list[torch.Tensor | None] = [None] * (len(self.flags) - 1)
        self.views: list[memoryview | None] = [None] * len(self.buffers)
        self.parent = os.getppid()
        self.allocations = 0
        self._slot: int | None = None
        """The slot of the batch being written, if a sample of it has been added."""
        self.batch_size = batch_size
        self._unsent: set[int] = set()
        """Slots whose buffer the main process has not received yet."""
        self._used = self._count = self._largest = 0
        self._placed: dict[Path, _Placed] = {}
        self._view = memoryview(b"")
        """The slot buffer of the batch being written."""
        if first is not None:
            self.buffers[0], self.views[0] = first, memoryview(first.numpy())  # type: ignore[arg-type]

    def add(self, sample: Any) -> None:
        """Copy ``sample``'s byte strings into the slot of the batch being written (the
        first sample of a batch waits for a free slot)."""
        if self._slot is None:
            slot = self._slot = self._acquire()
            # Sized like the largest batch so far; the first is sized from its first sample.
            if self._largest:
                self._ensure(slot, self._largest)
            self._view = self.views[slot] or memoryview(b"")
            self._used = self._count = 0
            self._placed = {}
        self._place(sample, ())
        self._count += 1

    def discard(self) -> None:
        """Forget a batch begun but not finished: its slot stays free."""
        self._slot = None

    def _place(self, value: Any, path: Path) -> None:
        if isinstance(value, bytes | bytearray | memoryview):
            self._copy(value, path)
        elif _is_mapping(value):
            for k, v in value.items():
                self._place(v, (*path, k))
        elif isinstance(value, tuple | list):
            for i, v in enumerate(value):
                self._place(v, (*path, i))

    def _copy(self, value: bytes | bytearray | memoryview, path: Path) -> None:
        data = memoryview(value).cast("B")
        start = self._used
        end = start + data.nbytes
        view = self._view
        if end > len(view):
            view = self._grow(max(end, end // (self._count + 1) * self.batch_size))
        if end > start:  # an empty field: nothing to write (the slot may have no buffer yet)
            view[start:end] = data
        self._used = end
        placed = self._placed.get(path)
        if placed is None:
            placed = self._placed[path] = _Placed()
        placed.starts.append(start)
        placed.ends.append(end)

    def finish(self, samples: list[Any]) -> Delivery:
        """The batch of ``samples`` (each already :meth:`add`-ed), collated into its slot
        and handed over: what goes through the ``DataLoader`` queue."""
        slot = self._slot
        assert slot is not None, "finish() before add()"
        try:
            placed = {path: p.leaf() for path, p in self._placed.items()}
            planner = _Planner(placed, self._used)
            tree = planner.plan(samples)
            if planner.size > len(self._view) or self.buffers[slot] is None:
                self._grow(max(planner.size, 1))  # a batch of no bytes still gets a slot
            buffer = self.buffers[slot]
            assert buffer is not None
            for job in planner.jobs:
                job(buffer, self._view)
        finally:
            self._slot = None  # the next sample starts a new batch, even after an error
        self.flags[slot] = HELD
        self._largest = max(self._largest, planner.size)
        fresh = slot in self._unsent
        self._unsent.discard(slot)
        return Delivery(self.worker, slot, planner.size, tree, buffer if fresh else None)

    def _grow(self, size: int) -> memoryview:
        """A bigger buffer for the batch's slot, keeping the bytes written so far."""
        slot = self._slot
        assert slot is not None
        old = self._view
        self.buffers[slot] = None
        self._ensure(slot, max(size, 2 * len(old)))
        self._view = self.views[slot]  # type: ignore[assignment]
        self._view[: self._used] = old[: self._used]
        return self._view

    def _acquire(self) -> int:
        """The lowest-numbered free slot that has a buffer, else a retired one, else one
        never used: as few buffers as the pace needs, so those written stay in the CPU's
        cache (and none is waited for while another is free)."""
        delay = 20e-6
        while True:
            flags = self.flags[:-1]
            free: list[int] = np.flatnonzero(flags == FREE).tolist()
            for slot in free:
                if self.buffers[slot] is not None:
                    return slot
            retired: list[int] = np.flatnonzero(flags == RETIRED).tolist()
            if retired:  # still viewed by the main process: its memory is never written again
                slot = retired[0]
                self.buffers[slot] = self.views[slot] = None
                self.flags[slot] = FREE
                return slot
            if free:
                return free[0]
            if self.flags[-1] or (self.shared and os.getppid() != self.parent):
                raise RingStopped
            time.sleep(delay)
            delay = min(2 * delay, _MAX_WAIT_S)

    def _ensure(self, slot: int, size: int) -> None:
        """Slot ``slot`` holds at least ``size`` bytes: a new buffer if it did not (sent to
        the main process with the first batch written into it)."""
        buffer = self.buffers[slot]
        if buffer is not None and buffer.numel() >= size:
            return
        buffer = slot_buffer(size, self.min_bytes, shared=self.shared)
        self.buffers[slot] = buffer
        self.views[slot] = memoryview(buffer.numpy())  # type: ignore[arg-type]
        self.allocations += 1
        self._unsent.add(slot)


def slot_buffer(size: int, min_bytes: int, *, shared: bool) -> torch.Tensor:
    """A slot buffer for a batch of ``size`` bytes and a quarter (at least ``min_bytes``),
    every page faulted in: in shared memory (unlinked) for a worker's slot."""
    buffer = torch.empty(max(min_bytes, _aligned(size + size // 4)), dtype=torch.uint8)
    if shared:  # moving it into shared memory copies it: every page faulted in once
        buffer.share_memory_()  # type: ignore[no-untyped-call]
    else:
        buffer.zero_()  # pre-faulted here
    return buffer


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

    def __init__(self, flags: torch.Tensor, first: Sequence[torch.Tensor] = ()):
        """``first[w]``: slot 0 of worker ``w``, made here before the workers start."""
        self.flags = flags.numpy()
        self.slots: dict[tuple[int, int], _Slot] = {
            (worker, 0): _Slot(buffer, buffer.numpy(), -1 - worker)
            for worker, buffer in enumerate(first)
        }
        self.count = 0
        self.retired = 0
        self.buffers = 0
        """Buffers received from workers (those made here not counted)."""
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

    def discard_in_flight(self) -> None:
        """Between passes of persistent workers: the batches in flight went with the pass
        (the DataLoader drops what it had prefetched), so their slots, held but handed out
        to nobody here, are retired: their workers write (and send) new buffers instead
        of waiting for those slots forever (a pass left early hung the next one)."""
        with self._lock:
            live = {key for key, slot in self.slots.items() if slot.live}
            for worker, slot in np.argwhere(self.flags[:, :-1] == HELD).tolist():
                if (worker, slot) not in live:
                    self.flags[worker, slot] = RETIRED
                    self.slots.pop((worker, slot), None)

    def stop(self) -> None:
        """Tell every worker to stop waiting for a slot."""
        self.flags[:, -1] = 1


def new_flags(workers: int, slots: int) -> torch.Tensor:
    """The shared slot-state table for ``workers`` workers of ``slots`` slots each."""
    flags = torch.zeros((max(1, workers), slots + 1), dtype=torch.int32)
    flags.share_memory_()  # type: ignore[no-untyped-call]
    return flags
