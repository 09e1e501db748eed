"""Dataset versions in a store: commit keeping the last N, and garbage collection.

Layout: the current manifest at ``manifest.parquet`` (or the writer's
``manifest_key``), the shards of version ``V`` under ``shards/V/``, and each
earlier version that is still kept as an immutable copy of its manifest at
``versions/V.parquet`` (open it with ``manifest_key="versions/V.parquet"``).
The current manifest lists the kept earlier versions, newest first.

Guarantees:

* :func:`commit_version` publishes the new manifest with one atomic put, after
  archiving the one it replaces; only then does it delete the versions that
  fall out of the last ``keep``, so a failed commit removes nothing and readers
  of the version just replaced keep working (``keep >= 2``).
* :func:`refuse_unreadable_manifest` (called before a pack writes its first shard)
  refuses a manifest the commit could not read: another table, or a damaged one.
* :func:`repin` records new shard versions (after ``dcstore keys rotate``
  rewrote the shards' headers) in every manifest of the store that lists them,
  each with one atomic put.
* :func:`pin_version` opens a version while it is kept: the current manifest when it
  is that version, else its archive, else a :class:`NotFoundError` naming what is kept.
* :func:`collect_garbage` deletes only shards and archived manifests that a pack
  wrote (``shards/<version>/NNNNNN.tar``, ``versions/<version>.parquet``, with the
  version names a pack gives: :data:`PACK_OBJECTS`) and no kept manifest
  references; the manifest itself and any other object (a user's
  ``shards/a.tar``) are never touched. A pack in progress into the same store has
  not yet committed its shards, so do not collect garbage concurrently with one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.crypto.backend import EncryptedBackend
from dcstore.crypto.format import MAX_HEADER_SIZE, refuse_ciphertext
from dcstore.errors import (
    ConfigError,
    IntegrityError,
    KeyAccessError,
    NotEncryptedError,
    NotFoundError,
)
from dcstore.loaders.agreement import M
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest, load_manifest
from dcstore.loaders.shardindex import BytesSource, NotAManifestError
from dcstore.ops import exists
from dcstore.store import CacheSpec, KeySpec, store_for
from dcstore.units import whole_number

DEFAULT_KEEP = 2
"""Versions a store keeps by default: the current one and the one it replaced."""

SHARDS_PREFIX = "shards/"
ARCHIVE_PREFIX = "versions/"


PACK_VERSION = r"\d{8}T\d{6}Z-[0-9a-f]{8}"
"""The pattern of the version names a pack gives (:func:`dcstore.loaders.writer.new_version`)."""


def written_by_pack(shards_prefix: str, extension: str, archive_prefix: str) -> re.Pattern[str]:
    """The keys a pack writes (match with ``fullmatch``): its shards
    ``<shards_prefix><version>/NNNNNN<extension>`` and archived manifests
    ``<archive_prefix><version>.parquet``, ``version`` a name :data:`PACK_VERSION` matches."""
    shards, archives = re.escape(shards_prefix), re.escape(archive_prefix)
    return re.compile(
        rf"{shards}{PACK_VERSION}/\d{{6,}}{re.escape(extension)}|{archives}{PACK_VERSION}\.parquet"
    )


def shard_key(version: str, index: int) -> str:
    """The object key of shard ``index`` of ``version``."""
    return f"{SHARDS_PREFIX}{version}/{index:06d}.tar"


def archive_key(version: str) -> str:
    """The object key of the kept copy of ``version``'s manifest."""
    return f"{ARCHIVE_PREFIX}{version}.parquet"


PACK_OBJECTS = written_by_pack(SHARDS_PREFIX, ".tar", ARCHIVE_PREFIX)
"""The keys a pack of a sample dataset writes besides its manifest: the only ones gc removes."""

