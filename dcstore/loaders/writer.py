"""``ShardWriter``: webdataset-style samples -> tar shards + manifest, through any store.

Guarantees:

* Shards are WebDataset-compatible tar files of about ``shard_size`` bytes
  (a sample is never split; one larger sample makes one larger shard),
  deterministic byte for byte for the same samples.
* Each shard is one atomic ``put`` (encrypted when the store is opened with
  ``keys``) under ``shards/<version>/``; the manifest is committed last, and
  only when the writer closes without an exception, so a half-written dataset
  is never visible and a failed pack leaves the previous version current.
  The store keeps the last ``keep`` versions (see :mod:`dcstore.loaders.versions`).
* The manifest records each sample's checksum (:mod:`dcstore.loaders.checksum`),
  which loaders check on read.
* Memory is bounded by about two shards (one being filled, one being put);
  payloads are copied once, into the shard buffer, during ``write``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.backends.objectio import CommitOnExit
from dcstore.errors import ConfigError
from dcstore.loaders.checksum import sample_checksum
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest, ShardInfo
from dcstore.loaders.tario import (
    END_OF_ARCHIVE,
    check_name_characters,
    check_sample_key,
    member_bytes,
    split_name,
)
from dcstore.loaders.versions import (
    DEFAULT_KEEP,
    check_keep,
    commit_version,
    refuse_other_keys,
    refuse_unreadable_manifest,
    shard_key,
)
from dcstore.store import CacheSpec, KeySpec
from dcstore.units import parse_size

DEFAULT_SHARD_SIZE = 64 * 1024 * 1024


def new_version() -> str:
    """A fresh version name: UTC time (sorts by time) plus random bits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def starts_new_shard(filled: int, length: int, shard_size: int) -> bool:
    """Whether a sample of ``length`` tar bytes goes to a new shard after ``filled`` bytes."""
    return filled > 0 and filled + length + len(END_OF_ARCHIVE) > shard_size


