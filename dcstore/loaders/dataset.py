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
  Rank and world come from ``torch.distributed`` when it is initialised; the ranks
  then also agree on the dataset version (rank 0's: see
  :mod:`dcstore.loaders.agreement`), so a pack committing while they start cannot
  split an epoch across two versions. ``version=`` pins one instead (the current
  manifest or its archive, while the store keeps it).
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
  ``DistributedSampler``). Called in the main process, ``set_epoch`` reaches
  persistent workers too (a shared cell they read as each pass begins, made by
  the first call: workers started before any call do not see it), so after a
  pass left early (a ``break``, an error) every worker reads the epoch it names.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from dcstore.backends.base import Backend
from dcstore.errors import ConfigError
from dcstore.loaders import stages
from dcstore.loaders.agreement import agree_on_version
from dcstore.loaders.alloc import recycle_run_buffers
from dcstore.loaders.handlers import ErrorHandler, reraise_exception
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest, load_manifest
from dcstore.loaders.prefetch import Prefetcher, ReadAhead
from dcstore.loaders.reader import (
    DEFAULT_WINDOW_BYTES,
    Sample,
    SampleOptions,
    SkipPolicy,
    read_plan,
    read_sample,
)
from dcstore.loaders.resumable import PlannedPasses, Progress, current_worker
from dcstore.loaders.versions import for_shard_reads, open_dataset, pin_version
from dcstore.store import CacheSpec, KeySpec
from dcstore.units import whole_number

log = logging.getLogger(__name__)


def auto_prefetch_threads(store: Backend) -> int:
    """Threads a reader fetches on unless told. A store across a network: 2, so one window
    is waited for while the next is. A store of local files: 1, since mapping a window is
    quick and a second thread only contends with the consumer; 2 only to decrypt (an
    encrypted store) when this process has a core to spare beyond the ``DataLoader``'s
    workers (no workers on 2 cores), so a window is decrypted while the last is parsed.
    Measured with ``bench/loaders_compare.py`` on 2 cores, 100 KiB samples, samples/s,
    alternated (``bench/results/loaders.md``): 2 workers, 1 thread against 2: count-only
    16.8-18.0k against 15.0-16.2k, encrypted 14.2-14.8k against 11.9-13.4k, RingLoader
    22.4-22.8k against 20.5-21.5k; no workers, plaintext 22.2-22.7k against 20.3-21.3k,
    encrypted 14.6-15.3k against 16.4-18.1k."""
    if not store.url.startswith("file:"):
        return 2
    info = get_worker_info()
    busy = info.num_workers if info is not None else 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 if store.authenticates_reads and (cores or 1) > busy else 1


