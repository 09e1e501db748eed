"""Reading samples: a worker's plan -> aligned byte windows -> zero-copy sample dicts.

Guarantees:

* A block of the plan is read as byte *windows*: the samples it needs from
  one shard form contiguous groups, and each group is fetched with
  ``get_range`` in windows that end on multiples of ``window_bytes``
  (rounded up to the encryption segment size, so an encrypted window
  decrypts whole segments once). Only needed samples are fetched: a resumed
  or partial reader never re-reads consumed data.
* Samples come out in plan order, each as soon as the window holding it has
  arrived: a window's samples are parsed (and checked) one at a time when
  they are handed out, so the first sample of a shuffled block waits for its
  own window, not for the block's other windows to be parsed (with a shuffle
  buffer, the plan's hand-out order runs across blocks and waiting samples
  are parsed and copied out of their windows when they arrive, so memory is
  bounded by the buffer, not by the windows it touched), as webdataset dicts
  ``{"__key__", "__index__", "__url__", field: bytes}``. With
  ``SampleOptions(zero_copy=True)`` fields are read-only memoryviews of the
  fetched window instead (no copy; only a sample that straddles two windows
  is joined once); keep ``bytes(value)`` if such a field must outlive the sample.
* Each sample is checked against its checksum in the manifest, when the
  manifest has one, unless ``SampleOptions(verify=False)``: a mismatch raises
  :class:`IntegrityError` naming the shard and the sample, or, with a
  :class:`SkipPolicy`, skips that one sample (counted and logged). A store that
  authenticates its reads (``Backend.authenticates_reads``: encrypted, AES-GCM)
  has already checked every byte of a window more strongly than a checksum can
  when it hands the window over, so its samples are checked once, by the cipher.
* Prefetch threads only fetch (read, map or decrypt) windows ahead of the
  consumer; the consumer parses each sample when its turn comes
  (:class:`WindowSamples`) and joins the samples that straddle two windows.
* Buffers are at most ``window_bytes`` (default 4 MiB), small enough for the
  allocator to recycle instead of page-faulting fresh memory for each shard.
  A store that maps its files (local disk, plaintext: ``Backend.map_range``)
  hands out windows of the page cache instead: no copy into a buffer at all,
  and with ``zero_copy`` the fields are views of the mapping.
* A shard that cannot be read or parsed raises the backend's error (or
  :class:`IntegrityError` for a malformed tar or a sample count that does
  not match the manifest), naming the shard. With a :class:`SkipPolicy`, its
  samples are skipped instead, counted, logged and remembered.
* ``read_sample`` reads one sample with one range request (random access).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from dcstore.backends.base import Backend
from dcstore.errors import DcstoreError, IntegrityError
from dcstore.loaders.checksum import CorruptSample, mismatch, sample_checksum
from dcstore.loaders.manifest import Manifest
from dcstore.loaders.plan import WorkerPlan
from dcstore.loaders.prefetch import Prefetcher
from dcstore.loaders.resumable import Progress
from dcstore.loaders.shardinfo import ShardInfo, read_as_packed
from dcstore.loaders.tario import (
    SampleSpan,
    group_samples,
    parse_members,
    parse_record,
    record_sample,
    sample_dict,
)

log = logging.getLogger(__name__)

Sample = dict[str, object]

DEFAULT_WINDOW_BYTES = 4 << 20


@dataclass(frozen=True)
class SampleOptions:
    """How samples are handed out."""

    zero_copy: bool = False
    """Fields as read-only memoryviews of the fetched window instead of ``bytes``."""
    verify: bool = True
    """Check each sample against the manifest's checksum (when it has one)."""


@dataclass(frozen=True, slots=True)
class Window:
    """Bytes ``[start, end)`` of one shard; samples ``first..last`` end inside it."""

    shard: int
    start: int
    end: int
    first: int
    last: int
    group_start: bool
    """True for the first window of a contiguous group (no straddler can precede it)."""


