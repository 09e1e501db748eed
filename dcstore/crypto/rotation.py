"""Key rotation without re-encryption, key usage, and safe retirement.

Guarantees:

* :func:`rewrap` replaces only the header: the data key is rewrapped under
  the keyring's primary KEK and the segment bytes are written back
  byte-for-byte unchanged, through the inner backend's atomic ``put``.
* Objects are processed one by one; a failing object is reported and the
  rest continue. Run rotation when nothing overwrites the same objects
  (shards are write-once): an overwrite between the read and the write of
  one object is detected by its version only up to the final ``put``.
* :func:`key_usage` reads headers only (one small ranged read per object).
* They read the storage itself: a store with a cache tier is refused
  (:func:`storage_only`), since rotation writes back what it read and retirement
  trusts the key ids it read.
* :func:`retire_key` destroys a KEK only when it is not the primary, stopped
  being primary at least ``min_age`` seconds ago (recorded in the key file),
  and no object of the given stores — each scanned whole — needs it. Writers
  reload a changed key file before every wrap, so what remains is a ``put``
  that wrapped its data key before the key stopped being primary and lands
  more than ``min_age`` later, or a writer whose key source cannot report
  changes (``docs/format.md``, "Security considerations").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dcstore.backends.base import ObjectMeta
from dcstore.backends.keys import validate_key, validate_prefix
from dcstore.crypto.backend import EncryptedBackend
from dcstore.crypto.format import parse_header
from dcstore.crypto.keyring import Keyring
from dcstore.crypto.sources import FileKeySource
from dcstore.errors import ConfigError, DcstoreError, NotFoundError, StorageFullError


@dataclass(frozen=True)
class RewrapResult:
    """What happened to one object: ``rewrapped``, ``current`` (already primary) or ``failed``."""

    key: str
    status: str
    old_key_id: str | None = None
    new_key_id: str | None = None
    error: str | None = None
    version: str | None = None
    """The object's version after the rewrap (a rewrap is a write: the version changes)."""


@dataclass
class KeyUsage:
    """Objects (and their ciphertext bytes) whose data key is wrapped by each KEK."""

    objects: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """``(key, reason)`` of objects whose header could not be read."""

    def add(self, key_id: str, size: int) -> None:
        self.objects[key_id] = self.objects.get(key_id, 0) + 1
        self.bytes[key_id] = self.bytes.get(key_id, 0) + size


def storage_only(store: EncryptedBackend, what: str) -> None:
    """Raise :class:`ConfigError` if reads of ``store`` may come from a cache tier: a
    check of the storage must read the storage, and rotation writes back what it read
    (a damaged or forged cached copy would be written over the good object)."""
    if store.caches:
        raise ConfigError(
            f"{what} reads the storage itself: open {store.url} without a cache tier "
            "(a cache could hand it damaged or forged copies)"
        )


def rewrap(store: EncryptedBackend, key: str) -> RewrapResult:
    """Rewrap one object's data key under the primary KEK; payload bytes unchanged."""
    validate_key(key)
    storage_only(store, "key rotation")
    inner = store.inner
    keyring = store.current_keyring()
    before = inner.head(key)
    blob = inner.get(key)
    what = store._what(key)
    header = parse_header(blob, what)
    if header.key_id == keyring.primary:
        return RewrapResult(key, "current", header.key_id, header.key_id)
    fresh = keyring.rewrap(header, what)
    encoded = fresh.encode()
    payload = memoryview(blob)[header.size :]
    out = bytearray(len(encoded) + len(payload))
    out[: len(encoded)] = encoded
    out[len(encoded) :] = payload
    if inner.head(key).version != before.version:
        return RewrapResult(key, "failed", header.key_id, error="overwritten during rotation")
    written = inner.put(key, out)
    return RewrapResult(key, "rewrapped", header.key_id, fresh.key_id, version=written.version)


