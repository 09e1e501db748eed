"""The manifest's Parquet layout, read lazily: shard table at open, samples on first use.

A manifest has one row per shard: shard-level columns (``SHARD_COLUMNS``) and
per-sample list columns (``SAMPLE_COLUMNS``), in row groups of about
``ROW_GROUP_SAMPLES`` samples (:func:`row_groups`). :class:`ShardIndex` reads the
footer and the shard-level columns when first used, and one row group's per-sample
columns when one of its shards is first indexed.

Guarantees:

* Memory per process is the shard table plus at most ``CACHED_ROW_GROUPS`` decoded
  row groups and ``CACHED_SAMPLES`` samples of :class:`ShardInfo` (the shards loaded
  last, at least one); a file written as one row group is decoded once and kept.
* A manifest of at most ``CACHED_ROW_GROUPS`` row groups (up to about 128 Ki samples)
  has them decoded with the shard table, when it is opened: ``DataLoader`` workers
  forked after that inherit them instead of each decoding them again before its first
  batch (measured with ``bench/first_batch.py``: ``bench/results/loaders.md``).
* A shard's row is checked (:func:`check_shard`) before it is handed out, so no
  offset is trusted unchecked; a damaged file raises :class:`IntegrityError`
  naming ``where``, and nothing else escapes.
* A :class:`ShardIndex` pickles as its source (a store address pinned to the object
  version that was opened, or the bytes): the receiving process re-reads the table.
* No Arrow thread is started (see :func:`read_parquet_in_this_thread`). Indexing is
  thread-safe.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute  # Arrow imports it at the first row group read: here, where the dataset
import pyarrow.parquet as pq  # is opened, it spares each forked DataLoader worker 0.1 s

from dcstore.backends.base import Backend
from dcstore.crypto.format import refuse_ciphertext
from dcstore.errors import DcstoreError, IntegrityError
from dcstore.loaders.checksum import ALGORITHM
from dcstore.loaders.rangefile import RangeFile
from dcstore.loaders.shardinfo import ShardInfo, check_shard

FORMAT = "dcstore-shards/1"
CHECKSUM_META = b"dcstore.checksum"
SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("size", pa.int64()),
        ("samples", pa.int64()),
        ("key_id", pa.string()),
        ("version", pa.string()),
        ("keys", pa.list_(pa.string())),
        ("offsets", pa.list_(pa.int64())),
        ("lengths", pa.list_(pa.int64())),
        ("checksums", pa.list_(pa.uint64())),
    ]
)
"""Shard-level columns first: in each row group their chunks are adjacent, so the reader
fetches them with one coalesced range (older files, with ``version`` last, still read)."""
SHARD_COLUMNS = ("shard", "size", "samples", "key_id", "version")
SAMPLE_COLUMNS = ("keys", "offsets", "lengths", "checksums")
OPTIONAL_COLUMNS = ("checksums", "version")
ROW_GROUP_SAMPLES = 1 << 16
CACHED_ROW_GROUPS = 2
CACHED_SAMPLES = 1 << 18
WHOLE_BELOW = 4 << 20
"""Manifests smaller than this are fetched with one ``get``; larger ones by ranges."""
_PROBE = 4096


def read_parquet_in_this_thread(source: Any) -> pa.Table:
    """Read a whole Parquet file without starting any Arrow thread.

    A process in which Arrow started a thread pool can abort at exit ("terminate called
    without an active exception", apache/arrow#34314): measured here with pyarrow 26, 6 of
    80 short processes calling ``pq.read_table``, and still 1 in 200 with
    ``use_threads=False`` (it starts an I/O thread). ``ParquetFile.read(use_threads=False)``
    starts none (tests/test_manifest_exit.py). Manifests are read the same way, by
    column and row group.
    """
    return pq.ParquetFile(source, page_checksum_verification=True).read(use_threads=False)


class NotAManifestError(IntegrityError):
    """A readable Parquet file that is not a dcstore manifest (another table, say)."""


class Source(Protocol):
    """Where a manifest's bytes come from; picklable, opened once per process."""

    def open(self) -> BinaryIO | pa.NativeFile: ...


@dataclass(frozen=True)
class BytesSource:
    """A manifest already in memory."""

    data: bytes

    def open(self) -> pa.NativeFile:
        return pa.BufferReader(self.data)


@dataclass(frozen=True)
class ObjectSource:
    """One version of a stored manifest: read whole when small, else by ranges.
    ``refuse`` rejects an encrypted object (read through a store without keys)."""

    store: Backend
    key: str
    size: int
    version: str | None
    refuse: bool = False

    def open(self) -> BinaryIO | pa.NativeFile:
        whole = self.size <= WHOLE_BELOW
        end = self.size if whole else min(_PROBE, self.size)
        data = self.store.get_range(self.key, 0, end, version=self.version)
        if self.refuse:
            refuse_ciphertext(data, f"dataset {self.store.url}/{self.key}")
        if whole:
            return pa.BufferReader(data)
        return RangeFile(self.store, self.key, self.size, self.version)


def check_schema(schema: pa.Schema, where: str) -> None:
    """Every column a manifest needs is there, with its type (older files lack the optional)."""
    for expected in SCHEMA:
        index = schema.get_field_index(expected.name)
        if index < 0:
            if expected.name in OPTIONAL_COLUMNS:
                continue
            raise IntegrityError(f"{where}: manifest has no column {expected.name!r}")
        if schema.field(index).type != expected.type:
            raise IntegrityError(
                f"{where}: manifest column {expected.name!r} is {schema.field(index).type},"
                f" expected {expected.type}"
            )


def row_groups(counts: np.ndarray, samples: int = ROW_GROUP_SAMPLES) -> list[tuple[int, int]]:
    """Shard ranges ``[a, b)`` of about ``samples`` samples each (a shard is never split):
    shard ``i`` goes to group ``start_i // samples``."""
    if len(counts) == 0:
        return [(0, 0)]
    group = (np.cumsum(counts) - counts) // max(1, samples)
    cuts = [0, *(np.nonzero(np.diff(group))[0] + 1).tolist(), len(counts)]
    return list(itertools.pairwise(cuts))


def write_manifest(sink: Any, groups: Iterable[pa.Table], metadata: dict[bytes, bytes]) -> None:
    """Write ``groups`` (tables of ``SCHEMA``) as one row group each, with ``metadata``."""
    schema = SCHEMA.with_metadata(metadata)
    with pq.ParquetWriter(
        sink, schema, compression="zstd", write_statistics=False, write_page_checksum=True
    ) as writer:
        for table in groups:
            writer.write_table(table.replace_schema_metadata(metadata), row_group_size=1 << 62)


@dataclass(frozen=True)
class ShardTable:
    """The shard-level columns, one entry per shard."""

    keys: list[str]
    sizes: np.ndarray
    counts: np.ndarray
    key_ids: list[str | None]
    versions: list[str | None]

    @classmethod
    def of(cls, shards: Sequence[ShardInfo]) -> ShardTable:
        return cls(
            [s.key for s in shards],
            np.asarray([s.size for s in shards], dtype=np.int64),
            np.asarray([s.num_samples for s in shards], dtype=np.int64),
            [s.key_id for s in shards],
            [s.version for s in shards],
        )

    @classmethod
    def read(cls, table: pa.Table, where: str) -> ShardTable:
        """The checked shard table of ``table``: keys and sizes present, counts
        non-negative and their sum inside int64."""
        n = table.num_rows
        cols = {c: table.column(c) for c in SHARD_COLUMNS if c in table.column_names}
        for name in ("shard", "size", "samples"):
            if cols[name].null_count:
                raise IntegrityError(f"{where}: a shard has no {name!r}")
        sizes = cols["size"].to_numpy().astype(np.int64)
        counts = cols["samples"].to_numpy().astype(np.int64)
        if n and (sizes.min() < 0 or counts.min() < 0 or np.any(np.cumsum(counts) < counts)):
            raise IntegrityError(f"{where}: shard sizes or sample counts out of range")
        versions = cols["version"].to_pylist() if "version" in cols else [None] * n
        return cls(cols["shard"].to_pylist(), sizes, counts, cols["key_id"].to_pylist(), versions)


@dataclass(frozen=True)
class _RowGroup:
    """One row group's per-sample columns, flattened; row ``r`` is ``[bounds[r], bounds[r+1])``
    of each (null lists are empty; ``has_checksums[r]`` is False for a null checksum list)."""

    keys: tuple[np.ndarray, pa.Array]
    offsets: tuple[np.ndarray, np.ndarray]
    lengths: tuple[np.ndarray, np.ndarray]
    checksums: tuple[np.ndarray, np.ndarray] | None
    has_checksums: np.ndarray | None


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, pa.Array]:
    """(row bounds, flat values) of list column ``name``."""
    column = table.column(name).combine_chunks()  # a null list has no values: reads as empty
    return column.offsets.to_numpy().astype(np.int64), column.values


