"""``TokenWriter``: token ids of documents -> fixed-size token shards + a manifest.

Guarantees:

* The documents are concatenated in the order written, each followed by the
  end-of-document id when the writer has one; the stream is cut into shards of
  exactly ``shard_tokens`` tokens (the last may be shorter), each one atomic
  ``put`` (encrypted when the store was opened with ``keys``) under
  ``tokens/<version>/``.
* One token dataset per store (its manifest is ``tokens.parquet``). The
  manifest is committed last, only when the writer closes without an
  exception: a failed pack leaves the previous version current. The manifest
  it replaces is archived first (``token-versions/<version>.parquet``); after the
  commit the store keeps this version and the previous one, shards and archive
  (its readers keep working, ``TokenDataset(..., version=)`` opens it); older
  versions' shards and archives are deleted.
* An id outside ``0 .. vocab_size - 1`` is refused (:class:`ConfigError`) before
  anything is written: ids are never silently wrapped into the stored dtype.
* Memory is bounded by about two shards (one being filled, one being put).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.errors import ConfigError, IntegrityError, NotFoundError
from dcstore.loaders.versions import listed_for_cleanup, refuse_other_keys
from dcstore.loaders.writer import new_version
from dcstore.ops import copy_object
from dcstore.store import CacheSpec, KeySpec, store_for
from dcstore.tokens.manifest import (
    ARCHIVE_PREFIX,
    DTYPES,
    SHARDS_PREFIX,
    TOKEN_PACK_OBJECTS,
    TOKENS_KEY,
    NotATokenManifestError,
    TokenManifest,
    TokenShard,
    dtype_for,
    load_token_manifest,
    token_archive_key,
    token_shard_key,
)

DEFAULT_SHARD_BYTES = 64 * 1024 * 1024


class TokenWriter:
    """Write tokenized documents to ``url_or_store`` as one new token dataset version.

    ``vocab_size`` picks the stored dtype (``uint16`` up to 65,536 ids, else
    ``uint32``); ``eod`` is appended after each document (``None``: nothing).
    ``columns`` names the per-document fields that ride along (e.g. ``label``);
    their values are given to :meth:`write`. With ``keys``, ``segment_size`` sets the
    encrypted segment size (default 4 MiB): ``TokenDataset.read(i)`` fetches and decrypts
    whole segments, so 64 KiB fetches 64x fewer bytes per random block (measured on a local
    store: p50 0.69 -> 0.18 ms; streaming in process 12 % slower). Use as a context
    manager, or call :meth:`close` to commit and :meth:`abort` to discard. ``version``
    names the new version (default: :func:`new_version`); its shards are under
    ``tokens/<version>/``, which an aborted writer leaves behind.
    """

    def __init__(
        self,
        url_or_store: str | Backend,
        *,
        vocab_size: int,
        eod: int | None = None,
        columns: Sequence[str] = (),
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        cache: CacheSpec | None = None,
        keys: KeySpec | None = None,
        segment_size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        version: str | None = None,
    ):
        self.store = store_for(url_or_store, cache=cache, keys=keys, segment_size=segment_size)
        self.dtype = dtype_for(vocab_size)
        self.vocab_size = vocab_size
        if eod is not None and not 0 <= eod < vocab_size:
            raise ConfigError(f"eod id {eod} is outside the vocabulary (0 .. {vocab_size - 1})")
        self.eod = eod
        if shard_bytes < DTYPES[self.dtype].itemsize:
            raise ConfigError(
                f"a token shard must hold at least one token ({self.dtype}: "
                f"{DTYPES[self.dtype].itemsize} bytes); shard size {shard_bytes} B is too small"
            )
        self.shard_tokens = shard_bytes // DTYPES[self.dtype].itemsize
        reserved = {"start", "length"} & set(columns)
        if reserved:
            raise ConfigError(f"column names {sorted(reserved)} are reserved by the manifest")
        self.columns = tuple(columns)
        self.metadata = dict(metadata or {})
        refuse_other_keys(self.store, TOKENS_KEY)
        _refuse_another_table(self.store)
        self.version = version or new_version()
        self._buf = np.empty(self.shard_tokens, dtype=DTYPES[self.dtype])
        self._fill = 0
        self._shards: list[TokenShard] = []
        self._starts: list[int] = []
        self._lengths: list[int] = []
        self._riders: dict[str, list[Any]] = {name: [] for name in self.columns}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dcstore-token-put")
        self._pending: tuple[int, Future[ObjectMeta]] | None = None
        self._closed = False
        self.tokens_written = 0
        self.manifest: TokenManifest | None = None
        """The committed manifest, after :meth:`close`."""

    def write(self, ids: Sequence[int] | np.ndarray, **columns: Any) -> None:
        """Append one document's token ids (and its values of the writer's ``columns``)."""
        if self._closed:
            raise ConfigError("TokenWriter is closed")
        if set(columns) != set(self.columns):
            raise ConfigError(f"write() needs exactly the columns {list(self.columns)}")
        array = np.asarray(ids)
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise ConfigError("a document's ids must be a 1-D sequence of integers")
        if array.size and (int(array.min()) < 0 or int(array.max()) >= self.vocab_size):
            raise ConfigError(
                f"token id outside the vocabulary (0 .. {self.vocab_size - 1}) in document "
                f"{len(self._starts)}"
            )
        self._starts.append(self.tokens_written)
        self._append(array)
        if self.eod is not None:
            self._append(np.asarray([self.eod]))
        self._lengths.append(self.tokens_written - self._starts[-1])
        for name, value in columns.items():
            self._riders[name].append(value)

    def _append(self, array: np.ndarray) -> None:
        done = 0
        while done < array.size:
            n = min(array.size - done, self.shard_tokens - self._fill)
            self._buf[self._fill : self._fill + n] = array[done : done + n]
            self._fill += n
            done += n
            if self._fill == self.shard_tokens:
                self._flush()
        self.tokens_written += array.size

    def _flush(self) -> None:
        if not self._fill:
            return
        data = self._buf[: self._fill].tobytes()
        key = token_shard_key(self.version, len(self._shards))
        key_id = self.store.encryption_key_id
        self._shards.append(TokenShard(key, self._fill, None, key_id))
        self._fill = 0
        self._wait()
        self._pending = (len(self._shards) - 1, self._pool.submit(self.store.put, key, data))

    def _wait(self) -> None:
        if self._pending is not None:
            (index, pending), self._pending = self._pending, None
            written = pending.result()  # record the version the shard became
            self._shards[index] = dataclasses.replace(self._shards[index], version=written.version)

    def _documents(self) -> pa.Table:
        columns: dict[str, Any] = {
            "start": pa.array(self._starts, type=pa.int64()),
            "length": pa.array(self._lengths, type=pa.int64()),
        }
        for name, values in self._riders.items():
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise ConfigError(f"column {name!r}: Arrow cannot store it ({exc})") from None
        return pa.table(columns)

    def close(self) -> TokenManifest:
        """Write the last shard, commit the manifest, drop versions older than the
        previous one; return the committed manifest."""
        if self._closed:
            raise ConfigError("TokenWriter is closed")
        try:
            self._flush()
            self._wait()
            manifest = TokenManifest(
                version=self.version, dtype=self.dtype, vocab_size=self.vocab_size,
                eod=self.eod, shard_tokens=self.shard_tokens, shards=tuple(self._shards),
                metadata=self.metadata, versions_of=self.store.url,
                given_documents=self._documents(),
            )  # fmt: skip
            previous = _current_version(self.store)
            if previous is not None and previous != self.version:
                copy_object(self.store, self.store, TOKENS_KEY, token_archive_key(previous))
            self.store.put(TOKENS_KEY, manifest.to_parquet())
        finally:
            self._closed = True
            self._pool.shutdown()
        self.manifest = manifest
        _drop_versions(self.store, keep={self.version, previous})
        return manifest

    def abort(self) -> None:
        """Stop without committing: the previous version stays current."""
        self._closed = True
        with contextlib.suppress(Exception):  # the shard is orphaned either way
            self._wait()
        self._pool.shutdown()

    def __repr__(self) -> str:
        return (
            f"TokenWriter({self.store.url!r}, version={self.version!r}, "
            f"tokens={self.tokens_written}, {'closed' if self._closed else 'open'})"
        )

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _refuse_another_table(store: Backend) -> None:
    """Before the first shard: a Parquet table of the user's at the manifest's key would
    be replaced by the commit (a damaged manifest is, by design), so it is refused."""
    try:
        load_token_manifest(store)
    except NotATokenManifestError:
        raise ConfigError(
            f"{store.url}/{TOKENS_KEY} is not a token manifest but another table: pack into "
            "another place, or move it away; nothing was written"
        ) from None
    except (NotFoundError, IntegrityError):
        return


def _current_version(store: Backend) -> str | None:
    """The committed version (None: none, or a damaged manifest that is being replaced)."""
    try:
        return load_token_manifest(store).version
    except (NotFoundError, IntegrityError):
        return None


def _drop_versions(store: Backend, keep: set[str | None]) -> int:
    """Delete token shards and archived manifests of versions not in ``keep`` (only those
    a pack wrote: :data:`TOKEN_PACK_OBJECTS`); return how many objects."""
    doomed = [
        meta.key
        for meta in listed_for_cleanup(store, SHARDS_PREFIX)
        if TOKEN_PACK_OBJECTS.fullmatch(meta.key)
        and meta.key[len(SHARDS_PREFIX) :].split("/", 1)[0] not in keep
    ]
    doomed += [
        meta.key
        for meta in listed_for_cleanup(store, ARCHIVE_PREFIX)
        if TOKEN_PACK_OBJECTS.fullmatch(meta.key)
        and meta.key[len(ARCHIVE_PREFIX) :].removesuffix(".parquet") not in keep
    ]
    for key in doomed:
        store.delete(key)
    return len(doomed)