@dataclass
class SkipPolicy:
    """Opt-in: skip unreadable or corrupt shards instead of raising.

    ``skipped`` holds shard indices already skipped (restored from a resumed
    state, so a resumed run skips the same shards without retrying them);
    ``skipped_samples`` counts samples lost in this process. Skipping makes
    the affected rank yield fewer samples: under DDP, ranks may then run
    different step counts, so use it where that is handled (or not at all).
    """

    skipped: set[int] = field(default_factory=set)
    skipped_samples: int = 0


def aligned_window(store: Backend, window_bytes: int) -> int:
    """``window_bytes`` rounded up to the store's encryption segment size, if any."""
    segment = store.read_alignment
    if segment:
        return max(segment, -(-window_bytes // segment) * segment)
    return window_bytes


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by one sort: numpy 2.4's ``unique`` hashes, which measured
    8x slower on a shuffled 640-sample block (43 against 5.4 us) and 17x on a 20,000-sample
    hand-out order (1.9 against 0.11 ms; with a shuffle buffer, a worker's whole order
    is checked once before its first sample)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def windows_for(
    manifest: Manifest, block: np.ndarray, window_bytes: int = DEFAULT_WINDOW_BYTES
) -> list[Window]:
    """The aligned windows covering the samples of ``block``, in shard/byte order."""
    if len(block) == 0:
        return []
    ids = sorted_unique(block)
    shards = np.searchsorted(manifest.starts, ids, side="right") - 1
    local = ids - manifest.starts[shards]
    breaks = np.nonzero((np.diff(shards) != 0) | (np.diff(local) != 1))[0] + 1
    out = []
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(ids)], strict=True):
        shard, first, last = int(shards[lo]), int(local[lo]), int(local[hi - 1])
        info = manifest.shards[shard]
        ends = info.offsets + info.lengths
        a, stop = int(info.offsets[first]), int(ends[last])
        group_start = True
        while a < stop:
            b = min(stop, (a // window_bytes + 1) * window_bytes)
            j0 = max(first, int(np.searchsorted(ends, a, side="right")))
            j1 = min(last, int(np.searchsorted(ends, b, side="right")) - 1)
            out.append(Window(shard, a, b, j0, j1, group_start))
            group_start = False
            a = b
    return out


def _check(url: str, found: int, expected: int, start: int, end: int) -> None:
    if found != expected:
        raise IntegrityError(
            f"{url}: found {found} samples in bytes [{start}, {end}), the manifest lists {expected}"
        )


def _straddles(manifest: Manifest, win: Window) -> bool:
    """Whether the window's first sample began in an earlier window."""
    return win.first <= win.last and int(manifest.shards[win.shard].offsets[win.first]) < win.start


def _checksums(
    store: Backend, info: ShardInfo, options: SampleOptions, first: int, stop: int
) -> list[int] | None:
    """The manifest's checksums of samples ``[first, stop)`` of a shard, or None when
    they are not to be checked: turned off, none recorded, or the store authenticated
    every byte it read (AES-GCM; see the module docstring)."""
    if not options.verify or info.checksums is None or store.authenticates_reads:
        return None
    return info.checksums[first:stop].tolist()  # type: ignore[no-any-return]


def _damaged(
    url: str, record: memoryview, lo: int, index: int, expected: int | None
) -> CorruptSample | None:
    """The :class:`CorruptSample` of a record (shard bytes from ``lo``) whose bytes do not
    match the checksum ``expected`` (``None``: no checksum to check). Checked before the
    record is parsed, so a damaged tar header is this sample's damage, not its shard's."""
    if expected is None or sample_checksum(record) == expected:
        return None
    try:
        key: str | None = group_samples(parse_record(record, base=lo))[0].key
    except (IntegrityError, IndexError):
        key = None  # its tar header is damaged too
    return mismatch(url, key, index)


def _one_sample(
    store: Backend, manifest: Manifest, shard: int, local: int, record: memoryview, lo: int,
    options: SampleOptions,
) -> Sample | CorruptSample:  # fmt: skip
    """Sample ``local`` of ``shard`` from its whole ``record`` (shard bytes from ``lo``),
    checked against its checksum first."""
    info = manifest.shards[shard]
    url = f"{store.url}/{info.key}"
    index = int(manifest.starts[shard]) + local
    sums = _checksums(store, info, options, local, local + 1)
    damaged = _damaged(url, record, lo, index, None if sums is None else sums[0])
    if damaged is not None:
        return damaged
    spans = group_samples(parse_members(record, base=lo))
    _check(url, len(spans), 1, lo, lo + len(record))
    sample = sample_dict(record, spans[0], lo, zero_copy=options.zero_copy)
    sample["__index__"] = index
    sample["__url__"] = url
    return sample


class WindowSamples:
    """The samples wholly inside one fetched window, each parsed and checked when
    :meth:`sample` is called (so a consumer pays for a sample when it hands it out)."""

    __slots__ = (
        "checked", "index0", "key", "lengths", "offsets", "shard", "start", "sums", "url", "view",
    )  # fmt: skip

    def __init__(
        self, store: Backend, manifest: Manifest, win: Window, view: memoryview, first: int,
        options: SampleOptions,
    ) -> None:  # fmt: skip
        info = manifest.shards[win.shard]
        self.view, self.start, self.shard, self.key = view, win.start, win.shard, info.key
        self.url = f"{store.url}/{info.key}"
        self.index0 = int(manifest.starts[win.shard]) + first
        self.offsets: list[int] = info.offsets[first : win.last + 1].tolist()
        self.lengths: list[int] = info.lengths[first : win.last + 1].tolist()
        self.sums = _checksums(store, info, options, first, win.last + 1)
        self.checked = self.sums is not None or store.authenticates_reads
        """Whether a record's bytes are checked as a whole (its tar headers' own
        checksums then need no second look)."""

    def __len__(self) -> int:
        return len(self.offsets)

    def sample(self, k: int, zero_copy: bool) -> Sample | CorruptSample:
        """The ``k``-th sample of the window: parsed, its record checked against the
        manifest (one sample, its checksum); raises :class:`IntegrityError` if malformed."""
        lo = self.offsets[k]
        hi = lo + self.lengths[k]
        record = self.view[lo - self.start : hi - self.start]
        index = self.index0 + k
        sums = self.sums
        if sums is not None and (damaged := _damaged(self.url, record, lo, index, sums[k])):
            return damaged
        sample = record_sample(record, zero_copy=zero_copy, checked=self.checked)
        if sample is None:  # not plain ustar members of one key: the general parser
            sample = sample_dict(record, self._span(record, lo, hi), lo, zero_copy=zero_copy)
        sample["__index__"] = index
        sample["__url__"] = self.url
        return sample

    def _span(self, record: memoryview, lo: int, hi: int) -> SampleSpan:
        """The one sample of shard bytes ``[lo, hi)``; raises if the record is malformed."""
        spans = group_samples(parse_record(record, base=lo))
        if len(spans) != 1:
            _check(self.url, len(spans), 1, lo, hi)
        return spans[0]


class _GroupParser:
    """Joins the samples that straddle consecutive windows of one shard."""

    def __init__(self, store: Backend, manifest: Manifest, options: SampleOptions):
        self.store = store
        self.manifest = manifest
        self.options = options
        self.held: list[tuple[int, memoryview]] = []

    def parse(
        self, win: Window, data: bytes | memoryview
    ) -> tuple[Sample | CorruptSample | None, WindowSamples | None]:
        """The window's straddler (parsed, if any) and its inner samples (not yet parsed)."""
        info = self.manifest.shards[win.shard]
        if win.group_start:
            self.held = []
        view = memoryview(data)
        straddler = None
        first = win.first
        if _straddles(self.manifest, win):
            straddler = self._straddler(win, view, win.first)
            first += 1
        inner = None
        if first <= win.last:
            inner = WindowSamples(self.store, self.manifest, win, view, first, self.options)
        nxt = win.last + 1
        if nxt < info.num_samples and int(info.offsets[nxt]) < win.end:
            self.held = [(s, v) for s, v in self.held if s + len(v) > int(info.offsets[nxt])]
            self.held.append((win.start, view))
        else:
            self.held = []
        return straddler, inner

    def _straddler(self, win: Window, view: memoryview, j: int) -> Sample | CorruptSample:
        info = self.manifest.shards[win.shard]
        lo, hi = int(info.offsets[j]), int(info.offsets[j] + info.lengths[j])
        pieces = [v[max(0, lo - s) :] for s, v in self.held if s + len(v) > lo]
        joined = memoryview(b"".join([*pieces, view[: hi - win.start]]))
        return _one_sample(self.store, self.manifest, win.shard, j, joined, lo, self.options)


def _detached(sample: Sample | CorruptSample) -> Sample | CorruptSample:
    """``sample`` with its fields copied out of the window they view."""
    if isinstance(sample, CorruptSample):
        return sample
    return {k: memoryview(bytes(v)) if isinstance(v, memoryview) else v for k, v in sample.items()}


def _index(sample: Sample | CorruptSample) -> int:
    return sample.index if isinstance(sample, CorruptSample) else sample["__index__"]  # type: ignore[return-value]


_Pending = tuple[WindowSamples, int]
"""The ``k``-th sample of a fetched window, parsed when it is handed out."""


class _BlockOrder:
    """Hands out samples in ``order`` as they become available.

    A window's samples wait unparsed (:data:`_Pending`) and are parsed when their turn
    comes; with ``detach`` (a shuffle buffer) they are parsed when they arrive and those
    that wait are copied out of their windows.
    """

    def __init__(
        self,
        order: np.ndarray,
        store: Backend,
        manifest: Manifest,
        progress: Progress,
        skip: SkipPolicy | None,
        detach: bool = False,
        zero_copy: bool = False,
    ):
        self.order = order.tolist()
        self.unique = len(sorted_unique(order)) == len(self.order)  # padding may repeat one
        self.ready: dict[int, Sample | CorruptSample | _Pending] = {}
        self.done = 0
        self.detach, self.zero_copy = detach, zero_copy
        self.store, self.manifest, self.progress, self.skip = store, manifest, progress, skip

    def add(self, straddler: Sample | CorruptSample | None, inner: WindowSamples | None) -> None:
        """A window's straddler (parsed) and its inner samples."""
        if straddler is not None:
            self._put(straddler)
        if inner is None:
            return
        if self.detach:
            for k in range(len(inner)):
                self._put(inner.sample(k, self.zero_copy))
            return
        ready, index0 = self.ready, inner.index0
        for k in range(len(inner)):
            ready[index0 + k] = (inner, k)

    def _put(self, sample: Sample | CorruptSample) -> None:
        index = _index(sample)
        if self.detach and index != self.order[self.done]:
            sample = _detached(sample)
        self.ready[index] = sample

    def _parse(self, pending: _Pending) -> Sample | CorruptSample | None:
        """A pending sample parsed; None when it is malformed and skipping is on."""
        inner, k = pending
        try:
            return inner.sample(k, self.zero_copy)
        except Exception as exc:
            skip = self.skip
            if skip is None or not isinstance(exc, (DcstoreError, OSError)):
                raise named_error(self.store, inner.key, exc)  # noqa: B904 - the same exception
            skip.skipped.add(inner.shard)
            log.warning("skipping shard %s/%s: %s", self.store.url, inner.key, exc)
            return None

    def emit(self, final: bool) -> Iterator[Sample]:
        """Yield the next samples in order, as far as their windows arrived (or are lost)."""
        skip = self.skip
        while self.done < len(self.order):
            index = self.order[self.done]
            sample = self.ready.pop(index, None) if self.unique else self.ready.get(index)
            if isinstance(sample, tuple):
                sample = self._parse(sample)
                if sample is None:  # malformed, skipped with its shard
                    skip.skipped_samples += 1  # type: ignore[union-attr]
                    self.done += 1
                    self.progress.pos += 1
                    continue
            if sample is None:
                lost = skip is not None and self.manifest.locate(index)[0] in skip.skipped
                if not (final or lost):
                    return
                if skip is not None:
                    skip.skipped_samples += 1
            elif isinstance(sample, CorruptSample):
                if skip is None:
                    raise IntegrityError(sample.message)
                skip.skipped_samples += 1
                log.warning("skipping one sample: %s", sample.message)
                sample = None
            self.done += 1
            self.progress.pos += 1
            if sample is not None:
                yield sample


def named_error(store: Backend, key: str, exc: BaseException) -> BaseException:
    """``exc`` itself, naming the shard: a dcstore error raised without a location gets
    ``url`` / ``key`` and its message is prefixed with the shard (same object, type and
    traceback; nothing is rebuilt)."""
    if isinstance(exc, DcstoreError) and exc.key is None:
        exc.url, exc.key = store.url, key
        if key not in str(exc):
            exc.args = (f"shard {store.url}/{key}: {exc}", *exc.args[1:])
    return exc


def read_plan(
    store: Backend,
    manifest: Manifest,
    plan: WorkerPlan,
    prefetcher: Prefetcher,
    progress: Progress,
    skip: SkipPolicy | None = None,
    window_bytes: int = DEFAULT_WINDOW_BYTES,
    options: SampleOptions = SampleOptions(),
) -> Iterator[Sample]:
    """Yield the plan's samples in order, fetching ahead with ``prefetcher``."""
    window_bytes = aligned_window(store, window_bytes)
    units: Iterator[tuple[np.ndarray, list[Window]]]
    if plan.order is None:  # each block's windows when the read reaches it
        units = ((b, windows_for(manifest, b, window_bytes)) for b in plan.blocks)
    else:  # one hand-out order across all blocks
        every = [w for b in plan.blocks for w in windows_for(manifest, b, window_bytes)]
        units = iter([(plan.order, every)])
    ahead, units = itertools.tee(units)  # both consumed in this thread
    skipped = skip.skipped if skip is not None else set()

    def fetch(win: Window) -> bytes | memoryview | None:
        if win.shard in skipped:
            return None
        info = manifest.shards[win.shard]
        return read_as_packed(store, info.key, info.version, win.start, win.end)

    def wanted() -> Iterator[Window]:
        for _, windows in ahead:
            yield from windows

    results = prefetcher.map(fetch, wanted(), lambda w: w.end - w.start)
    with contextlib.closing(results):  # stop fetching as soon as this reader is closed
        parser = _GroupParser(store, manifest, options)
        for order, windows in units:
            out = _BlockOrder(
                order, store, manifest, progress, skip,
                detach=plan.order is not None, zero_copy=options.zero_copy,
            )  # fmt: skip
            for win in windows:
                got = next(results)
                if win.shard in skipped:
                    continue
                key = manifest.shards[win.shard].key
                try:
                    if got.error is not None:
                        raise got.error
                    out.add(*parser.parse(win, got.value))  # type: ignore[arg-type]
                except Exception as exc:
                    if skip is None or not isinstance(exc, (DcstoreError, OSError)):
                        raise named_error(store, key, exc)  # noqa: B904 - the same exception
                    skipped.add(win.shard)
                    log.warning("skipping shard %s/%s: %s", store.url, key, exc)
                del got
                yield from out.emit(final=False)
            yield from out.emit(final=True)


def read_sample(
    store: Backend, manifest: Manifest, index: int,
    options: SampleOptions = SampleOptions(),
) -> Sample:  # fmt: skip
    """Read global sample ``index`` with one range request (checked as :func:`read_plan`)."""
    shard, local = manifest.locate(index)
    info = manifest.shards[shard]
    start = int(info.offsets[local])
    end = start + int(info.lengths[local])
    try:
        data = memoryview(read_as_packed(store, info.key, info.version, start, end, mapped=False))
        sample = _one_sample(store, manifest, shard, local, data, start, options)
    except DcstoreError as exc:
        raise named_error(store, info.key, exc)  # noqa: B904 - the same exception
    if isinstance(sample, CorruptSample):
        raise IntegrityError(sample.message)
    return sample
