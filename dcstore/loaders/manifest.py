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
* A loaded manifest holds only its shard table; each shard's samples are read
  on first use and checked before any offset is trusted (:mod:`dcstore.loaders.shardindex`),
  so opening costs the same for a thousand samples or a hundred million.
* ``Manifest`` is immutable and pickles as the manifest's address (the store, its key
  and the object version that was opened), so ``DataLoader`` workers receive a few
  hundred bytes and re-read the shard table.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from dcstore.backends.base import Backend
from dcstore.errors import IntegrityError, NotFoundError
from dcstore.loaders.checksum import ALGORITHM
from dcstore.loaders.shardindex import (
    CHECKSUM_META,
    FORMAT,
    ROW_GROUP_SAMPLES,
    SCHEMA,
    BytesSource,
    ObjectSource,
    ShardIndex,
    ShardTable,
    Source,
    read_parquet_in_this_thread,
    row_groups,
    write_manifest,
)
from dcstore.loaders.shardinfo import ShardInfo
from dcstore.ops import exists

MANIFEST_KEY = "manifest.parquet"
__all__ = [
    "MANIFEST_KEY",
    "Manifest",
    "ShardInfo",
    "load_manifest",
    "read_parquet_in_this_thread",
]


_CACHED = ("table", "counts", "starts")