_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def pick_version(
    current: M, version: str, open_archive: Callable[[str], M], kept: Callable[[], Iterable[str]],
    where: str,
) -> M:  # fmt: skip
    """Version ``version`` of a dataset: ``current`` (its manifest read just now) when it
    is that version, else ``open_archive(version)``; an archive that is gone raises
    :class:`NotFoundError` naming ``kept()``. A ``version`` that is not a version name is
    a :class:`ConfigError`."""
    if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version):
        raise ConfigError(f"not a dataset version name: {version!r:.80}")
    if current.version == version:
        return current
    try:
        return open_archive(version)
    except NotFoundError:
        names = ", ".join(kept()) or "no earlier version"
        raise NotFoundError(
            f"{where}: no dataset version {version!r} here (never packed, or dropped: the "
            f"store keeps the last few; current: {current.version}; kept: {names})"
        ) from None


def pin_version(store: Backend, current: Manifest, version: str) -> Manifest:
    """:func:`pick_version` of a sample dataset: its archives are ``versions/V.parquet``."""
    return pick_version(
        current, version, lambda v: load_manifest(store, archive_key(v)),
        lambda: current.previous, store.url,
    )  # fmt: skip


def open_dataset(
    url_or_store: str | Backend, *, cache: CacheSpec | None = None, keys: KeySpec | None = None,
    manifest_key: str = MANIFEST_KEY, version: str | None = None,
) -> tuple[Backend, Manifest]:  # fmt: skip
    """The store at ``url_or_store`` (a :class:`Backend` is used as is unless ``cache`` or
    ``keys`` ask for a stack: see :func:`dcstore.store.open_store`) and its manifest: the
    current one, or ``version`` (see :func:`pin_version`)."""
    store = store_for(url_or_store, cache=cache, keys=keys)
    current = load_manifest(store, manifest_key)
    return store, current if version is None else pin_version(store, current, version)


def for_shard_reads(store: Backend, url_or_store: object) -> Backend:
    """The store a dataset reads its shards through: for an encrypted stack the dataset
    opened itself (not ``url_or_store``, a caller's), a copy that takes headers from its
    cache tiers (:meth:`EncryptedBackend.trusting_cached_headers`); the manifest's reads
    (its lazy parts, a spawned worker's copy) keep the checked one. Shards are written
    once, under names no other object takes, and a key rotation rewraps the same data
    key, so no older copy of a shard decrypts to other bytes; the check would cost a
    read from the storage per shard and process (a whole 4 MiB chunk on MongoDB)."""
    if store is not url_or_store and isinstance(store, EncryptedBackend) and store.caches:
        return store.trusting_cached_headers()
    return store


def check_keep(keep: int) -> None:
    """Refuse a ``keep`` that would not keep the version being committed."""
    if whole_number("keep", keep) < 1:
        raise ConfigError(f"keep must be at least 1 (the current version), got {keep}")


def refuse_other_keys(store: Backend, key: str = MANIFEST_KEY) -> None:
    """Before a pack writes a shard: refuse to add a version to the dataset whose manifest
    is ``key`` if ``store`` cannot read it, so the mistake costs nothing instead of failing
    at the commit with every shard written. An encrypted dataset packed without keys, or
    with keys that lack its key, is a :class:`KeyAccessError`; a plaintext one packed with
    keys a :class:`ConfigError` (its kept versions would stay plaintext beside the
    encrypted one). No dataset, or a damaged manifest the commit will replace or name,
    passes. Reads the manifest's header, and with keys its first segment."""
    where = f"{store.url}: the dataset there ({key})"
    encrypts = store.encryption_key_id is not None
    try:
        size = store.head(key).size  # with keys: checks the header an encrypted object has
        if encrypts:
            store.get_range(key, 0, min(size, 1))  # unwraps its data key
        else:
            refuse_ciphertext(store.get_range(key, 0, min(size, MAX_HEADER_SIZE)), where, "")
    except NotFoundError:
        return
    except KeyAccessError as exc:
        why = f"cannot be read with these keys ({exc})" if encrypts else (
            "is encrypted: pack with its keys (keys=..., CLI: --keys URL)"
        )  # fmt: skip
        raise KeyAccessError(f"{where} {why}; nothing was written") from None
    except NotEncryptedError:
        raise ConfigError(
            f"{where} is not encrypted: pack without keys, or the encrypted dataset into "
            "another place; nothing was written"
        ) from None
    except IntegrityError:
        return  # damaged: the commit replaces it (token datasets) or names it


