"""The token manifest: one Parquet object that *is* a token dataset version.

Layout in a store: token shards ``tokens/<version>/000000.bin`` (little-endian
``uint16`` or ``uint32`` ids, the documents of the corpus concatenated, each
followed by the end-of-document id when there is one) and the manifest
``tokens.parquet``. The concatenated stream is cut into shards of exactly
``shard_tokens`` tokens (the last may be shorter), so token ``t`` lives in shard
``t // shard_tokens``. The manifest's rows are the documents (global ``start``
and ``length`` in tokens, end-of-document id included, plus any columns that
rode along, e.g. ``label``); its Parquet metadata holds the shard table (key,
token count, the object version each write returned, key id) and the format.

Guarantees:

* The manifest is written last, with one atomic ``put``: readers see the previous
  version or the complete new one. Shards of a version are never modified.
* A loaded manifest holds the shard table only; the document table is read on
  first use (block reading across documents never reads it). Every field is
  checked before it is trusted: a damaged or foreign file is an
  :class:`IntegrityError` naming it.
* ``TokenManifest`` pickles without its document table (a worker re-reads it,
  pinned to the same object version).
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.errors import DcstoreError, IntegrityError, NotFoundError
from dcstore.loaders.manifest import MANIFEST_KEY
from dcstore.loaders.shardindex import ObjectSource
from dcstore.loaders.versions import (
    PACK_OBJECTS,
    KeptVersion,
    delete_unreferenced,
    has_manifest,
    pick_version,
    written_by_pack,
)
from dcstore.ops import exists

TOKENS_KEY = "tokens.parquet"
FORMAT = "dcstore-tokens/1"
SHARDS_PREFIX = "tokens/"
ARCHIVE_PREFIX = "token-versions/"
"""The manifest a commit replaced is kept here as ``<version>.parquet`` (with its shards)."""
TOKEN_PACK_OBJECTS = written_by_pack(SHARDS_PREFIX, ".bin", ARCHIVE_PREFIX)
"""The keys a pack of a token corpus writes besides its manifest: the only ones gc and a
pack's drop of old versions remove."""
DTYPES: dict[str, np.dtype[Any]] = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def token_shard_key(version: str, index: int) -> str:
    """The object key of token shard ``index`` of ``version``."""
    return f"{SHARDS_PREFIX}{version}/{index:06d}.bin"


def token_archive_key(version: str) -> str:
    """The object key of the kept copy of ``version``'s token manifest."""
    return f"{ARCHIVE_PREFIX}{version}.parquet"


def dtype_for(vocab_size: int) -> str:
    """The narrowest stored dtype holding ids ``0 .. vocab_size - 1``."""
    if not 0 < vocab_size <= 1 << 32:
        raise ValueError(f"vocab_size must be in 1 .. 2**32, got {vocab_size}")
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


@dataclass(frozen=True)
class TokenShard:
    """One shard object: its key, tokens, the version its put returned, its key id."""

    key: str
    tokens: int
    version: str | None = None
    key_id: str | None = None


