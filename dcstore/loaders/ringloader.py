"""``RingLoader``: a ``DataLoader`` whose batches arrive in reusable shared memory.

Usage (in place of ``DataLoader(ds, batch_size=64, num_workers=8)``)::

    loader = RingLoader(ds, batch_size=64, num_workers=8)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for images, labels in loader: ...

Guarantees:

* Batches are shaped as ``default_collate`` shapes them (tensors stacked,
  numbers as tensors, dicts and tuples kept, different dtypes promoted), except
  that bytes-like fields arrive as a list of uint8 tensors (raw payloads, e.g. for
  ``torchvision.io.decode_jpeg``), tuples stay tuples, and a field of strings,
  objects or Python numbers mixed with them arrives as a list (tensors or arrays
  mixed with ``None`` raise, as ``default_collate`` does).
* Each worker collates its batches straight into a few slots of shared memory
  it reuses (:mod:`dcstore.loaders.ring`); the main process receives a slot
  number and views it. Nothing is copied or allocated per batch after warm-up.
* A batch's tensors stay valid as long as they are referenced: a slot is
  rewritten only after every view of its batch is gone. A batch still
  referenced ``hold`` batches later is given up by the loader (its worker writes
  a new buffer), so keeping batches costs memory, never correctness.
* Everything the dataset guarantees holds: with ``ShardedDataset`` every
  sample exactly once across ranks and workers, the planned order, and
  :meth:`state_dict` / :meth:`load_state_dict` resume after the last batch
  handed out (StatefulDataLoader style, any ``num_workers`` on resume; with
  several workers a resumed pass starts with worker 0, so the workers' batches
  may interleave otherwise than uninterrupted, unlike StatefulDataLoader's). Once a
  pass's loop ends, the dataset is at the next epoch's start: later passes read
  whole epochs, after a resumed one too, with or without ``set_epoch``. Each pass
  reads the epoch the dataset here says, ``persistent_workers`` or not (after a pass
  left by an error or a ``break`` too), and a state loaded while persistent workers
  run is resumed (they are started afresh with it). Persistent workers serve one
  pass at a time: an iterator begun while another is under way takes them over, and
  the earlier one raises ``RuntimeError`` if it is advanced again (without them,
  each iterator reads its own whole pass).
  Batches are formed per worker, as ``DataLoader`` does for iterable datasets:
  each worker's last batch may be short (``drop_last`` drops it).
* The shared memory is unlinked when it is created: nothing is left in
  ``/dev/shm`` after a crash, ``kill -9`` or ^C. A worker waiting for a slot
  stops when the loader is closed or the main process is gone.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, NoReturn

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dcstore.errors import ConfigError
from dcstore.loaders import stages
from dcstore.loaders.resumable import _at_start, state_source, wrong_state
from dcstore.loaders.ring import (
    Delivery,
    RingStopped,
    SlotViews,
    SlotWriter,
    new_flags,
    slot_buffer,
)
from dcstore.units import whole_number

DEFAULT_SLOT_BYTES = 1 << 20
DEFAULT_PREFETCH_FACTOR = 4
"""Batches in flight per worker (``prefetch_factor=None`` means it, as with DataLoader)."""
FIRST_SLOT_MAX_BYTES = 64 << 20
"""A worker's first slot is made by the main process only up to this size (larger ones,
made by the workers, fault in on every core at once)."""


def _raise_worker_death(deliveries: Iterator[Any], exc: BaseException) -> NoReturn:
    """A worker that dies while handing over a new slot's shared memory leaves the main
    process a reset connection (the descriptor transfer) before the DataLoader notices
    the death: ask the DataLoader once more, so the error names the dead worker as a
    plain DataLoader's does; if it has nothing to say, raise the transfer's error."""
    with contextlib.suppress(StopIteration):
        next(deliveries)
    raise RuntimeError(f"RingLoader: a worker's batch hand-off failed: {exc}") from exc


def _delivered(item: Any) -> Any:
    """The DataLoader's collate: a delivery passes as it is."""
    return item