def refuse_unreadable_manifest(store: Backend, key: str = MANIFEST_KEY) -> None:
    """Before a pack writes a shard: refuse a dataset manifest at ``key`` that the commit
    could not read (it archives the manifest it replaces), so the mistake costs nothing
    instead of failing the commit with every shard written. Another Parquet table there
    is a :class:`ConfigError` (pack into another place); a damaged manifest an
    :class:`IntegrityError`. No object at ``key`` passes."""
    try:
        load_manifest(store, key)
    except NotFoundError:
        return
    except NotAManifestError:
        raise ConfigError(
            f"{store.url}/{key} is not a dcstore dataset manifest but another table: pack "
            "into another place, or move it away; nothing was written"
        ) from None
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}; nothing was written") from None


def _read_current(store: Backend, key: str) -> tuple[Manifest, bytes] | None:
    try:
        data = store.get(key)
    except NotFoundError:
        return None
    return Manifest.open(BytesSource(data), f"{store.url}/{key}"), data  # shards read on use


def remove_version(store: Backend, version: str) -> int:
    """Delete ``version``'s shards and archived manifest; return the shards removed."""
    doomed = [meta.key for meta in store.list_objects(f"{SHARDS_PREFIX}{version}/")]
    for key in doomed:
        store.delete(key)
    store.delete(archive_key(version))  # a missing object is not an error
    return len(doomed)


def commit_version(
    store: Backend, manifest: Manifest, key: str = MANIFEST_KEY, keep: int = DEFAULT_KEEP
) -> tuple[Manifest, tuple[str, ...]]:
    """Make ``manifest`` current, keeping the last ``keep`` versions in all.

    Returns the committed manifest (with its ``previous`` list) and the
    versions that were removed.
    """
    check_keep(keep)
    current = _read_current(store, key)
    history: list[str] = []
    if current is not None and current[0].version != manifest.version:
        old, data = current
        history = [old.version, *old.previous]
        if keep > 1:
            store.put(archive_key(old.version), data)
    kept, dropped = tuple(history[: keep - 1]), tuple(history[keep - 1 :])
    committed = dataclasses.replace(manifest, previous=kept)
    committed.commit(store, key)
    for version in dropped:
        remove_version(store, version)
    return committed, dropped


@dataclasses.dataclass(frozen=True)
class KeptVersion(Generic[M]):
    """One version a dataset keeps: the current one, or an earlier one and its archive."""

    version: str
    key: str
    """The manifest's object key (the current manifest's, or the archive's)."""
    manifest: M | None
    """None when the archive of a kept version is missing (removed by hand)."""
    current: bool


def list_versions(store: Backend, key: str = MANIFEST_KEY) -> list[KeptVersion[Manifest]]:
    """The current version and the earlier ones it keeps, newest first."""
    current = load_manifest(store, key)
    kept = [KeptVersion(current.version, key, current, True)]
    for version in current.previous:
        found = _read_current(store, archive_key(version))
        manifest = None if found is None else found[0]
        kept.append(KeptVersion(version, archive_key(version), manifest, False))
    return kept


def kept_manifests(store: Backend, key: str = MANIFEST_KEY) -> list[Manifest]:
    """The current manifest and the archived ones it keeps (missing archives skipped)."""
    return [v.manifest for v in list_versions(store, key) if v.manifest is not None]