class ShardedDataset(PlannedPasses, IterableDataset):  # type: ignore[type-arg]
    """Samples of the dataset at ``url_or_store``, streamed in a planned order.

    ``cache`` and ``keys`` are passed to :func:`dcstore.store.open_store`
    (ignored when a :class:`Backend` is given). ``window`` is the minimum
    number of samples shuffled together (whole shard spans are mixed; memory
    grows with it). ``shuffle_buffer=N`` then passes each worker's samples
    through a shuffle buffer of ``N`` samples, like webdataset's
    ``.shuffle(N)`` but deterministic and resumable (memory: up to ``N``
    samples, copied out of their fetch windows). ``on_error="skip"`` skips
    unreadable shards (see :class:`SkipPolicy`) and samples that fail their
    checksum (so with several ranks, a rank that skips takes fewer steps than the
    others: a warning says so); the default raises naming the shard (and sample). Samples are
    webdataset dicts of ``bytes``. Every sample once per epoch across ranks and workers;
    when ``world_size`` does not divide the sample count, the first ones of the epoch's
    order are read again to even the ranks out, or with ``drop_last=True`` the last ones
    are dropped (as torch's ``DistributedSampler``). ``zero_copy=True`` hands out read-only
    memoryviews of the fetch buffers instead (see ``docs/samples.md``).
    ``verify_checksums=False`` skips the per-sample checksum check. Shards are
    fetched in aligned windows of ``window_bytes``, at most
    ``prefetch_bytes`` ahead per worker on ``prefetch_threads`` threads (default:
    :func:`auto_prefetch_threads`);
    ``tune_malloc`` applies :func:`~dcstore.loaders.alloc.recycle_run_buffers`
    in worker processes. In a ``DataLoader`` worker, ``iter()`` starts the pass at
    once: up to ``read_ahead`` samples (and ``prefetch_bytes`` of them) are read in a
    background thread until the worker's first request arrives, so its first batch is
    not read only after the request (``read_ahead=0`` turns this off).

    ``version`` reads that dataset version: the current manifest or its archive (a
    :class:`NotFoundError` names the versions kept once it is dropped), e.g. the
    ``manifest_version`` of a resume state after a new pack. Without ``version``,
    ``rank`` and ``world_size``, and with ``torch.distributed`` initialised, building the
    dataset is a collective call: every rank must build it, and all read rank 0's version.
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
        prefetch_threads: int | None = None,
        on_error: str = "raise",
        manifest_key: str = MANIFEST_KEY,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        tune_malloc: bool = True,
        zero_copy: bool = False,
        verify_checksums: bool = True,
        read_ahead: int = 256,
        version: str | None = None,
    ):
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.window_bytes = whole_number("window_bytes", window_bytes, minimum=1)
        self.read_ahead = whole_number("read_ahead", read_ahead)
        self._init_passes(
            shuffle=shuffle, seed=seed, window=window, shuffle_buffer=shuffle_buffer,
            drop_last=drop_last, rank=rank, world_size=world_size,
        )  # fmt: skip
        self.store: Backend
        self.manifest: Manifest
        self.store, self.manifest = open_dataset(
            url_or_store, cache=cache, keys=keys, manifest_key=manifest_key, version=version
        )
        if version is None and rank is None and world_size is None:
            self.manifest = agree_on_version(
                self.manifest,
                lambda v: pin_version(self.store, load_manifest(self.store, manifest_key), v),
                lambda: load_manifest(self.store, manifest_key),
            )
        self.store = for_shard_reads(self.store, url_or_store)
        threads = 2 if prefetch_threads is None else prefetch_threads  # auto: see samples()
        self.prefetcher = Prefetcher(threads=threads, max_bytes=prefetch_bytes)
        self.auto_threads = prefetch_threads is None
        self.on_error = on_error
        self.tune_malloc = tune_malloc
        self.sample_options = SampleOptions(zero_copy=zero_copy, verify=verify_checksums)
        self.stages: list[stages.Stage] = []
        self._skip = SkipPolicy() if on_error == "skip" else None
        if self._skip is not None and self.rank_world[1] > 1:
            log.warning(
                "on_error='skip' with %d ranks: a rank that skips takes fewer steps than the "
                "others, so collectives (DDP's all-reduce) stop matching; end each epoch "
                "at the step count all ranks reach (all_reduce of a 'more data' flag)",
                self.rank_world[1],
            )

    # -- stages (webdataset style, see :mod:`~dcstore.loaders.stages`) ---------------------

    def compose(self, stage: stages.Stage) -> ShardedDataset:
        """A new dataset: this one's stages, then ``stage(iterator) -> iterator``. As in
        webdataset, this dataset is left as it is (so two pipelines can start from it, and
        running a notebook cell again does not stack a second ``batched``). The new one
        shares its epoch, resumption state and skipped shards: ``set_epoch`` or
        ``load_state_dict`` on either applies to both."""
        new = object.__new__(type(self))  # not copy.copy: that would run __getstate__
        new.__dict__.update(self.__dict__)
        new.stages = [*self.stages, stage]
        return new

    def __getstate__(self) -> dict[str, Any]:
        """As pickled for spawn/forkserver workers: a stage that cannot be is named."""
        for number, stage in enumerate(self.stages, 1):
            try:
                pickle.dumps(stage)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise pickle.PicklingError(
                    f"stage {number} of {len(self.stages)} of this ShardedDataset cannot be "
                    f"pickled ({exc}): DataLoader workers started with spawn or forkserver "
                    "receive the dataset pickled, so define its function at module level "
                    "(not a lambda or a nested function)"
                ) from exc
        return self.__dict__

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

    # -- planning (see :class:`~dcstore.loaders.resumable.PlannedPasses`) ------------------

    def item_counts(self) -> np.ndarray:
        return self.manifest.counts

    def __len__(self) -> int:
        """Samples this rank yields per epoch. With a ``batched`` stage, batches: formed
        per ``DataLoader`` worker, so their count depends on ``num_workers``, which only
        a worker knows; elsewhere a ``TypeError`` pointing at :meth:`batch_count`."""
        sizes = [s for s in self.stages if stages.is_batching(s)]
        if not sizes:
            return super().__len__()
        if len(sizes) > 1:
            raise TypeError("len() of a pipeline batched twice is not known")
        if get_worker_info() is None:
            raise TypeError(
                "len() of a batched ShardedDataset depends on how many DataLoader workers "
                "form its batches: use ds.batch_count(num_workers)"
            )
        return self.batch_count(current_worker()[1])

    def batch_count(self, num_workers: int = 0) -> int:
        """Batches per epoch on this rank when ``num_workers`` DataLoader workers (0: the
        main process) run the ``batched`` stage: each worker batches its own samples, so
        each may end with a partial batch (kept unless ``partial=False``). Counted from
        the samples planned, so an upper bound when a stage before ``batched`` drops
        some (``select``, a ``map`` returning ``None``, a ``handler`` that skips)."""
        batching = [s for s in self.stages if stages.is_batching(s)]
        if not batching:
            raise ConfigError("batch_count() needs a batched() stage")
        size, keep_partial = stages.batch_shape(batching[0])
        workers = max(1, num_workers)
        counts = [len(self.plan(w, workers)) for w in range(workers)]
        return sum(-(-n // size) if keep_partial else n // size for n in counts)

    def dataset_version(self) -> str:
        return self.manifest.version

    def extra_state(self) -> dict[str, Any]:
        return {"skipped_shards": sorted(self._skip.skipped) if self._skip is not None else []}

    @property
    def skipped_samples(self) -> int:
        """Samples this process skipped with ``on_error="skip"`` (counted per worker)."""
        return self._skip.skipped_samples if self._skip is not None else 0

    # -- iteration ------------------------------------------------------------------------

    def samples(self, read_ahead: int = 0) -> Iterator[Sample]:
        """This worker's raw samples for the epoch (no stages), tracking progress; the
        pass begins now. ``read_ahead`` > 0: a thread reads up to that many samples
        until the first is asked for (see :class:`~dcstore.loaders.prefetch.ReadAhead`)."""
        if get_worker_info() is not None and self.tune_malloc:
            recycle_run_buffers()
        if self.auto_threads:  # before this process's first fetch starts the threads
            self.prefetcher.threads = auto_prefetch_threads(self.store)
        if self._skip is not None and self._passes.resume is not None:
            self._skip.skipped.update(self._passes.resume.get("skipped_shards", ()))
        active, plan = self._begin_pass()
        progress = Progress() if read_ahead > 0 else active.progress
        samples = read_plan(
            self.store, self.manifest, plan, self.prefetcher, progress, self._skip,
            self.window_bytes, self.sample_options,
        )  # fmt: skip
        if read_ahead <= 0:
            return samples

        def handed(pos: int) -> None:  # the state counts what was handed out, not read
            active.progress.pos = pos

        return ReadAhead(
            samples, limit=read_ahead, max_bytes=self.prefetcher.max_bytes, size_of=_nbytes,
            mark=lambda: progress.pos, handed=handed,
        )  # fmt: skip

    def __iter__(self) -> Iterator[Any]:
        """The pass's samples through the stages. Not a generator: the pass (and, in a
        ``DataLoader`` worker, reading) starts when ``iter()`` is called, which a worker
        does before it waits for its first request."""
        worker = get_worker_info() is not None
        return self._run(self.samples(self.read_ahead if worker else 0))

    def _run(self, samples: Iterator[Sample]) -> Iterator[Any]:
        try:
            yield from stages.compose(samples, self.stages)
        finally:
            close = getattr(samples, "close", None)
            if close is not None:
                close()
        self._end_pass()

    @property
    def classes(self) -> list[str]:
        """Class names from the manifest (``cls`` is an index here); empty without a table."""
        return list(self.manifest.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> ``cls`` index, like torchvision's ``ImageFolder.class_to_idx``."""
        return self.manifest.class_to_idx

    @property
    def mean_sample_bytes(self) -> int:
        """The shards' bytes per sample, on average (tar headers and padding included):
        about what a sample's raw fields take (``RingLoader`` sizes first slots from it)."""
        n = self.manifest.num_samples
        return -(-self.manifest.total_bytes // n) if n else 0

    # -- random access --------------------------------------------------------------------

    def read(self, index: int) -> Sample:
        """Global sample ``index`` (no stages), read with one range request."""
        return read_sample(self.store, self.manifest, index, self.sample_options)

    def __repr__(self) -> str:
        staged = f", stages={len(self.stages)}" if self.stages else ""
        return (
            f"ShardedDataset({self.store.url!r}, samples={self.manifest.num_samples}, "
            f"shards={len(self.manifest.shards)}, version={self.manifest.version!r}{staged})"
        )


def _nbytes(sample: Sample) -> int:
    """The payload bytes of a raw sample (its bytes-like fields)."""
    return sum(len(v) for v in sample.values() if isinstance(v, (bytes, memoryview)))