def _numeric(bounds_values: tuple[np.ndarray, pa.Array], name: str, where: str, dtype: Any) -> Any:
    bounds, values = bounds_values
    if values.null_count:
        raise IntegrityError(f"{where}: a null in manifest column {name!r}")
    return bounds, values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _decode(table: pa.Table, where: str) -> _RowGroup:
    checksums = has = None
    if "checksums" in table.column_names:
        has = ~table.column("checksums").is_null().to_numpy(zero_copy_only=False)
        raw = _list_column(table, "checksums")
        checksums = _numeric(raw, "checksums", where, np.uint64)
    return _RowGroup(
        _list_column(table, "keys"),
        _numeric(_list_column(table, "offsets"), "offsets", where, np.int64),
        _numeric(_list_column(table, "lengths"), "lengths", where, np.int64),
        checksums,
        has,
    )


def _span(group: pq.RowGroupMetaData, names: list[str]) -> tuple[int, int]:
    """The byte span of the column chunks of ``names`` in ``group`` (adjacent in our files)."""
    lo, hi = 1 << 62, 0
    for c in range(group.num_columns):
        chunk = group.column(c)
        if chunk.path_in_schema.split(".")[0] in names:
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
                start = min(start, chunk.dictionary_page_offset)
            lo, hi = min(lo, start), max(hi, start + chunk.total_compressed_size)
    return lo, max(lo, hi)