@dataclass(frozen=True)
class Manifest:
    """A dataset version: its shards in order, addressed by global sample index."""

    version: str
    shards: Sequence[ShardInfo]
    """A tuple when built in memory; a lazily read :class:`ShardIndex` when loaded."""
    metadata: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    """Class names; a sample's ``cls`` field is its index here (empty: no class table)."""
    previous: tuple[str, ...] = ()
    """Earlier versions still kept in the store, newest first (see ``loaders.versions``)."""
    versions_of: str = ""
    """URL of the store whose object versions the shards' ``version`` fields are: a copy
    of the dataset elsewhere has other versions, so :func:`load_manifest` from any other
    store drops them (reads then ask for the current shard)."""

    def __getstate__(self) -> dict[str, Any]:
        """The fields only: derived arrays are recomputed where unpickled."""
        return {k: v for k, v in self.__dict__.items() if k not in _CACHED}

    def unpinned(self) -> Manifest:
        """This manifest without shard versions."""
        if isinstance(self.shards, ShardIndex):
            return dataclasses.replace(self, shards=self.shards.unpinned(), versions_of="")
        shards = tuple(dataclasses.replace(s, version=None) for s in self.shards)
        return dataclasses.replace(self, shards=shards, versions_of="")

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> index, like torchvision's ``ImageFolder.class_to_idx``."""
        return {name: i for i, name in enumerate(self.classes)}

    @cached_property
    def table(self) -> ShardTable:
        """The shard-level columns (key, size, sample count, key id, version per shard)."""
        if isinstance(self.shards, ShardIndex):
            return self.shards.table
        return ShardTable.of(self.shards)

    @cached_property
    def counts(self) -> np.ndarray:
        """Samples per shard."""
        return self.table.counts

    @cached_property
    def starts(self) -> np.ndarray:
        """Global index of each shard's first sample (length ``len(shards) + 1``)."""
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    @property
    def num_samples(self) -> int:
        return int(self.starts[-1])

    @property
    def total_bytes(self) -> int:
        return sum(self.table.sizes.tolist())

    def locate(self, index: int) -> tuple[int, int]:
        """(shard index, sample index in shard) of global sample ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range (dataset has {self.num_samples})")
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, index - int(self.starts[shard])

    def file_metadata(self) -> dict[bytes, bytes]:
        """The Parquet key-value metadata of this version (schema version included)."""
        meta = {
            b"dcstore.format": FORMAT.encode(),
            b"dcstore.version": self.version.encode(),
            b"dcstore.classes": json.dumps(list(self.classes)).encode(),
            b"dcstore.previous": json.dumps(list(self.previous)).encode(),
            b"dcstore.versions_of": self.versions_of.encode(),
            CHECKSUM_META: ALGORITHM.encode(),
        }
        meta.update({f"user.{k}".encode(): v.encode() for k, v in self.metadata.items()})
        return meta

    def _row_group(self, first: int, stop: int) -> pa.Table:
        shards = [self.shards[i] for i in range(first, stop)]
        return pa.table(
            {
                "shard": [s.key for s in shards],
                "size": [s.size for s in shards],
                "samples": [s.num_samples for s in shards],
                "key_id": [s.key_id for s in shards],
                "keys": [list(s.sample_keys) for s in shards],
                "offsets": [s.offsets.tolist() for s in shards],
                "lengths": [s.lengths.tolist() for s in shards],
                "checksums": [
                    None if s.checksums is None else s.checksums.tolist() for s in shards
                ],
                "version": [s.version for s in shards],
            },
            schema=SCHEMA,
        )

    def to_parquet(self, row_group_samples: int = ROW_GROUP_SAMPLES) -> bytes:
        """Serialise to Parquet bytes, in row groups of about ``row_group_samples``
        samples (whole shards), so a lazy reader of one shard reads little."""
        sink = io.BytesIO()
        bounds = row_groups(self.counts, row_group_samples)
        groups = (self._row_group(a, b) for a, b in bounds)
        write_manifest(sink, groups, self.file_metadata())
        return sink.getvalue()

    @classmethod
    def open(cls, source: Source, where: str) -> Manifest:
        """The manifest in ``source``: its footer and shard table are read now, each
        shard's samples on first use. A foreign or damaged file raises
        :class:`IntegrityError` naming ``where``, and nothing else escapes."""
        shards = ShardIndex(source, where)
        meta = shards.metadata
        try:
            user = {k.decode()[5:]: v.decode() for k, v in meta.items() if k.startswith(b"user.")}
            classes = tuple(json.loads(meta.get(b"dcstore.classes", b"[]")))
            previous = tuple(json.loads(meta.get(b"dcstore.previous", b"[]")))
            versions_of = meta.get(b"dcstore.versions_of", b"").decode()
            version = meta[b"dcstore.version"].decode()
        except (KeyError, ValueError, TypeError) as exc:  # missing, bad JSON or UTF-8
            raise IntegrityError(f"{where}: damaged manifest metadata ({exc!r:.200})") from None
        manifest = cls(version, shards, user, classes, previous, versions_of)
        manifest.table  # noqa: B018 - read and check the shard table now
        return manifest

    @classmethod
    def from_parquet(cls, data: bytes, *, where: str = "manifest") -> Manifest:
        """Parse Parquet bytes, checking every shard's row now (sample ranges outside
        their shard, a missing or mistyped column, undecodable metadata): raises
        :class:`IntegrityError` naming ``where``, and nothing else escapes."""
        manifest = cls.open(BytesSource(bytes(data)), where)
        for _ in manifest.shards:
            pass
        return manifest

    def commit(self, store: Backend, key: str = MANIFEST_KEY) -> None:
        """Publish this version with one atomic put (call after every shard is written)."""
        store.put(key, self.to_parquet())


def load_manifest(store: Backend, key: str = MANIFEST_KEY) -> Manifest:
    """The committed manifest of the dataset in ``store``, pinned to the object version
    read now (a worker that re-reads it gets the same one or a VersionChangedError)."""
    try:
        meta = store.head(key)
    except NotFoundError as exc:
        from dcstore.tokens.manifest import TOKENS_KEY

        if key == MANIFEST_KEY and exists(store, TOKENS_KEY):
            raise NotFoundError(
                f"{store.url}: a token dataset ({TOKENS_KEY!r}), not a sample dataset: "
                f"read it with dcstore.tokens.TokenDataset or DocumentDataset"
            ) from exc
        raise NotFoundError(
            f"{store.url}: no dataset here (missing {key!r}; pack one with `dcstore pack`)"
        ) from exc
    refuse = store.encryption_key_id is None
    source = ObjectSource(store, key, meta.size, meta.version, refuse=refuse)
    manifest = Manifest.open(source, f"{store.url}/{key}")
    return manifest if manifest.versions_of == store.url else manifest.unpinned()