LABEL_EXTENSIONS = ("cls", "cls2", "class")
"""Fields whose last extension is one of these hold a class index: readers decode them with
``int`` and collate them into int64 tensors."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def label_out_of_range(number: int) -> str | None:
    """Why the integer label ``number`` cannot be collated (outside int64), or None."""
    if INT64_MIN <= number <= INT64_MAX:
        return None
    return f"label {number} is outside int64 [{INT64_MIN}, {INT64_MAX}], which readers collate into"


def _check_label(key: str, field: str, value: Any) -> None:
    """A ``cls`` number readers can decode (``int`` of its text) and collate (int64): an
    integer in int64 (a float was written, then failed in ``decode()``). Text and bytes
    pass as they are: tar shards packed as they are may label with names or ids."""
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return
    where = f"sample {key!r} field {field!r}"
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ConfigError(
            f"{where}: a class label must be an integer (an int or a numpy integer, or "
            f"text), got {value!r}: give the class index"
        )
    problem = label_out_of_range(int(value))
    if problem is not None:
        raise ConfigError(f"{where}: {problem}: give a class index in that range")


def _field_bytes(key: str, field: str, value: Any) -> bytes | bytearray | memoryview:
    if field.rsplit(".", 1)[-1] in LABEL_EXTENSIONS:
        _check_label(key, field, value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return str(value).encode()  # labels[i] of an ndarray is a numpy scalar
    raise ConfigError(
        f"sample {key!r} field {field!r}: expected bytes, str or a number, "
        f"got {type(value).__name__} (encode it first)"
    )


def _key_id(store: Backend) -> str | None:
    """The id of the key that encrypts new objects in ``store``, if it encrypts."""
    return store.encryption_key_id


class ShardWriter(CommitOnExit):
    """Write samples (``{"__key__": ..., "jpg": b"...", "cls": b"3"}``) as a dataset.

    ``store`` is a URL or a :class:`Backend`; ``cache``/``keys`` are passed to
    :func:`dcstore.store.open_store`. Use as a context manager, or call
    :meth:`close` to commit; :meth:`abort` discards the version. ``classes``
    is the class table stored in the manifest; ``keep`` how many versions the
    store keeps after the commit. Several writers may share one ``version``
    (``first_shard`` numbers their shards apart) and end with :meth:`finish`;
    one manifest then commits all their shards.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Backend,
        *,
        cache: CacheSpec | None = None,
        keys: KeySpec | None = None,
        shard_size: int | str = DEFAULT_SHARD_SIZE,
        metadata: Mapping[str, str] | None = None,
        manifest_key: str = MANIFEST_KEY,
        classes: Sequence[str] = (),
        keep: int = DEFAULT_KEEP,
        version: str | None = None,
        first_shard: int = 0,
    ):
        shard_size = parse_size(shard_size)  # "64MiB" too, as the CLI's --shard-size
        if shard_size <= 0:
            raise ConfigError(f"shard_size must be positive, got {shard_size}")
        check_keep(keep)
        if isinstance(classes, str):  # "cat" would be the classes c, a, t
            raise ConfigError(f"classes must be a list of class names, not one string {classes!r}")
        if metadata is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in dict(metadata).items()
        ):  # checked here: the manifest, written last, could not store them
            raise ConfigError(f"metadata must map str to str, got {dict(metadata)!r}")
        if not isinstance(store, Backend) or cache is not None or keys is not None:
            from dcstore.store import open_store

            store = open_store(store, cache=cache, keys=keys)
        self.store: Backend = store
        if version is None:  # a writer of its own version (a pack's share: the pack checked)
            refuse_other_keys(store, manifest_key)
            refuse_unreadable_manifest(store, manifest_key)
        self.shard_size = shard_size
        self.manifest_key = manifest_key
        self.metadata = dict(metadata or {})
        self.classes = tuple(classes)
        self.keep = keep
        self.version = version or new_version()
        self.first_shard = first_shard
        self.samples_written = 0
        self.bytes_written = 0
        self._shards: list[ShardInfo] = []
        self._buf = bytearray()
        self._keys: list[str] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._checksums: list[int] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dcstore-pack")
        self._pending: tuple[int, Future[ObjectMeta]] | None = None  # (shard index, put)
        self._closed = False
        self._committed: Manifest | None = None

    def write(self, sample: Mapping[str, Any]) -> None:
        """Append one sample; fields other than ``__key__`` must be bytes, str or numbers,
        and a class label (``cls``, ``cls2``, ``class``) given as a number an integer in
        int64 (as readers collate it)."""
        if self._closed:
            raise ConfigError("ShardWriter is closed")
        key = sample.get("__key__")
        if not isinstance(key, str) or not key:
            raise ConfigError(f"every sample needs a non-empty str '__key__', got {key!r}")
        if split_name(key + ".x")[0] != key:
            raise ConfigError(f"sample key {key!r} must not contain '.' after its last '/'")
        check_sample_key(key)
        if self._keys and self._keys[-1] == key:
            raise ConfigError(
                f"sample key {key!r} repeats the sample's before it: tar readers (webdataset) "
                "would read the two as one sample; give each sample its own key"
            )
        pieces: list[bytes | memoryview] = []
        for field, value in sample.items():
            if not isinstance(field, str) or not field or "/" in field:
                raise ConfigError(f"sample {key!r}: bad field name {field!r}")
            if field.startswith("__"):
                continue
            if field != field.lower():  # readers (and webdataset's) see fields lower-cased
                raise ConfigError(
                    f"sample {key!r}: field {field!r} would be read back as "
                    f"{field.lower()!r} (readers lower-case field names, as webdataset's "
                    "do): name it in lower case"
                )
            check_name_characters(field, f"sample {key!r} field {field!r}")
            pieces.extend(member_bytes(f"{key}.{field}", _field_bytes(key, field, value)))
        if not pieces:
            raise ConfigError(f"sample {key!r} has no fields")
        length = sum(len(p) for p in pieces)
        size = len(self._buf)
        if starts_new_shard(size, length, self.shard_size):
            self._flush()
            size = 0
        self._keys.append(key)
        self._offsets.append(size)
        self._lengths.append(length)
        for piece in pieces:  # the only copy of the payload: callers may reuse their buffers
            self._buf += piece
        with memoryview(self._buf) as record:
            self._checksums.append(sample_checksum(record[size:]))
        self.samples_written += 1

    def _flush(self) -> None:
        if not self._keys:
            return
        data, self._buf = self._buf, bytearray()
        data += END_OF_ARCHIVE
        key = shard_key(self.version, self.first_shard + len(self._shards))
        self._shards.append(
            ShardInfo(
                key=key,
                size=len(data),
                key_id=_key_id(self.store),
                sample_keys=tuple(self._keys),
                offsets=np.asarray(self._offsets, dtype=np.int64),
                lengths=np.asarray(self._lengths, dtype=np.int64),
                checksums=np.asarray(self._checksums, dtype=np.uint64),
            )
        )
        self._keys, self._offsets, self._lengths, self._checksums = [], [], [], []
        self._wait()
        self._pending = (len(self._shards) - 1, self._pool.submit(self.store.put, key, data))
        self.bytes_written += len(data)

    def _wait(self) -> None:
        if self._pending is not None:
            (index, pending), self._pending = self._pending, None
            written = pending.result()  # record the version the shard became
            self._shards[index] = dataclasses.replace(self._shards[index], version=written.version)

    def finish(self) -> tuple[ShardInfo, ...]:
        """Write the last shard and stop without committing; return every shard written."""
        if self._closed:
            raise ConfigError("ShardWriter is closed")
        try:
            self._flush()
            self._wait()
        finally:
            self._closed = True
            self._pool.shutdown()
        return tuple(self._shards)

    def close(self) -> Manifest:
        """Write the last shard, then commit the manifest; return it. Closing again
        (``close()`` inside the ``with`` block) returns the manifest committed."""
        if self._committed is not None:
            return self._committed
        manifest = Manifest(
            self.version, self.finish(), self.metadata, self.classes, versions_of=self.store.url
        )
        self._committed = commit_version(self.store, manifest, self.manifest_key, self.keep)[0]
        return self._committed

    def abort(self) -> None:
        """Stop without committing: the previous dataset version stays current."""
        self._closed = True
        with contextlib.suppress(Exception):  # the shard is orphaned either way
            self._wait()
        self._pool.shutdown()

    def __repr__(self) -> str:
        state = "committed" if self._committed else "closed" if self._closed else "open"
        return (
            f"ShardWriter({self.store.url!r}, version={self.version!r}, "
            f"samples={self.samples_written}, shards={len(self._shards)}, {state})"
        )

    @property
    def shards(self) -> tuple[ShardInfo, ...]:
        """Shards handed to the store so far."""
        return tuple(self._shards)
