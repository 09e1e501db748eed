"""Pack a :class:`~dcstore.loaders.ingest.PackPlan` into a dataset, serially or across processes.

Guarantees:

* Shard boundaries are computed from the plan's sizes before any payload is
  read, with :class:`ShardWriter`'s own rule, so the work splits into runs of
  whole shards. Each process writes its runs with its own ``ShardWriter``
  under one shared version; the shards are byte for byte those of a serial
  pack of the same plan (only the version name differs between packs).
* The manifest is committed once, by the calling process, after every shard
  is stored; if any run fails nothing is committed (its stored shards are
  garbage for ``dcstore gc``).
* ``progress`` is called with payload byte counts as samples are read; the
  counts add up to exactly ``plan.total_bytes``.
* Worker processes are spawned (never forked), so any store that pickles can
  be used (an in-memory keyring cannot: pass a key URL).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import IO, Any, NamedTuple

from dcstore.backends.base import Backend
from dcstore.errors import ConfigError, IntegrityError
from dcstore.loaders.ingest import FileSlice, PackPlan, SampleSpec
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest, ShardInfo
from dcstore.loaders.tario import BLOCK, member_header, padded
from dcstore.loaders.versions import (
    DEFAULT_KEEP,
    commit_version,
    refuse_other_keys,
    refuse_unreadable_manifest,
)
from dcstore.loaders.writer import DEFAULT_SHARD_SIZE, ShardWriter, new_version, starts_new_shard

Progress = Callable[[int], None]
MAX_OPEN_FILES = 64
USTAR_NAME = 100
"""Longest name a ustar header holds without a prefix or a pax header."""
JOBS_PER_WORKER = 4
"""Runs per worker process: enough to balance uneven runs, few enough to stay cheap."""
MIN_BYTES_PER_WORKER = 128 * 1024 * 1024
"""Input bytes that justify one more process (starting one costs about a second)."""


def default_workers() -> int:
    """Processes ``dcstore pack`` uses by default: one per core, at most 8."""
    return min(os.cpu_count() or 1, 8)


def header_length(name: str) -> int:
    """Bytes of the header(s) :func:`member_header` writes for member ``name``."""
    if len(name) <= USTAR_NAME and name.isascii():
        return BLOCK  # the name fits one ustar header
    return len(member_header(name, 0))  # a pax header first: its length depends on the name


def sample_length(spec: SampleSpec) -> int:
    """Tar bytes the sample takes in a shard (headers, payloads, padding)."""
    total = 0
    for name, payload in spec.fields:
        size = payload.size if isinstance(payload, FileSlice) else len(payload)
        total += header_length(f"{spec.key}.{name}") + padded(size)
    return total


def shard_starts(samples: list[SampleSpec], shard_size: int) -> list[int]:
    """Index of the first sample of each shard a ShardWriter makes of ``samples``."""
    starts: list[int] = []
    filled = 0
    for i, spec in enumerate(samples):
        length = sample_length(spec)
        if not starts or starts_new_shard(filled, length, shard_size):
            starts.append(i)
            filled = 0
        filled += length
    return starts


class PackJob(NamedTuple):
    """A run of whole shards: the first shard's number, their samples and shard count."""

    first_shard: int
    num_shards: int
    samples: list[SampleSpec]


def split_jobs(samples: list[SampleSpec], shard_size: int, workers: int) -> list[PackJob]:
    """Split ``samples`` into runs of whole shards, about ``JOBS_PER_WORKER`` per worker."""
    starts = shard_starts(samples, shard_size)
    per_job = math.ceil(len(starts) / max(1, min(len(starts), workers * JOBS_PER_WORKER)))
    bounds = [*starts[::per_job], len(samples)]
    return [
        PackJob(n * per_job, min(per_job, len(starts) - n * per_job), samples[lo:hi])
        for n, (lo, hi) in enumerate(itertools.pairwise(bounds))
    ]


