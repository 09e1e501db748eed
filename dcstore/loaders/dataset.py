"""``ShardedDataset``: the PyTorch ``IterableDataset`` over a packed dataset.

Usage::

    ds = ShardedDataset("file:///data/imagenet", keys="file:///etc/dcstore/kek.json",
                        shuffle=True, seed=0).decode("rgb8").to_tuple("jpg", "cls")
    loader = DataLoader(ds, batch_size=256, num_workers=8, pin_memory=True)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for images, labels in loader: ...

Guarantees:

* Per epoch every sample is read exactly once across ranks and workers
  (see :mod:`dcstore.loaders.plan` for padding when the world size does not
  divide the sample count), every rank yields the same number of samples,
  the order is a pure function of (seed, epoch, rank, world, worker, workers).
  Rank and world come from ``torch.distributed`` when it is initialised.
* Each worker reads ahead with its own thread pool, bounded by
  ``prefetch_bytes``; nothing is shared between processes. Workers receive
  the manifest and a picklable store (never key material).
* ``state_dict()``/``load_state_dict()`` follow torchdata's
  ``StatefulDataLoader`` protocol: resuming continues after the last sample
  handed out, without re-reading consumed data. To resume with a different
  ``num_workers``, pass :meth:`state_from_loader` of the loader's state.
* ``set_epoch(e)`` sets the epoch of the next pass; a pass that completes
  advances the epoch of the object that ran it (persistent workers advance
  on their own; with non-persistent workers call ``set_epoch``, as with
  ``DistributedSampler``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from dcstore.backends.base import Backend
from dcstore.errors import ConfigError
from dcstore.loaders import stages
from dcstore.loaders.alloc import recycle_run_buffers
from dcstore.loaders.handlers import ErrorHandler, reraise_exception
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest, open_dataset
from dcstore.loaders.plan import Layer, WorkerPlan, plan_epoch
from dcstore.loaders.prefetch import Prefetcher
from dcstore.loaders.reader import (
    DEFAULT_WINDOW_BYTES,
    Progress,
    Sample,
    SampleOptions,
    SkipPolicy,
    read_plan,
    read_sample,
)
from dcstore.store import CacheSpec, KeySpec

STATE_VERSION = 1


@dataclass
class _Pass:
    """The pass in progress: who runs it, what it resumed from, how far it got."""

    worker: int
    workers: int
    layers: list[Layer]
    consumed: int
    progress: Progress


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedDataset(IterableDataset):  # type: ignore[type-arg]
    """Samples of the dataset at ``url_or_store``, streamed in a planned order.

    ``cache`` and ``keys`` are passed to :func:`dcstore.store.open_store`
    (ignored when a :class:`Backend` is given). ``window`` is the minimum
    number of samples shuffled together (whole shard spans are mixed; memory
    grows with it). ``shuffle_buffer=N`` then passes each worker's samples
    through a shuffle buffer of ``N`` samples, like webdataset's
    ``.shuffle(N)`` but deterministic and resumable (memory: up to ``N``
    samples, copied out of their fetch windows). ``on_error="skip"`` skips
    unreadable shards (see :class:`SkipPolicy`) and samples that fail their
    checksum; the default raises naming the shard (and sample). Samples are
    webdataset dicts of ``bytes``; ``zero_copy=True`` hands out read-only
    memoryviews of the fetch buffers instead (see ``docs/samples.md``).
    ``verify_checksums=False`` skips the per-sample checksum check. Shards are
    fetched in aligned windows of ``window_bytes``, at most
    ``prefetch_bytes`` ahead per worker on ``prefetch_threads`` threads;
    ``tune_malloc`` applies :func:`~dcstore.loaders.alloc.recycle_run_buffers`
    in worker processes.
    """

    def __init__(
        self,
        url_or_store: str | Backend,
        *,
        cache: CacheSpec | None = None,
        keys: KeySpec | None = None,
        shuffle: bool = False,
        seed: int = 0,
        window: int = 0,
        shuffle_buffer: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        prefetch_bytes: int = 64 * 1024 * 1024,
        prefetch_threads: int = 2,
        on_error: str = "raise",
        manifest_key: str = MANIFEST_KEY,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        tune_malloc: bool = True,
        zero_copy: bool = False,
        verify_checksums: bool = True,
    ):
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.store: Backend
        self.manifest: Manifest
        self.store, self.manifest = open_dataset(
            url_or_store, cache=cache, keys=keys, manifest_key=manifest_key
        )
        self.shuffle = shuffle
        self.seed = seed
        self.window = window
        self.shuffle_buffer = shuffle_buffer
        self.drop_last = drop_last
        self._rank, self._world = rank, world_size
        self.prefetcher = Prefetcher(threads=prefetch_threads, max_bytes=prefetch_bytes)
        self.on_error = on_error
        self.window_bytes = window_bytes
        self.tune_malloc = tune_malloc
        self.sample_options = SampleOptions(zero_copy=zero_copy, verify=verify_checksums)
        self.epoch = 0
        self.stages: list[stages.Stage] = []
        self._resume: dict[str, Any] | None = None
        self._skip = SkipPolicy() if on_error == "skip" else None
        self._progress = Progress()
        self._active: _Pass | None = None

    # -- stages (webdataset style, see :mod:`~dcstore.loaders.stages`; each returns self) --

    def compose(self, stage: stages.Stage) -> ShardedDataset:
        """Append a generator stage ``stage(iterator) -> iterator``."""
        self.stages.append(stage)
        return self

    def decode(
        self, *handlers: str | stages.Handler, handler: ErrorHandler = reraise_exception
    ) -> ShardedDataset:
        return self.compose(stages.decode(*handlers, handler=handler))

    def to_tuple(self, *fields: str, handler: ErrorHandler = reraise_exception) -> ShardedDataset:
        return self.compose(stages.to_tuple(*fields, handler=handler))

    def map(
        self, fn: Callable[[Any], Any], handler: ErrorHandler = reraise_exception
    ) -> ShardedDataset:
        return self.compose(stages.map_stage(fn, handler))

    def map_dict(
        self, handler: ErrorHandler = reraise_exception, **fns: Callable[[Any], Any]
    ) -> ShardedDataset:
        return self.compose(stages.map_dict(handler, **fns))

    def map_tuple(
        self, *fns: Callable[[Any], Any] | None, handler: ErrorHandler = reraise_exception
    ) -> ShardedDataset:
        return self.compose(stages.map_tuple(*fns, handler=handler))

    def rename(
        self, *, keep: bool = True, handler: ErrorHandler = reraise_exception, **names: str
    ) -> ShardedDataset:
        return self.compose(stages.rename(keep=keep, handler=handler, **names))

    def select(self, predicate: Callable[[Any], bool]) -> ShardedDataset:
        return self.compose(stages.select(predicate))

    def batched(
        self, batch_size: int, collate_fn: Callable[[list[Any]], Any] | None = None, *,
        partial: bool = True,
    ) -> ShardedDataset:  # fmt: skip
        """Batch in the worker; use with ``DataLoader(ds, batch_size=None)``."""
        return self.compose(stages.batched(batch_size, collate_fn, partial=partial))

    # -- planning -------------------------------------------------------------------------

    @property
    def rank_world(self) -> tuple[int, int]:
        if self._rank is not None and self._world is not None:
            return self._rank, self._world
        rank, world = _distributed()
        return (self._rank if self._rank is not None else rank), (self._world or world)

    @property
    def skipped_samples(self) -> int:
        """Samples this process skipped with ``on_error="skip"`` (counted per worker)."""
        return self._skip.skipped_samples if self._skip is not None else 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next pass (clears any resumption state of another epoch)."""
        if self._resume is not None and self._resume["epoch"] != epoch:
            self._resume = None
        self.epoch = epoch

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its workers together)."""
        world = self.rank_world[1]
        total = self.manifest.num_samples
        return total // world if self.drop_last else -(-total // world)

    def _resolve(self, worker: int, workers: int) -> tuple[list[Layer], int]:
        """(earlier layers, samples of this worker's plan already consumed)."""
        if self._resume is None:
            return [], 0
        state = self._resume
        rank, world = self.rank_world
        if state["world"] != world or state["rank"] != rank:
            raise ConfigError(
                f"resume state is for rank {state['rank']} of {state['world']}, "
                f"this is rank {rank} of {world}"
            )
        layers: list[Layer] = [(int(n), tuple(p)) for n, p in state["layers"]]
        positions = {int(w): int(p) for w, p in state["positions"].items()}
        if state["workers"] == workers and worker in positions:
            return layers, positions[worker]
        if len(positions) == state["workers"]:
            done = tuple(positions[w] for w in range(state["workers"]))
            return [*layers, (int(state["workers"]), done)], 0
        raise ConfigError(
            f"resume state holds {len(positions)} of {state['workers']} worker positions; "
            f"to resume with {workers} workers load ShardedDataset.state_from_loader(...)"
        )

    def plan(self, worker: int = 0, workers: int = 1) -> WorkerPlan:
        """This rank's plan for ``worker`` of ``workers`` this epoch, after any resume state."""
        layers, consumed = self._resolve(worker, workers)
        rank, world = self.rank_world
        plan = plan_epoch(
            self.manifest.counts, seed=self.seed, epoch=self.epoch, rank=rank, world=world,
            worker=worker, workers=workers, shuffle=self.shuffle, drop_last=self.drop_last,
            window=self.window, buffer=self.shuffle_buffer, resume=layers,
        )  # fmt: skip
        return plan.skip(consumed) if consumed else plan

    # -- iteration ------------------------------------------------------------------------

    def samples(self) -> Iterator[Sample]:
        """This worker's raw samples for the epoch (no stages), tracking progress."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None and self.tune_malloc:
            recycle_run_buffers()
        layers, consumed = self._resolve(worker, workers)
        plan = self.plan(worker, workers)
        if self._skip is not None and self._resume is not None:
            self._skip.skipped.update(self._resume.get("skipped_shards", ()))
        self._progress = Progress()
        self._active = _Pass(worker, workers, layers, consumed, self._progress)
        return read_plan(
            self.store, self.manifest, plan, self.prefetcher, self._progress, self._skip,
            self.window_bytes, self.sample_options,
        )  # fmt: skip

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        yield from stages.compose(self.samples(), self.stages)
        # A completed pass: the next one on this object is the next epoch.
        self._resume = None
        self._active = None
        if self.epoch == epoch:
            self.epoch = epoch + 1

    # -- resumption -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where this worker (or the main-process pass) is in the epoch."""
        active = self._active
        if active is None:
            info = get_worker_info()
            if info is None and self._resume is not None:
                return copy.deepcopy(self._resume)  # loaded, for workers to resolve
            worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
            return self.worker_state(worker, workers)
        return self._state(active)

    def worker_state(self, worker: int, workers: int) -> dict[str, Any]:
        """The state worker ``worker`` of ``workers`` starts this pass from (before reading)."""
        return self._state(_Pass(worker, workers, *self._resolve(worker, workers), Progress()))

    def _state(self, active: _Pass) -> dict[str, Any]:
        rank, world = self.rank_world
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer": self.shuffle_buffer,
            "epoch": self.epoch,
            "rank": rank,
            "world": world,
            "manifest_version": self.manifest.version,
            "layers": [[n, list(p)] for n, p in active.layers],
            "workers": active.workers,
            "positions": {str(active.worker): active.consumed + active.progress.pos},
            "skipped_shards": sorted(self._skip.skipped) if self._skip is not None else [],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (one worker's) or :meth:`state_from_loader`."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"unsupported ShardedDataset state version {state.get('version')!r}")
        if state["manifest_version"] != self.manifest.version:
            raise ConfigError(
                f"resume state is for dataset version {state['manifest_version']}, "
                f"{self.store.url} now holds {self.manifest.version}"
            )
        made_with = (state["seed"], state["shuffle"], state.get("shuffle_buffer", 0))
        if made_with != (self.seed, self.shuffle, self.shuffle_buffer):
            raise ConfigError(
                "resume state was made with a different seed, shuffle or shuffle_buffer setting"
            )
        self._resume = copy.deepcopy(dict(state))
        self._active = None
        self.epoch = state["epoch"]

    @staticmethod
    def merge_states(states: list[Mapping[str, Any]]) -> dict[str, Any]:
        """One state from the states of every worker of one loader."""
        if not states:
            raise ConfigError("no worker states to merge")
        merged = copy.deepcopy(dict(states[0]))
        for state in states[1:]:
            merged["positions"].update(state["positions"])
            merged["skipped_shards"] = sorted({*merged["skipped_shards"], *state["skipped_shards"]})
        return merged

    @classmethod
    def state_from_loader(cls, loader_state: Mapping[str, Any]) -> dict[str, Any]:
        """The dataset state inside a ``StatefulDataLoader.state_dict()``, all workers merged."""
        workers = loader_state.get("_snapshot", {}).get("_worker_snapshots")
        if workers:
            states = [w.get("dataset_state") for w in workers.values()]
        else:  # num_workers=0
            states = [loader_state.get("dataset_state")]
        states = [s for s in states if s]
        if not states:
            raise ConfigError("the loader state holds no ShardedDataset state")
        return cls.merge_states(states)

    @property
    def classes(self) -> list[str]:
        """Class names from the manifest (``cls`` is an index here); empty without a table."""
        return list(self.manifest.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> ``cls`` index, like torchvision's ``ImageFolder.class_to_idx``."""
        return self.manifest.class_to_idx

    # -- random access --------------------------------------------------------------------

    def read(self, index: int) -> Sample:
        """Global sample ``index`` (no stages), read with one range request."""
        return read_sample(self.store, self.manifest, index, self.sample_options)

    def __repr__(self) -> str:
        return (
            f"ShardedDataset({self.store.url!r}, samples={self.manifest.num_samples}, "
            f"shards={len(self.manifest.shards)}, version={self.manifest.version!r})"
        )