class _RingSource(IterableDataset):  # type: ignore[type-arg]
    """The dataset's samples, batched per worker into that worker's slots."""

    def __init__(
        self, dataset: Any, batch_size: int, drop_last: bool, flags: Any, min_bytes: int,
        first: list[Any] | None = None, epoch: torch.Tensor | None = None,
    ):  # fmt: skip
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.flags = flags
        self.min_bytes = min_bytes
        self.first = first
        """Each worker's slot 0, made by the main process (dropped there once workers start)."""
        self._writer: SlotWriter | None = None
        """This process's writer, kept across passes (persistent workers reuse their slots)."""
        self.epoch = epoch
        """Shared: the main process's dataset epoch for the pass beginning (-1: none)."""
        self._began = False
        """A pass began in this process (a persistent worker's later passes follow ``epoch``)."""

    def __iter__(self) -> Iterator[Delivery]:
        """Not a generator: ``iter(self.dataset)`` is called at once (a worker does this
        before it waits for its first request, and ``ShardedDataset`` starts reading then).
        A persistent worker's later pass first sets its copy of the dataset to the main
        process's epoch: a worker that handed out its whole share moved to the next epoch,
        one left mid-pass (an error, a ``break``) did not, and ``set_epoch`` in the main
        process reached neither."""
        epoch = -1 if self.epoch is None else int(self.epoch[0])
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if self._began and epoch >= 0 and set_epoch is not None:
            set_epoch(epoch)
        self._began = True
        return self._batches(iter(self.dataset))

    def _batches(self, items: Iterator[Any]) -> Iterator[Delivery]:
        writer = self._writer
        if writer is None:
            info = get_worker_info()
            worker = info.id if info is not None else 0
            writer = self._writer = SlotWriter(
                self.flags, worker, shared=info is not None, min_bytes=self.min_bytes,
                batch_size=self.batch_size, first=self.first[worker] if self.first else None,
            )  # fmt: skip
            self.first = None
        writer.discard()  # a batch left unfinished by the last pass (drop_last, an error)
        stateful = hasattr(self.dataset, "state_dict")
        batch: list[Any] = []
        try:
            for item in items:
                writer.add(item)  # its byte strings, while the CPU cache still holds them
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield self._deliver(writer, batch, stateful)
                    batch = []
            if batch and not self.drop_last:
                yield self._deliver(writer, batch, stateful)
        except RingStopped:
            return

    def _deliver(self, writer: SlotWriter, batch: list[Any], stateful: bool) -> Delivery:
        delivery = writer.finish(batch)
        if stateful:
            delivery.state = self.dataset.state_dict()
        return delivery