class PayloadReader:
    """Reads sample payloads from their files, keeping a few of them open."""

    def __init__(self) -> None:
        self._files: dict[str, IO[bytes]] = {}

    def _file(self, path: str) -> IO[bytes]:
        f = self._files.pop(path, None)
        if f is None:
            if len(self._files) >= MAX_OPEN_FILES:
                self._files.pop(next(iter(self._files))).close()
            f = open(path, "rb")  # noqa: SIM115 - closed by close() or eviction
        self._files[path] = f  # most recently used last
        return f

    def read(self, spec: SampleSpec) -> dict[str, Any]:
        """The sample as a webdataset dict; a file that changed size is an IntegrityError."""
        sample: dict[str, Any] = {"__key__": spec.key}
        for name, payload in spec.fields:
            if isinstance(payload, FileSlice):
                f = self._file(payload.path)
                f.seek(payload.offset)
                data = f.read(payload.size)
                if len(data) != payload.size:
                    raise IntegrityError(f"{payload.path}: changed while packing")
                payload = data
            sample[name] = payload
        return sample

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def run_job(
    store: Backend, version: str, shard_size: int, job: PackJob, progress: Progress
) -> tuple[ShardInfo, ...]:
    """Write one run's shards (uncommitted) and return them."""
    writer = ShardWriter(store, shard_size=shard_size, version=version, first_shard=job.first_shard)
    reader = PayloadReader()
    try:
        for spec in job.samples:
            writer.write(reader.read(spec))
            progress(spec.size)
        shards = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    if len(shards) != job.num_shards:  # the boundary rule and the writer disagree: a bug
        raise AssertionError(f"planned {job.num_shards} shards, wrote {len(shards)}")
    return shards


_counter: Any = None


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _count(nbytes: int) -> None:
    with _counter.get_lock():
        _counter.value += nbytes


def _run_job_in_worker(
    store: Backend, version: str, shard_size: int, job: PackJob
) -> tuple[ShardInfo, ...]:
    return run_job(store, version, shard_size, job, _count)


def _run_parallel(
    store: Backend, version: str, shard_size: int, jobs: list[PackJob], workers: int,
    progress: Progress,
) -> list[ShardInfo]:  # fmt: skip
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    with ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=context, initializer=_init_worker, initargs=(counter,)
    ) as pool:
        futures = [pool.submit(_run_job_in_worker, store, version, shard_size, j) for j in jobs]
        pending, reported = set(futures), 0
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                progress(counter.value - reported)
                reported = counter.value
                for future in done:
                    future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        progress(counter.value - reported)
    return [shard for future in futures for shard in future.result()]


def pack_plan(
    store: Backend,
    plan: PackPlan,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 1,
    keep: int = DEFAULT_KEEP,
    manifest_key: str = MANIFEST_KEY,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    min_bytes_per_worker: int = MIN_BYTES_PER_WORKER,
    version: str | None = None,
) -> Manifest:
    """Pack ``plan`` (in its order) into ``store`` as a new version and commit it.

    Uses up to ``workers`` processes, at most one per ``min_bytes_per_worker`` of input.
    ``version`` names the new version (default: :func:`new_version`); its shards are
    under ``shards/<version>/``, which a failed pack leaves behind.
    """
    if not plan.samples:
        raise ConfigError("nothing to pack: the plan has no samples")
    report: Progress = progress or (lambda nbytes: None)
    refuse_other_keys(store, manifest_key)
    refuse_unreadable_manifest(store, manifest_key)
    version = version or new_version()
    if min_bytes_per_worker > 0:
        workers = min(workers, plan.total_bytes // min_bytes_per_worker)
    jobs = split_jobs(plan.samples, shard_size, workers)
    if workers > 1 and len(jobs) > 1:
        shards = _run_parallel(store, version, shard_size, jobs, workers, report)
    else:
        shards = [s for job in jobs for s in run_job(store, version, shard_size, job, report)]
    manifest = Manifest(
        version, tuple(shards), dict(metadata or {}), plan.classes, versions_of=store.url
    )
    return commit_version(store, manifest, manifest_key, keep)[0]
