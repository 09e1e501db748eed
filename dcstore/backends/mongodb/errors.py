"""The one place where pymongo's exceptions become dcstore errors.

* Server selection timeouts, lost connections, network timeouts, primary
  step-downs, shutdowns, write-concern timeouts and FerretDB's SQLite lock
  contention (``SQLITE_BUSY``): :class:`BackendUnavailableError`
  (retried by :class:`dcstore.retry.RetryingBackend`).
* Authentication and authorization failures: :class:`KeyAccessError`.
* A full disk: :class:`StorageFullError`.
* Bad URIs and driver configuration: :class:`ConfigError`.
* Anything else from the driver: :class:`DcstoreError`.

Messages name the URL (never a password) and the key.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from pymongo import errors as pe

from dcstore.backends.error_map import mapped_errors
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    KeyAccessError,
    StorageFullError,
    driver_detail,
)

# Server error codes that mean "try again later" (MongoDB's retryable-reads/writes specs).
TRANSIENT_CODES = frozenset(
    {6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 64}
)
AUTH_CODES = frozenset({13, 18, 8000})  # Unauthorized, AuthenticationFailed, Atlas auth
DISK_FULL_CODES = frozenset({14031})  # OutOfDiskSpace
# FerretDB v1 (SQLite) reports write contention as InternalError "database is locked".
BUSY_MARKERS = ("SQLITE_BUSY", "database is locked")


def classify(exc: Exception) -> tuple[type[DcstoreError], str] | None:
    """The dcstore error class and detail for a pymongo exception (else None)."""
    if isinstance(exc, (pe.ConnectionFailure, pe.ExecutionTimeout, pe.WTimeoutError)):
        # ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError and
        # ServerSelectionTimeoutError.
        return BackendUnavailableError, f"MongoDB unavailable ({driver_detail(exc)})"
    if isinstance(exc, pe.OperationFailure):
        code = exc.code or 0
        if (
            code in TRANSIENT_CODES
            or exc.has_error_label("RetryableWriteError")
            or any(marker in str(exc) for marker in BUSY_MARKERS)
        ):
            return BackendUnavailableError, f"MongoDB unavailable ({driver_detail(exc)})"
        if code in AUTH_CODES:
            return KeyAccessError, f"access denied ({driver_detail(exc)})"
        if code in DISK_FULL_CODES:
            return StorageFullError, f"server out of disk space ({driver_detail(exc)})"
        return DcstoreError, f"MongoDB error ({driver_detail(exc)})"
    if isinstance(exc, (pe.ConfigurationError, pe.InvalidURI, pe.InvalidName)):
        return ConfigError, f"bad MongoDB configuration ({driver_detail(exc)})"
    if isinstance(exc, pe.DocumentTooLarge):
        return ConfigError, f"document too large; lower chunk_size ({driver_detail(exc)})"
    if isinstance(exc, pe.PyMongoError):
        return DcstoreError, f"MongoDB error ({driver_detail(exc)})"
    return None


def map_errors(url: str, op: str, key: str = "") -> AbstractContextManager[None]:
    """Translate pymongo exceptions raised inside the block (``raise ... from exc``)."""
    return mapped_errors(url, op, key, classify)
