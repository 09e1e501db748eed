"""Reading samples: a worker's plan -> byte ranges -> zero-copy sample dicts.

Guarantees:

* Each block of the plan is read as the fewest sample-aligned byte ranges
  (at most ``run_bytes`` each, from the manifest offsets) that cover its
  samples, so a resumed or partial reader never fetches samples it will not
  yield, and buffers stay small enough for the allocator to recycle.
* Samples come out in plan order as dicts ``{"__key__", "__index__",
  "__url__", field: memoryview}``; fields are read-only slices of the fetched
  buffer (no copy). Keep ``bytes(value)`` if a field must outlive the sample.
* A shard that cannot be read or parsed raises the backend's error (or
  :class:`IntegrityError` for a malformed tar / a sample count that does not
  match the manifest), naming the shard. With a :class:`SkipPolicy`, its
  samples are skipped instead, counted, logged, and remembered.
* ``read_sample`` reads one sample by range (random access).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from dcstore.backends.base import Backend
from dcstore.errors import DcstoreError, IntegrityError
from dcstore.loaders.manifest import Manifest
from dcstore.loaders.plan import WorkerPlan
from dcstore.loaders.prefetch import Prefetcher
from dcstore.loaders.tario import group_samples, parse_members, sample_dict

log = logging.getLogger(__name__)

DEFAULT_RUN_BYTES = 16 << 20
"""Shards are fetched in sample-aligned runs of at most this many bytes: smaller than
glibc's largest mmap threshold (32 MiB), so run buffers are recycled by the allocator
instead of being freshly mapped and page-faulted for every shard (PERF-NOTES)."""

Sample = dict[str, object]


@dataclass(frozen=True, slots=True)
class Run:
    """Contiguous samples ``[first, last]`` of one shard and their byte range."""

    shard: int
    first: int
    last: int
    start: int
    end: int


@dataclass
class SkipPolicy:
    """Opt-in: skip unreadable or corrupt shards instead of raising.

    ``skipped`` holds shard indices already skipped (restored from a resumed
    state, so a resumed run skips the same shards without retrying them);
    ``skipped_samples`` counts samples lost in this process.
    """

    skipped: set[int] = field(default_factory=set)
    skipped_samples: int = 0


@dataclass
class Progress:
    """Samples of the plan consumed so far (yielded or skipped)."""

    pos: int = 0


def runs_for(
    manifest: Manifest, block: np.ndarray, max_bytes: int = DEFAULT_RUN_BYTES
) -> list[Run]:
    """The fewest contiguous runs covering the samples of ``block``, each at most
    ``max_bytes`` unless one sample is larger (a whole small shard is one run)."""
    if len(block) == 0:
        return []
    ids = np.unique(block)
    shards = np.searchsorted(manifest.starts, ids, side="right") - 1
    local = ids - manifest.starts[shards]
    breaks = np.nonzero((np.diff(shards) != 0) | (np.diff(local) != 1))[0] + 1
    runs = []
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(ids)], strict=True):
        shard, first, last = int(shards[lo]), int(local[lo]), int(local[hi - 1])
        info = manifest.shards[shard]
        if first == 0 and last == info.num_samples - 1 and info.size <= max_bytes:
            runs.append(Run(shard, first, last, 0, info.size))
            continue
        ends = info.offsets + info.lengths
        while first <= last:
            start = int(info.offsets[first])
            stop = int(np.searchsorted(ends, start + max_bytes, side="right")) - 1
            stop = min(max(stop, first), last)
            runs.append(Run(shard, first, stop, start, int(ends[stop])))
            first = stop + 1
    return runs


def fetch_run(store: Backend, manifest: Manifest, run: Run) -> bytes:
    """The bytes of ``run`` (one ``get`` for a whole shard, else one ``get_range``)."""
    info = manifest.shards[run.shard]
    if run.start == 0 and run.end == info.size:
        return store.get(info.key)
    return store.get_range(info.key, run.start, run.end)


def parse_run(store: Backend, manifest: Manifest, run: Run, data: bytes) -> list[Sample]:
    """Split the fetched bytes of ``run`` into its samples, checked against the manifest."""
    info = manifest.shards[run.shard]
    view = memoryview(data)
    spans = group_samples(parse_members(view, base=run.start))
    expected = run.last - run.first + 1
    if len(spans) != expected:
        raise IntegrityError(
            f"{store.url}/{info.key}: found {len(spans)} samples in bytes "
            f"[{run.start}, {run.end}), the manifest lists {expected}"
        )
    url = f"{store.url}/{info.key}"
    base = int(manifest.starts[run.shard]) + run.first
    out = []
    for i, span in enumerate(spans):
        sample = sample_dict(view, span, run.start)
        sample["__index__"] = base + i
        sample["__url__"] = url
        out.append(sample)
    return out


def _named(store: Backend, key: str, exc: BaseException) -> BaseException:
    """``exc`` re-raised so that its message names the shard."""
    if isinstance(exc, DcstoreError) and key not in str(exc):
        return type(exc)(f"shard {store.url}/{key}: {exc}")
    return exc


def read_plan(
    store: Backend,
    manifest: Manifest,
    plan: WorkerPlan,
    prefetcher: Prefetcher,
    progress: Progress,
    skip: SkipPolicy | None = None,
    run_bytes: int = DEFAULT_RUN_BYTES,
) -> Iterator[Sample]:
    """Yield the plan's samples in order, fetching ahead with ``prefetcher``."""
    blocks = plan.blocks
    block_runs = [runs_for(manifest, b, run_bytes) for b in blocks]
    skipped = skip.skipped if skip is not None else set()

    def wanted() -> Iterator[Run]:
        for runs in block_runs:
            yield from (r for r in runs if r.shard not in skipped)

    results = prefetcher.map(
        lambda r: fetch_run(store, manifest, r), wanted(), lambda r: r.end - r.start
    )
    for block, runs in zip(blocks, block_runs, strict=True):
        by_index: dict[int, Sample] = {}
        for run in runs:
            if run.shard in skipped:
                continue
            got = next(results)
            key = manifest.shards[run.shard].key
            try:
                if got.error is not None:
                    raise got.error
                for sample in parse_run(store, manifest, run, got.value):  # type: ignore[arg-type]
                    by_index[sample["__index__"]] = sample  # type: ignore[index]
            except Exception as exc:
                if skip is None or not isinstance(exc, (DcstoreError, OSError)):
                    raise _named(store, key, exc) from exc
                skipped.add(run.shard)
                log.warning("skipping shard %s/%s: %s", store.url, key, exc)
            del got
        for index in block.tolist():
            sample = by_index.get(index)
            progress.pos += 1
            if sample is None:
                if skip is not None:
                    skip.skipped_samples += 1
                continue
            yield sample
        del by_index


def read_sample(store: Backend, manifest: Manifest, index: int) -> Sample:
    """Read global sample ``index`` with one range request."""
    shard, local = manifest.locate(index)
    info = manifest.shards[shard]
    start = int(info.offsets[local])
    run = Run(shard, local, local, start, start + int(info.lengths[local]))
    try:
        data = store.get_range(info.key, run.start, run.end)
        return parse_run(store, manifest, run, data)[0]
    except DcstoreError as exc:
        raise _named(store, info.key, exc) from exc