def _row(column: tuple[np.ndarray, Any], r: int) -> Any:
    bounds, values = column
    return values[int(bounds[r]) : int(bounds[r + 1])]


class ShardIndex(Sequence[ShardInfo]):
    """The shards of the manifest in ``source``, loaded lazily (see the module doc)."""

    def __init__(self, source: Source, where: str, pinned: bool = True):
        self.source, self.where, self.pinned = source, where, pinned
        self._lock = threading.RLock()
        self._file: pq.ParquetFile | None = None
        self._ranges: RangeFile | None = None
        self._table: ShardTable | None = None
        self._group_starts = np.zeros(1, dtype=np.int64)
        self._groups: OrderedDict[int, _RowGroup] = OrderedDict()
        self._shards: OrderedDict[int, ShardInfo] = OrderedDict()
        self._cached_samples = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShardIndex, (self.source, self.where, self.pinned))

    def unpinned(self) -> ShardIndex:
        """These shards without their object versions (sharing the opened file)."""
        other = ShardIndex(self.source, self.where, pinned=False)
        with self._lock:
            other._lock, other._file, other._groups = self._lock, self._file, self._groups
            if self._table is not None:
                other._group_starts = self._group_starts
                other._table = dataclasses.replace(
                    self._table, versions=[None] * len(self._table.keys)
                )
        return other

    @property
    def file(self) -> pq.ParquetFile:
        """The opened Parquet file (footer read, format and schema checked)."""
        with self._lock:
            if self._file is None:
                opened = self.source.open()  # store errors (missing, encrypted) pass as they are
                self._ranges = opened if isinstance(opened, RangeFile) else None
                try:
                    parquet = pq.ParquetFile(  # pre_buffer starts an I/O thread
                        opened, pre_buffer=False, page_checksum_verification=True
                    )
                except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: bad UTF-8
                    raise IntegrityError(
                        f"{self.where}: not a readable dcstore manifest ({exc})"
                    ) from exc
                if (parquet.schema_arrow.metadata or {}).get(b"dcstore.format") != FORMAT.encode():
                    raise NotAManifestError(f"{self.where}: not a {FORMAT} manifest")
                check_schema(parquet.schema_arrow, self.where)
                self._file = parquet
            return self._file

    @property
    def metadata(self) -> dict[bytes, bytes]:
        return dict(self.file.schema_arrow.metadata or {})

    @property
    def table(self) -> ShardTable:
        """The shard-level columns (read once per process)."""
        with self._lock:
            if self._table is None:
                parquet = self.file
                names = [c for c in SHARD_COLUMNS if c in parquet.schema_arrow.names]
                parts = [self._read_group(g, names) for g in range(parquet.num_row_groups)]
                raw = self._read(lambda: pa.concat_tables(parts))
                table = ShardTable.read(raw, self.where)
                if not self.pinned:
                    table = dataclasses.replace(table, versions=[None] * len(table.keys))
                rows = [
                    parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)
                ]
                self._group_starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
                self._table = table
                if parquet.num_row_groups <= CACHED_ROW_GROUPS:
                    for g in range(parquet.num_row_groups):  # decoded once, here (see the doc)
                        self._group(g)
            return self._table

    def _read(self, read: Any) -> Any:
        try:
            return read()
        except DcstoreError:  # from the store, or already naming what failed
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise IntegrityError(f"{self.where}: not a readable dcstore manifest ({exc})") from exc

    def _read_group(self, g: int, names: list[str]) -> pa.Table:
        """Columns ``names`` of row group ``g`` (by ranges: one request for their span)."""
        parquet = self.file
        if self._ranges is not None:
            self._ranges.prefetch(*_span(parquet.metadata.row_group(g), names))
        return self._read(lambda: parquet.read_row_group(g, columns=names, use_threads=False))

    def _group(self, g: int) -> _RowGroup:
        group = self._groups.get(g)
        if group is None:
            names = [c for c in SAMPLE_COLUMNS if c in self.file.schema_arrow.names]
            raw = self._read_group(g, names)
            group = self._read(lambda: _decode(raw, self.where))
            algorithm = self.metadata.get(CHECKSUM_META, ALGORITHM.encode())
            has = group.has_checksums
            if algorithm != ALGORITHM.encode() and has is not None and has.any():
                raise IntegrityError(f"{self.where}: unsupported sample checksum {algorithm!r}")
            self._groups[g] = group
            while len(self._groups) > CACHED_ROW_GROUPS:
                self._groups.popitem(last=False)
        self._groups.move_to_end(g)
        return group

    def _load(self, i: int) -> ShardInfo:
        table = self.table
        g = int(np.searchsorted(self._group_starts, i, side="right")) - 1
        group, r = self._group(g), i - int(self._group_starts[g])
        has = group.checksums is not None and group.has_checksums[r]  # type: ignore[index]
        info = ShardInfo(
            key=table.keys[i],
            size=int(table.sizes[i]),
            key_id=table.key_ids[i],
            sample_keys=tuple(_row(group.keys, r).to_pylist()),
            offsets=_row(group.offsets, r).copy(),
            lengths=_row(group.lengths, r).copy(),
            checksums=_row(group.checksums, r).copy() if has else None,  # type: ignore[arg-type]
            version=table.versions[i],
        )
        return check_shard(info, int(table.counts[i]), f"{self.where}: shard {i}")

    def __len__(self) -> int:
        return len(self.table.keys)

    @overload
    def __getitem__(self, i: int) -> ShardInfo: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[ShardInfo]: ...
    def __getitem__(self, i: int | slice) -> ShardInfo | Sequence[ShardInfo]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        info = self._shards.get(i)  # a hit takes no lock: the hot path of every sample read
        if info is not None:
            return info
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"shard {i} out of range ({n} shards)")
        i %= n
        with self._lock:
            info = self._shards.get(i)
            if info is None:
                info = self._load(i)
                self._shards[i] = info
                self._cached_samples += info.num_samples
                while self._cached_samples > CACHED_SAMPLES and len(self._shards) > 1:
                    self._cached_samples -= self._shards.popitem(last=False)[1].num_samples
            return info
