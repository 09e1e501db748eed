"""The dataset manifest: one Parquet object that *is* a dataset version.

A manifest lists every shard (key, byte size, sample count, key id, and the
object version its write returned) and, per
sample, its key, its byte range in the shard and the XXH3-64 checksum of those
bytes (:mod:`dcstore.loaders.checksum`; absent in older manifests), so a loader starts without
listing the backend and can read any single sample with one range request.

Guarantees:

* The manifest is written last, with one atomic ``put``: a reader sees the
  previous dataset version or the complete new one, never a half-written
  dataset. Shards of a version live under a version-named prefix and are
  never modified.
* ``Manifest`` is immutable and pickles cheaply (NumPy arrays), so
  ``DataLoader`` workers receive it instead of re-reading it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dcstore.backends.base import Backend
from dcstore.crypto.format import refuse_ciphertext
from dcstore.errors import IntegrityError, NotFoundError
from dcstore.loaders.checksum import ALGORITHM
from dcstore.store import CacheSpec, KeySpec


def read_parquet_in_this_thread(source: Any) -> pa.Table:
    """Read a whole Parquet file without starting any Arrow thread.

    A process in which Arrow started a thread pool can abort at exit ("terminate called
    without an active exception", apache/arrow#34314): measured here with pyarrow 26, 6 of
    80 short processes calling ``pq.read_table``, and still 1 in 200 with
    ``use_threads=False`` (it starts an I/O thread). ``ParquetFile.read(use_threads=False)``
    starts none (tests/test_manifest_exit.py). The files read here are small.
    """
    return pq.ParquetFile(source).read(use_threads=False)


MANIFEST_KEY = "manifest.parquet"
FORMAT = "dcstore-shards/1"

_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("size", pa.int64()),
        ("samples", pa.int64()),
        ("key_id", pa.string()),
        ("keys", pa.list_(pa.string())),
        ("offsets", pa.list_(pa.int64())),
        ("lengths", pa.list_(pa.int64())),
        ("checksums", pa.list_(pa.uint64())),
        ("version", pa.string()),
    ]
)
_CHECKSUM_META = b"dcstore.checksum"


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its object key, size, key id, and per-sample byte ranges."""

    key: str
    size: int
    key_id: str | None
    sample_keys: tuple[str, ...]
    offsets: np.ndarray
    lengths: np.ndarray
    checksums: np.ndarray | None = None
    """Per-sample :func:`~dcstore.loaders.checksum.sample_checksum` (uint64); None in
    manifests written before checksums existed."""
    version: str | None = None
    """The shard object's version when the manifest was written: loaders read exactly
    it (``version=``), so a warm cache serves them without asking the origin and a
    replaced shard is a :class:`~dcstore.errors.VersionChangedError`. None in
    manifests written before versions were recorded (reads then ask for the current one)."""

    @property
    def num_samples(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class Manifest:
    """A dataset version: its shards in order, addressed by global sample index."""

    version: str
    shards: tuple[ShardInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    """Class names; a sample's ``cls`` field is its index here (empty: no class table)."""
    previous: tuple[str, ...] = ()
    """Earlier versions still kept in the store, newest first (see ``loaders.versions``)."""
    versions_of: str = ""
    """URL of the store whose object versions the shards' ``version`` fields are: a copy
    of the dataset elsewhere has other versions, so :func:`load_manifest` from any other
    store drops them (reads then ask for the current shard)."""

    def unpinned(self) -> Manifest:
        """This manifest without shard versions."""
        shards = tuple(dataclasses.replace(s, version=None) for s in self.shards)
        return dataclasses.replace(self, shards=shards, versions_of="")

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> index, like torchvision's ``ImageFolder.class_to_idx``."""
        return {name: i for i, name in enumerate(self.classes)}

    @cached_property
    def counts(self) -> np.ndarray:
        """Samples per shard."""
        return np.asarray([s.num_samples for s in self.shards], dtype=np.int64)

    @cached_property
    def starts(self) -> np.ndarray:
        """Global index of each shard's first sample (length ``len(shards) + 1``)."""
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    @property
    def num_samples(self) -> int:
        return int(self.starts[-1])

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.shards)

    def locate(self, index: int) -> tuple[int, int]:
        """(shard index, sample index in shard) of global sample ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range (dataset has {self.num_samples})")
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, index - int(self.starts[shard])

    def to_parquet(self) -> bytes:
        """Serialise to Parquet bytes (schema version in the file metadata)."""
        table = pa.table(
            {
                "shard": [s.key for s in self.shards],
                "size": [s.size for s in self.shards],
                "samples": [s.num_samples for s in self.shards],
                "key_id": [s.key_id for s in self.shards],
                "keys": [list(s.sample_keys) for s in self.shards],
                "offsets": [s.offsets.tolist() for s in self.shards],
                "lengths": [s.lengths.tolist() for s in self.shards],
                "checksums": [
                    None if s.checksums is None else s.checksums.tolist() for s in self.shards
                ],
                "version": [s.version for s in self.shards],
            },
            schema=_SCHEMA,
        )
        meta = {
            b"dcstore.format": FORMAT.encode(),
            b"dcstore.version": self.version.encode(),
            b"dcstore.classes": json.dumps(list(self.classes)).encode(),
            b"dcstore.previous": json.dumps(list(self.previous)).encode(),
            b"dcstore.versions_of": self.versions_of.encode(),
            _CHECKSUM_META: ALGORITHM.encode(),
        }
        meta.update({f"user.{k}".encode(): v.encode() for k, v in self.metadata.items()})
        table = table.replace_schema_metadata(meta)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()

    @classmethod
    def from_parquet(cls, data: bytes, *, where: str = "manifest") -> Manifest:
        """Parse Parquet bytes. A foreign, damaged or inconsistent file (a missing or
        mistyped column, sample ranges outside their shard, undecodable metadata)
        raises :class:`IntegrityError` naming ``where``, and nothing else escapes."""
        try:
            table = read_parquet_in_this_thread(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: bad UTF-8 names
            raise IntegrityError(f"{where}: not a readable dcstore manifest ({exc})") from exc
        meta = table.schema.metadata or {}
        if meta.get(b"dcstore.format") != FORMAT.encode():
            raise IntegrityError(f"{where}: not a {FORMAT} manifest")
        _check_schema(table.schema, where)
        try:
            return cls._from_table(table, meta, where)
        except (KeyError, ValueError, TypeError) as exc:  # metadata: missing, bad JSON or UTF-8
            raise IntegrityError(f"{where}: damaged manifest metadata ({exc!r:.200})") from None

    @classmethod
    def _from_table(cls, table: pa.Table, meta: dict[bytes, bytes], where: str) -> Manifest:
        cols = table.to_pydict()
        checksums = cols.get("checksums") or [None] * table.num_rows
        versions = cols.get("version") or [None] * table.num_rows
        algorithm = meta.get(_CHECKSUM_META, ALGORITHM.encode()).decode()
        if algorithm != ALGORITHM and any(c is not None for c in checksums):
            raise IntegrityError(f"{where}: unsupported sample checksum {algorithm!r}")
        shards = tuple(
            _checked(
                ShardInfo(
                    key=cols["shard"][i],
                    size=cols["size"][i],
                    key_id=cols["key_id"][i],
                    sample_keys=tuple(cols["keys"][i] or ()),
                    offsets=np.asarray(cols["offsets"][i] or (), dtype=np.int64),
                    lengths=np.asarray(cols["lengths"][i] or (), dtype=np.int64),
                    checksums=None
                    if checksums[i] is None
                    else np.asarray(checksums[i], dtype=np.uint64),
                    version=versions[i],
                ),
                cols["samples"][i],
                f"{where}: shard {i}",
            )
            for i in range(table.num_rows)
        )
        user = {k.decode()[5:]: v.decode() for k, v in meta.items() if k.startswith(b"user.")}
        classes = tuple(json.loads(meta.get(b"dcstore.classes", b"[]")))
        previous = tuple(json.loads(meta.get(b"dcstore.previous", b"[]")))
        versions_of = meta.get(b"dcstore.versions_of", b"").decode()
        version = meta[b"dcstore.version"].decode()
        return cls(version, shards, user, classes, previous, versions_of)

    def commit(self, store: Backend, key: str = MANIFEST_KEY) -> None:
        """Publish this version with one atomic put (call after every shard is written)."""
        store.put(key, self.to_parquet())


_OPTIONAL_COLUMNS = ("checksums", "version")


def _check_schema(schema: pa.Schema, where: str) -> None:
    """Every column a manifest needs is there, with its type (older files lack the optional)."""
    for expected in _SCHEMA:
        index = schema.get_field_index(expected.name)
        if index < 0:
            if expected.name in _OPTIONAL_COLUMNS:
                continue
            raise IntegrityError(f"{where}: manifest has no column {expected.name!r}")
        if schema.field(index).type != expected.type:
            raise IntegrityError(
                f"{where}: manifest column {expected.name!r} is {schema.field(index).type},"
                f" expected {expected.type}"
            )


def _checked(shard: ShardInfo, samples: int | None, what: str) -> ShardInfo:
    """``shard`` if its row is consistent: a key and size, one offset, length (and
    checksum) per sample key, every sample inside the shard."""
    if shard.key is None or shard.size is None or shard.size < 0:
        raise IntegrityError(f"{what}: no shard key or size")
    n = len(shard.sample_keys)
    counts = {n, samples, len(shard.offsets), len(shard.lengths)}
    if shard.checksums is not None:
        counts.add(len(shard.checksums))
    if len(counts) != 1 or any(k is None for k in shard.sample_keys):
        raise IntegrityError(f"{what} ({shard.key!r}): sample counts disagree")
    if n and (  # each bounded first, so the sum cannot overflow int64
        min(shard.offsets.min(), shard.lengths.min()) < 0
        or max(shard.offsets.max(), shard.lengths.max()) > shard.size
        or (shard.offsets + shard.lengths).max() > shard.size
    ):
        raise IntegrityError(f"{what} ({shard.key!r}): a sample lies outside the shard")
    return shard


def load_manifest(store: Backend, key: str = MANIFEST_KEY) -> Manifest:
    """Read the committed manifest of the dataset in ``store``."""
    try:
        data = store.get(key)
    except NotFoundError as exc:
        raise NotFoundError(
            f"{store.url}: no dataset here (missing {key!r}; pack one with `dcstore pack`)"
        ) from exc
    where = f"{store.url}/{key}"
    if store.encryption_key_id is None:
        refuse_ciphertext(data, f"dataset {where}")
    manifest = Manifest.from_parquet(data, where=where)
    return manifest if manifest.versions_of == store.url else manifest.unpinned()


def open_dataset(
    url_or_store: str | Backend, *, cache: CacheSpec | None = None, keys: KeySpec | None = None,
    manifest_key: str = MANIFEST_KEY,
) -> tuple[Backend, Manifest]:  # fmt: skip
    """The store at ``url_or_store`` (a :class:`Backend` is used as is unless ``cache`` or
    ``keys`` ask for a stack: see :func:`dcstore.store.open_store`) and its manifest."""
    if isinstance(url_or_store, Backend) and cache is None and keys is None:
        store = url_or_store
    else:
        from dcstore.store import open_store

        store = open_store(url_or_store, cache=cache, keys=keys)
    return store, load_manifest(store, manifest_key)