def repin(store: Backend, versions: Mapping[str, str], key: str = MANIFEST_KEY) -> int:
    """Record ``versions`` (shard key -> its new object version) in the current manifest
    and the archived ones it keeps; return how many manifests changed. A store with no
    dataset changes nothing."""
    try:
        kept = list_versions(store, key)
    except NotFoundError:
        return 0
    targets = [(v.key, v.manifest) for v in kept if v.manifest is not None]
    changed = 0
    for manifest_key, manifest in targets:
        if not any(k in versions for k in manifest.table.keys):
            continue
        shards = tuple(
            dataclasses.replace(s, version=versions[s.key]) if s.key in versions else s
            for s in manifest.shards
        )
        dataclasses.replace(manifest, shards=shards).commit(store, manifest_key)
        changed += 1
    return changed


def collect_garbage(
    store: Backend, key: str = MANIFEST_KEY, *, dry_run: bool = False
) -> list[ObjectMeta]:
    """Delete (unless ``dry_run``) every shard and archived manifest a pack wrote
    (:data:`PACK_OBJECTS`) that the current manifest and the versions it keeps do not
    reference; return those objects. Any other object is never touched."""
    manifests = kept_manifests(store, key)
    referenced = {k for m in manifests for k in m.table.keys}
    referenced |= {archive_key(v) for v in manifests[0].previous}
    return delete_unreferenced(
        store, (SHARDS_PREFIX, ARCHIVE_PREFIX), PACK_OBJECTS, referenced, dry_run
    )


def listed_for_cleanup(store: Backend, prefix: str) -> list[ObjectMeta]:
    """The objects under ``prefix``, to delete by key. Through keys, an object they cannot
    decode (plaintext left by a mistaken pack, or damaged) is listed with its stored size
    instead of ending the listing, so it cannot block a clean-up that would drop it."""
    if not isinstance(store, EncryptedBackend):
        return list(store.list_objects(prefix))
    undecodable: list[IntegrityError] = []
    listed = list(store.list_objects(prefix, on_damaged=undecodable.append))
    for exc in undecodable:
        with contextlib.suppress(NotFoundError):  # deleted meanwhile
            listed.append(store.inner.head(str(exc.key)))
    return sorted(listed, key=lambda meta: meta.key)


def delete_unreferenced(
    store: Backend, prefixes: Sequence[str], written: re.Pattern[str], referenced: set[str],
    dry_run: bool,
) -> list[ObjectMeta]:  # fmt: skip
    """Delete (unless ``dry_run``) the objects under ``prefixes`` that a pack wrote (their
    keys match ``written``, see :func:`written_by_pack`) and that are not in
    ``referenced``; return them. Objects no pack wrote are never touched."""
    garbage = [
        meta
        for prefix in prefixes
        for meta in listed_for_cleanup(store, prefix)
        if written.fullmatch(meta.key) and meta.key not in referenced
    ]
    if not dry_run:
        for meta in garbage:
            store.delete(meta.key)
    return garbage


def first_foreign_key(store: Backend, manifest_key: str, written: re.Pattern[str]) -> str | None:
    """In a store without a manifest at ``manifest_key`` (no dataset yet): the first key,
    in key order, that no pack wrote (``written`` does not match it), else None. Reads
    keys only (through keys, nothing is decrypted) and stops at the first such key."""
    if has_manifest(store, manifest_key):
        return None
    keys = (meta.key for meta in _stored(store).list_objects())
    return next((key for key in keys if not written.fullmatch(key)), None)


def has_manifest(store: Backend, key: str = MANIFEST_KEY) -> bool:
    """Whether an object is at ``key`` (read or not: through keys, nothing is decrypted)."""
    return exists(_stored(store), key)


def has_objects(store: Backend, prefix: str) -> bool:
    """Whether any object's key starts with ``prefix`` (listed as stored: nothing is
    decrypted)."""
    return next(iter(_stored(store).list_objects(prefix)), None) is not None


def _stored(store: Backend) -> Backend:
    """``store`` below its encryption, if any: keys and sizes as stored."""
    return store.inner if isinstance(store, EncryptedBackend) else store