@dataclass(frozen=True, eq=False)
class TokenManifest:
    """A token dataset version: shards of one concatenated token stream, and its documents."""

    version: str
    dtype: str
    vocab_size: int
    eod: int | None
    shard_tokens: int
    shards: tuple[TokenShard, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    versions_of: str = ""
    """URL of the store whose object versions the shards record (elsewhere they are dropped)."""
    source: Any = None
    """Where the document table is read from when it was not given (an ``ObjectSource``)."""
    given_documents: pa.Table | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("documents", "starts")}
        if self.source is not None:
            state["given_documents"] = None  # re-read where unpickled
        return state

    @property
    def itemsize(self) -> int:
        return int(DTYPES[self.dtype].itemsize)

    @cached_property
    def starts(self) -> np.ndarray:
        """Global index of each shard's first token (length ``len(shards) + 1``)."""
        counts = np.asarray([s.tokens for s in self.shards], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.starts[-1])

    @cached_property
    def documents(self) -> pa.Table:
        """The document table: ``start``, ``length`` (tokens) and the columns that rode along."""
        if self.given_documents is not None:
            return self.given_documents
        where = f"{self.source.store.url}/{self.source.key}"
        with self.source.open() as f:
            table = _read_parquet(f, where)[1]
        check_documents(table, self.num_tokens, where)
        return table

    def document_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, lengths) of every document, as int64 arrays."""
        docs = self.documents
        return (
            docs.column("start").to_numpy().astype(np.int64, copy=False),
            docs.column("length").to_numpy().astype(np.int64, copy=False),
        )

    def pieces(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """``(shard, first token, end token)`` (shard-local) covering global ``[start, end)``."""
        if not 0 <= start <= end <= self.num_tokens:
            raise IndexError(f"tokens [{start}, {end}) outside 0 .. {self.num_tokens}")
        out = []
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < end:
            base = int(self.starts[shard])
            stop = min(end, int(self.starts[shard + 1]))
            out.append((shard, start - base, stop - base))
            start, shard = stop, shard + 1
        return out

    # -- serialisation ---------------------------------------------------------------------

    def file_metadata(self) -> dict[bytes, bytes]:
        shards = [[s.key, s.tokens, s.version, s.key_id] for s in self.shards]
        meta = {
            b"dcstore.format": FORMAT.encode(),
            b"dcstore.version": self.version.encode(),
            b"dcstore.dtype": self.dtype.encode(),
            b"dcstore.vocab_size": str(self.vocab_size).encode(),
            b"dcstore.eod": json.dumps(self.eod).encode(),
            b"dcstore.shard_tokens": str(self.shard_tokens).encode(),
            b"dcstore.shards": json.dumps(shards).encode(),
            b"dcstore.versions_of": self.versions_of.encode(),
        }
        meta.update({f"user.{k}".encode(): v.encode() for k, v in self.metadata.items()})
        return meta

    def to_parquet(self) -> bytes:
        table = self.documents.replace_schema_metadata(self.file_metadata())
        sink = io.BytesIO()
        pq.write_table(
            table, sink, compression="zstd", row_group_size=1 << 20, write_page_checksum=True
        )
        return sink.getvalue()

    @classmethod
    def from_parquet(cls, data: bytes, *, where: str = "tokens manifest") -> TokenManifest:
        """Parse and check Parquet bytes (documents included)."""
        meta, table = _read_parquet(pa.BufferReader(data), where)
        manifest = _from_meta(meta, where, None, table)
        check_documents(table, manifest.num_tokens, where)
        return manifest


def _shard_table(raw: bytes, where: str) -> tuple[TokenShard, ...]:
    rows = json.loads(raw)
    if not isinstance(rows, list):
        raise TypeError("shard table is not a list")
    shards = []
    for key, tokens, version, key_id in rows:
        if not isinstance(key, str) or not isinstance(tokens, int) or tokens < 0:
            raise TypeError(f"bad shard row {key!r}")
        if not all(v is None or isinstance(v, str) for v in (version, key_id)):
            raise TypeError(f"bad version or key id in shard row {key!r}")
        shards.append(TokenShard(key, tokens, version, key_id))
    return tuple(shards)


class NotATokenManifestError(IntegrityError):
    """A readable Parquet table without dcstore's format key: a user's own table, which
    a pack must not replace (a damaged token manifest it does replace)."""


def _from_meta(
    meta: dict[bytes, bytes], where: str, source: Any, table: pa.Table | None
) -> TokenManifest:
    if b"dcstore.format" not in meta:
        raise NotATokenManifestError(f"{where}: not a token manifest but another table")
    try:
        if meta.get(b"dcstore.format") != FORMAT.encode():
            raise ValueError(f"format {meta.get(b'dcstore.format', b'')[:40]!r} is not {FORMAT}")
        dtype = meta[b"dcstore.dtype"].decode()
        if dtype not in DTYPES:
            raise ValueError(f"unknown token dtype {dtype[:20]!r}")
        eod = json.loads(meta[b"dcstore.eod"])
        vocab_size = int(meta[b"dcstore.vocab_size"])
        shard_tokens = int(meta[b"dcstore.shard_tokens"])
        if eod is not None and not (isinstance(eod, int) and 0 <= eod < vocab_size):
            raise ValueError(f"end-of-document id {eod!r} outside the vocabulary")
        if vocab_size > np.iinfo(DTYPES[dtype]).max + 1 or vocab_size < 1 or shard_tokens < 1:
            raise ValueError("vocab_size or shard_tokens out of range")
        shards = _shard_table(meta[b"dcstore.shards"], where)
        if any(s.tokens != shard_tokens for s in shards[:-1]) or (
            shards and not 0 < shards[-1].tokens <= shard_tokens
        ):
            raise ValueError("shards are not cut every shard_tokens tokens")
        user = {k.decode()[5:]: v.decode() for k, v in meta.items() if k.startswith(b"user.")}
        manifest = TokenManifest(
            version=meta[b"dcstore.version"].decode(), dtype=dtype, vocab_size=vocab_size,
            eod=eod, shard_tokens=shard_tokens, shards=shards, metadata=user,
            versions_of=meta.get(b"dcstore.versions_of", b"").decode(), source=source,
            given_documents=table,
        )  # fmt: skip
    except (KeyError, ValueError, TypeError, RecursionError) as exc:  # missing, bad JSON/UTF-8
        raise IntegrityError(f"{where}: damaged token manifest ({exc!r:.200})") from None
    return manifest


def _read_parquet(f: Any, where: str) -> tuple[dict[bytes, bytes], pa.Table]:
    """The file's metadata and its document table (not yet checked)."""
    try:
        parquet = pq.ParquetFile(f, page_checksum_verification=True)
        meta = dict(parquet.schema_arrow.metadata or {})
        table = parquet.read(use_threads=False)  # no Arrow thread: see read_parquet_in_this_thread
    except DcstoreError:
        raise  # named already (e.g. an encrypted manifest read without keys)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IntegrityError(f"{where}: not a readable token manifest ({exc!r:.200})") from None
    return meta, table