class RingLoader:
    """Batches of ``dataset`` (an iterable dataset, e.g. ``ShardedDataset``) through
    reusable shared-memory slots. The other arguments are ``DataLoader``'s;
    ``hold`` is how many batches later a still-referenced batch is given up,
    ``slot_bytes`` the smallest slot (slots grow to fit a batch and a quarter).
    ``prefetch_factor`` defaults to 4 batches per worker, not ``DataLoader``'s 2:
    an in-flight batch is a slot, not a new allocation, and the deeper queue
    absorbs the scheduling jitter of a busy host (measured: 12-13.7k -> 15.5-19k
    samples/s of 100 KiB payloads on 2 cores). Memory: at most ``num_workers`` x
    :attr:`slots_per_worker` slots of about 1.25 batches each; a worker reuses its
    lowest free slot, so it allocates only as many as the training loop's pace keeps
    busy, and with ``persistent_workers`` keeps them from one epoch to the next. Each
    worker's first slot is made here before the workers start (sized from the
    dataset's ``mean_sample_bytes`` when it has one, else ``slot_bytes``), so first
    batches that fit need no buffer handed over (a file descriptor sent between
    processes: measured, a quarter of a first batch on 2 cores)."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        num_workers: int = 0,
        drop_last: bool = False,
        prefetch_factor: int | None = DEFAULT_PREFETCH_FACTOR,
        hold: int = 2,
        slot_bytes: int = DEFAULT_SLOT_BYTES,
        persistent_workers: bool = False,
        multiprocessing_context: Any = None,
        worker_init_fn: Any = None,
        timeout: float = 0,
    ):
        if isinstance(dataset, str | bytes | bytearray | memoryview) or not (
            hasattr(type(dataset), "__iter__") or hasattr(type(dataset), "__getitem__")
        ):  # a string's characters were taken for samples
            raise ConfigError(
                "dataset must be an iterable dataset of samples (e.g. ShardedDataset), "
                f"got {type(dataset).__name__}"
            )
        batch_size = whole_number("batch_size", batch_size, 1)  # a float made one batch
        num_workers = whole_number("num_workers", num_workers)  # "2" failed in the DataLoader
        if prefetch_factor is None:  # as DataLoader's None: the default
            prefetch_factor = DEFAULT_PREFETCH_FACTOR
        prefetch_factor = whole_number("prefetch_factor", prefetch_factor, 1)  # 0: no slots
        hold = whole_number("hold", hold, 1)
        slot_bytes = whole_number("slot_bytes", slot_bytes, 1)  # "1MiB" failed in a worker
        if persistent_workers and num_workers == 0:
            raise ConfigError("persistent_workers needs num_workers > 0")
        if any(stages.is_batching(stage) for stage in getattr(dataset, "stages", ())):
            raise ConfigError(
                "RingLoader batches samples itself: drop .batched() from the dataset "
                "(or keep it and use DataLoader(ds, batch_size=None))"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.prefetch_factor = prefetch_factor
        self.hold = hold
        self.slot_bytes = slot_bytes
        self.persistent_workers = persistent_workers
        self._loader_args: dict[str, Any] = {
            "multiprocessing_context": multiprocessing_context,
            "worker_init_fn": worker_init_fn,
            "timeout": timeout,
        }
        self._loader: DataLoader[Any] | None = None
        self._views: SlotViews | None = None
        self._states: dict[int, dict[str, Any]] = {}
        self._finished = False  # the last pass's loop ended (its state: the next epoch's start)
        self._pass_epoch: int | None = None  # the dataset's epoch when the last pass began
        self._epoch = torch.full((1,), -1, dtype=torch.int64)  # told to each pass's workers
        self._epoch.share_memory_()  # type: ignore[no-untyped-call]
        self._workers_resume = False  # persistent workers started with a state to resume
        self._iterating: object | None = None  # the pass persistent workers serve now (the
        # latest begun: an earlier one still referenced, even unreachable, is superseded)
        self.stats = {"batches": 0, "retired": 0, "buffers": 0}
        """This pass: batches handed out, given up while referenced, slot buffers received."""

    @property
    def slots_per_worker(self) -> int:
        """In flight (``prefetch_factor``), held (``hold``) and one being written."""
        return (self.prefetch_factor if self.num_workers else 0) + self.hold + 1

    def _start(self) -> tuple[DataLoader[Any], SlotViews]:
        """The pass's loader: persistent workers are reused, each pass told the dataset's
        epoch (:class:`_RingSource`), unless they or the dataset here hold a state to
        resume (loaded, or left by a pass that did not end): then they are started afresh
        with the dataset's state, as workers of every pass are without persistence."""
        epoch = getattr(self.dataset, "epoch", None)
        self._epoch[0] = epoch if isinstance(epoch, int) and epoch >= 0 else -1
        if self._loader is not None and self._views is not None and self.persistent_workers:
            if not self._workers_resume and not self._resuming():
                return self._loader, self._views
            self._close()
        flags = new_flags(self.num_workers, self.slots_per_worker)
        first = self._first_slots()
        source = _RingSource(
            self.dataset, self.batch_size, self.drop_last, flags, self.slot_bytes, first,
            self._epoch,
        )  # fmt: skip
        self._workers_resume = self.persistent_workers and self._resuming()
        loader: DataLoader[Any] = DataLoader(
            source, batch_size=None, num_workers=self.num_workers, collate_fn=_delivered,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            **self._loader_args,
        )  # fmt: skip
        self._loader, self._views = loader, SlotViews(flags, first or ())
        return loader, self._views

    def _resuming(self) -> bool:
        """The dataset here holds a state to resume (not an epoch's start)."""
        if not hasattr(self.dataset, "next_epoch_state"):
            return False
        state = self.dataset.state_dict()
        return isinstance(state, dict) and "positions" in state and not _at_start(state)

    def _close(self) -> None:
        """Shut the persistent workers down (the next pass starts new ones)."""
        loader, views = self._loader, self._views
        self._loader = self._views = None
        if views is not None:
            views.stop()
        iterator = getattr(loader, "_iterator", None)
        if loader is not None and iterator is not None:
            loader._iterator = None
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def _first_slots(self) -> list[Any] | None:
        """Each worker's first slot, made here: the workers inherit it, so their first
        batches need no buffer handed over. Sized for a batch when the dataset says what
        a sample takes (``mean_sample_bytes``: ``ShardedDataset`` and ``TokenDataset``
        do), else ``slot_bytes``. A batch that does not fit (decoded images) makes its
        worker allocate a bigger slot and send it, as without this."""
        if not self.num_workers:
            return None
        mean = getattr(self.dataset, "mean_sample_bytes", None)
        size = self.batch_size * mean if isinstance(mean, int) and mean > 0 else 0
        if size > FIRST_SLOT_MAX_BYTES:
            return None
        return [slot_buffer(size, self.slot_bytes, shared=True) for _ in range(self.num_workers)]

    def __repr__(self) -> str:
        return (
            f"RingLoader({self.dataset!r}, batch_size={self.batch_size}, "
            f"num_workers={self.num_workers})"
        )

    def __iter__(self) -> Iterator[Any]:
        loader, views = self._start()
        if self.persistent_workers:
            views.discard_in_flight()  # what a pass left early had in flight
        self._states = {}
        self._finished, self._pass_epoch = False, getattr(self.dataset, "epoch", None)
        counted = {"batches": views.count, "retired": views.retired, "buffers": views.buffers}
        deliveries = iter(loader)
        loader.dataset.first = None  # type: ignore[attr-defined] # the workers hold them now
        this_pass = object()
        if self.persistent_workers:
            self._iterating = this_pass
        try:
            while True:
                if self._iterating is not this_pass and self.persistent_workers:
                    raise RuntimeError(
                        "this RingLoader pass was superseded: a newer iteration of the loader "
                        "took its persistent workers over (as DataLoader's does; resumed, "
                        "this one handed out a batch twice): iterate one pass at a time"
                    )
                views.retire_older(self.hold)
                try:
                    delivery = next(deliveries)
                except StopIteration:
                    self._finished = True
                    self._workers_resume = False  # each ended its share: nothing to resume
                    self._to_next_epoch()
                    return
                except (ConnectionResetError, EOFError) as exc:
                    _raise_worker_death(deliveries, exc)
                batch = views.receive(delivery)
                if delivery.state is not None:
                    self._states[delivery.worker] = delivery.state
                now = {"batches": views.count, "retired": views.retired, "buffers": views.buffers}
                self.stats = {k: now[k] - counted[k] for k in now}
                yield batch
                del batch
        finally:
            if self._iterating is this_pass:
                self._iterating = None
            if not self.persistent_workers:
                views.stop()  # a worker waiting for a slot gives up; then the loader shuts down
                # here and now: after a worker's error the iterator outlives the pass (its
                # traceback's frames hold it), and destroyed in the next pass's forked
                # workers it printed "Exception ignored ... can only test a child process"
                shutdown = getattr(deliveries, "_shutdown_workers", None)
                if shutdown is not None:
                    shutdown()
                del deliveries

    def __len__(self) -> int:
        """Batches per epoch (this rank), counted per worker as they are formed."""
        plan = getattr(self.dataset, "plan", None)
        if plan is None:
            n = len(self.dataset)
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        workers = max(1, self.num_workers)
        sizes = [len(plan(w, workers)) for w in range(workers)]
        if self.drop_last:
            return sum(s // self.batch_size for s in sizes)
        return sum(-(-s // self.batch_size) for s in sizes)

    # -- resumption -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The dataset's position after the last batch handed out, every worker merged."""
        merge = getattr(self.dataset, "merge_states", None)
        initial = getattr(self.dataset, "worker_state", None)
        if merge is None or initial is None:
            raise ConfigError(f"{type(self.dataset).__name__} cannot be resumed (no state_dict)")
        workers = max(1, self.num_workers)
        states = [self._states.get(w) or initial(w, workers) for w in range(workers)]
        merged = merge(states)
        after = getattr(self.dataset, "next_epoch_state", None)
        # the loop over the pass's epoch ended: the next one's start. The workers' states
        # name that epoch (persistent ones move on by themselves); with none delivered,
        # the dataset's own must still be the one the pass began with
        of_pass = bool(self._states) or merged.get("epoch") == self._pass_epoch
        if self._finished and after is not None and of_pass:
            merged = after(merged)
        return {"dataset": merged}

    def _to_next_epoch(self) -> None:
        """The pass's loop ended: the dataset here moves to the next epoch's start (what
        :meth:`state_dict` now gives), so the next pass's fresh workers read that epoch
        whole, not a loaded state's rest again (with or without ``set_epoch``)."""
        if hasattr(self.dataset, "next_epoch_state") and hasattr(self.dataset, "load_state_dict"):
            self.dataset.load_state_dict(self.state_dict()["dataset"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at :meth:`state_dict`'s position (from the next ``iter``)."""
        if state_source(state) != "RingLoader":
            raise wrong_state(state, "a RingLoader.state_dict()", type(self.dataset).__name__)
        self.dataset.load_state_dict(copy.deepcopy(state["dataset"]))
        self._states = {}
        self._finished = False
