"""The dcstore error tree.

Every error dcstore raises is a :class:`DcstoreError` and also the matching
builtin, so ``except FileNotFoundError`` keeps working for callers that do not
know dcstore. Messages name the URL and the key, never a secret.
"""

from __future__ import annotations


class DcstoreError(Exception):
    """Base class of every dcstore error.

    ``url`` (the store's URL, never a secret) and ``key`` (the object) say where it
    happened when known, None otherwise; both survive pickling. The server backends set
    them through :func:`dcstore.backends.error_map.mapped_errors`; the loader fills them
    in (and names the shard in the message) on errors raised below it without them. The
    local and memory stores name the URL and key in the message only.
    """

    url: str | None = None
    key: str | None = None

    def __init__(self, *args: object, url: str | None = None, key: str | None = None) -> None:
        super().__init__(*args)
        if url is not None:
            self.url = url
        if key is not None:
            self.key = key


class NotFoundError(DcstoreError, FileNotFoundError):
    """The object (or bucket, keyspace, file) does not exist."""


class ConfigError(DcstoreError, ValueError):
    """A bad URL or option, an unknown scheme, or a missing optional dependency."""


class InvalidKeyError(ConfigError):
    """An object key breaks the key rules (traversal, absolute, NUL, empty segment...)."""


class InvalidRangeError(DcstoreError, ValueError):
    """A byte range that lies outside the object or is reversed."""


class BackendUnavailableError(DcstoreError, ConnectionError):
    """A transient failure reaching the storage: the only class that is retried."""


class VersionChangedError(DcstoreError):
    """The object is no longer the version the read asked for (``version=``):
    it was replaced or rewritten. Never retried: the caller decides."""


class StorageFullError(DcstoreError, OSError):
    """The storage has no room for the write; the previous object is kept."""


class IntegrityError(DcstoreError):
    """Authentication tag, checksum or length mismatch: the data is not trusted.

    Never retried, never partially decoded.
    """


class NotEncryptedError(IntegrityError):
    """An object read through keys does not start like an encrypted one: written
    without keys (plaintext), or its header is destroyed."""


class ShardChangedError(IntegrityError, VersionChangedError):
    """A dataset's shard is not the one its manifest lists: truncated, rewritten or
    replaced after the pack (also a :class:`VersionChangedError`, what the store said)."""


class KeyAccessError(DcstoreError, PermissionError):
    """A wrong, missing or retired key, or permission denied by the storage."""


__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "DcstoreError",
    "IntegrityError",
    "InvalidKeyError",
    "InvalidRangeError",
    "KeyAccessError",
    "NotEncryptedError",
    "NotFoundError",
    "StorageFullError",
    "VersionChangedError",
]


def driver_detail(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of a driver exception on one line, cut at ``limit`` characters.

    For error messages that wrap a driver's exception; drivers never put
    credentials in these messages, and callers never pass exceptions that do.
    """
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}"