def check_documents(table: pa.Table, total: int, where: str) -> None:
    """Every document span lies inside a stream of ``total`` tokens, in order, without
    overlap; the span columns are int64 without nulls (else :class:`IntegrityError`)."""
    for name in ("start", "length"):
        index = table.schema.get_field_index(name)
        if index < 0 or table.schema.field(index).type != pa.int64():
            raise IntegrityError(f"{where}: token manifest has no int64 column {name!r}")
        if table.column(index).null_count:
            raise IntegrityError(f"{where}: token manifest column {name!r} has nulls")
    starts = table.column("start").to_numpy()
    lengths = table.column("length").to_numpy()
    # compared without adding (no int64 overflow): 0 <= start <= total, 0 <= length <= total - start
    if len(starts) and (
        (starts < 0).any() or (starts > total).any() or (lengths < 0).any()
        or (lengths > total - starts).any() or (starts[1:] - starts[:-1] < lengths[:-1]).any()
    ):  # fmt: skip
        raise IntegrityError(f"{where}: document spans outside the token stream or overlapping")


DATASET_KINDS = {MANIFEST_KEY: "sample dataset", TOKENS_KEY: "token corpus"}
"""What each manifest key commits: the names a message gives the datasets in a store."""
PACKED_OBJECTS = {MANIFEST_KEY: PACK_OBJECTS, TOKENS_KEY: TOKEN_PACK_OBJECTS}
"""The keys a pack of each kind writes besides its manifest."""


def dataset_manifests(store: Backend) -> list[str]:
    """The manifest keys in ``store``: a sample dataset's, a token corpus's, or both (one
    packed beside the other), in :data:`DATASET_KINDS` order. Reads keys only (through
    keys, nothing is decrypted)."""
    return [key for key in DATASET_KINDS if has_manifest(store, key)]