def rotate(store: EncryptedBackend, prefix: str = "") -> Iterator[RewrapResult]:
    """Rewrap every object under ``prefix`` not yet under the primary; yields one result
    each. A full store stops it (:class:`StorageFullError`: every later write would fail
    too); what was rewrapped until then stays rewrapped."""
    validate_prefix(prefix)
    storage_only(store, "key rotation")
    for meta in store.inner.list_objects(prefix):
        try:
            yield rewrap(store, meta.key)
        except NotFoundError:
            continue  # deleted meanwhile
        except StorageFullError:
            raise
        except DcstoreError as exc:
            yield RewrapResult(meta.key, "failed", error=str(exc))


def key_usage(store: EncryptedBackend, prefix: str = "") -> KeyUsage:
    """Which KEK each object under ``prefix`` depends on (headers only, read from the
    storage: a store with a cache tier is refused)."""
    validate_prefix(prefix)
    storage_only(store, "key usage")
    usage = KeyUsage()
    for meta in store.inner.list_objects(prefix):
        try:
            header = store._header(ObjectMeta(meta.key, meta.size, meta.version))
        except NotFoundError:
            continue
        except DcstoreError as exc:
            usage.unreadable.append((meta.key, str(exc)))
            continue
        usage.add(header.key_id, meta.size)
    return usage


def check_retirable(store: EncryptedBackend, key_id: str) -> int:
    """Raise :class:`ConfigError` unless no object in the whole store uses ``key_id``.

    Returns the number of objects checked. Objects with unreadable headers
    also block retirement: they might depend on the key.
    """
    if key_id == store.current_keyring().primary:
        raise ConfigError(f"key {key_id!r} is the primary key; add and rotate to a new one first")
    usage = key_usage(store)
    if usage.objects.get(key_id):
        raise ConfigError(
            f"key {key_id!r} still wraps {usage.objects[key_id]} object(s) in {store.url}; "
            "run 'dcstore keys rotate' first"
        )
    if usage.unreadable:
        key, reason = usage.unreadable[0]
        raise ConfigError(
            f"{len(usage.unreadable)} object(s) in {store.url} have unreadable headers "
            f"(first: {key!r}: {reason}); cannot prove the key is unused"
        )
    return sum(usage.objects.values())


def check_demoted_long_enough(keyring: Keyring, key_id: str, min_age: float) -> None:
    """Raise :class:`ConfigError` unless ``key_id`` stopped being primary ``min_age``
    seconds ago or earlier: a ``put`` that wrapped its data key just before
    ``keys new`` may still be uploading, invisible to a store scan."""
    if key_id == keyring.primary:
        raise ConfigError(f"key {key_id!r} is the primary key; add and rotate to a new one first")
    if min_age <= 0:
        return
    since = keyring.demoted_at(key_id)
    age = None if since is None else (datetime.now(timezone.utc) - since).total_seconds()
    if age is None or age < min_age:
        when = "at an unknown time" if age is None else f"{age:.0f} s ago"
        raise ConfigError(
            f"key {key_id!r} stopped being primary {when}; retire waits {min_age:.0f} s "
            "(--min-age) so that writes begun under it have landed"
        )


def retire_key(
    source: FileKeySource, stores: Sequence[EncryptedBackend], key_id: str, min_age: float
) -> int:
    """Destroy ``key_id`` in the key file once it has been non-primary for ``min_age``
    seconds and no object of any of ``stores`` (each scanned whole) uses it.

    The scan runs without the key file lock; the change itself is a locked
    read-modify-write that checks the key is still non-primary and old enough.
    Returns the number of objects checked.
    """
    keyring = source.load()
    if key_id not in keyring:
        raise ConfigError(f"key {key_id!r} is not an active key in {source.path}")
    check_demoted_long_enough(keyring, key_id, min_age)
    checked = sum(check_retirable(store, key_id) for store in stores)

    def retire(current: Keyring | None) -> Keyring:
        if current is None or key_id not in current:
            raise ConfigError(f"key {key_id!r} is no longer an active key in {source.path}")
        check_demoted_long_enough(current, key_id, min_age)
        return current.retire(key_id)

    source.update(retire)
    return checked