def load_token_manifest(store: Backend, key: str = TOKENS_KEY) -> TokenManifest:
    """The committed token manifest in ``store``, pinned to the object version read now;
    only its footer is read (the document table on first use)."""
    try:
        meta = store.head(key)
    except NotFoundError as exc:
        if key == TOKENS_KEY and exists(store, MANIFEST_KEY):
            raise NotFoundError(
                f"{store.url}: a sample dataset ({MANIFEST_KEY!r}), not a token dataset: "
                f"read it with dcstore.ShardedDataset"
            ) from exc
        raise NotFoundError(
            f"{store.url}: no token dataset here (missing {key!r}; pack one with "
            f"`dcstore pack --text`)"
        ) from exc
    where = f"{store.url}/{key}"
    source = ObjectSource(store, key, meta.size, meta.version, store.encryption_key_id is None)
    try:
        with source.open() as f:
            schema = pq.ParquetFile(f).schema_arrow
    except DcstoreError:
        raise  # named already (e.g. an encrypted manifest read without keys)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IntegrityError(f"{where}: not a readable token manifest ({exc!r:.200})") from None
    manifest = _from_meta(dict(schema.metadata or {}), where, source, None)
    if manifest.versions_of != store.url:  # a copy elsewhere: its objects have other versions
        shards = tuple(TokenShard(s.key, s.tokens, None, s.key_id) for s in manifest.shards)
        manifest = dataclasses.replace(manifest, shards=shards, versions_of="")
    return manifest


def kept_token_versions(store: Backend) -> list[str]:
    """The versions whose manifest ``store`` keeps archived, newest first (archives a pack
    wrote: :data:`TOKEN_PACK_OBJECTS`; another object there is not a version)."""
    keys = (m.key for m in store.list_objects(ARCHIVE_PREFIX))
    names = (k[len(ARCHIVE_PREFIX) :] for k in keys if TOKEN_PACK_OBJECTS.fullmatch(k))
    return sorted((n.removesuffix(".parquet") for n in names), reverse=True)


def pin_token_version(store: Backend, current: TokenManifest, version: str) -> TokenManifest:
    """Version ``version`` of the corpus in ``store``: ``current`` (read just now) when it is
    that version, else its archive (see :func:`dcstore.loaders.versions.pick_version`)."""
    return pick_version(
        current, version, lambda v: load_token_manifest(store, token_archive_key(v)),
        lambda: kept_token_versions(store), store.url,
    )  # fmt: skip


def list_token_versions(store: Backend) -> list[KeptVersion[TokenManifest]]:
    """The corpus's current version and the archived earlier ones, newest first."""
    current = load_token_manifest(store)
    kept = [KeptVersion(current.version, TOKENS_KEY, current, True)]
    for version in kept_token_versions(store):
        if version != current.version:
            key = token_archive_key(version)
            kept.append(KeptVersion(version, key, load_token_manifest(store, key), False))
    return kept


def repin_token_shards(store: Backend, versions: Mapping[str, str]) -> int:
    """Record ``versions`` (token shard key -> its new object version, after ``dcstore keys
    rotate`` rewrote the shards' headers) in the current token manifest and the archived
    ones that list them, each with one atomic put; return how many changed. A store
    without a token corpus changes nothing (see :func:`dcstore.loaders.versions.repin`)."""
    if not exists(store, TOKENS_KEY):
        return 0
    changed = 0
    for kept in list_token_versions(store):
        manifest = kept.manifest
        if manifest is None or not any(s.key in versions for s in manifest.shards):
            continue
        shards = tuple(
            dataclasses.replace(s, version=versions[s.key]) if s.key in versions else s
            for s in manifest.shards
        )
        store.put(kept.key, dataclasses.replace(manifest, shards=shards).to_parquet())
        changed += 1
    return changed


def collect_token_garbage(store: Backend, *, dry_run: bool = False) -> list[ObjectMeta]:
    """Delete (unless ``dry_run``) every token shard under ``tokens/`` that neither the
    current corpus nor an archived version references (a pack that failed or was
    interrupted); return those objects. Archived manifests are versions kept: not touched;
    nor is any object no pack wrote (:data:`TOKEN_PACK_OBJECTS`)."""
    manifests = [kept.manifest for kept in list_token_versions(store) if kept.manifest]
    referenced = {shard.key for manifest in manifests for shard in manifest.shards}
    return delete_unreferenced(store, (SHARDS_PREFIX,), TOKEN_PACK_OBJECTS, referenced, dry_run)
