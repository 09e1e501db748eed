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

from collections.abc import Iterator
from contextlib import contextmanager

from pymongo import errors as pe

from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    KeyAccessError,
    StorageFullError,
)

# Server error codes that mean "try again later" (MongoDB's retryable-reads/writes specs).
TRANSIENT_CODES = frozenset(
    {6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 64}
)
AUTH_CODES = frozenset({13, 18, 8000})  # Unauthorized, AuthenticationFailed, Atlas auth
DISK_FULL_CODES = frozenset({14031})  # OutOfDiskSpace
# FerretDB v1 (SQLite) reports write contention as InternalError "database is locked".
BUSY_MARKERS = ("SQLITE_BUSY", "database is locked")
MAX_DETAIL = 300


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > MAX_DETAIL:
        text = text[:MAX_DETAIL] + "..."
    return f"{type(exc).__name__}: {text}"


@contextmanager
def map_errors(url: str, op: str, key: str = "") -> Iterator[None]:
    """Translate pymongo exceptions raised inside the block (``raise ... from exc``)."""
    where = f"{url}: {op}" + (f" {key!r}" if key else "")
    try:
        yield
    except DcstoreError:
        raise
    except (pe.ConnectionFailure, pe.ExecutionTimeout, pe.WTimeoutError) as exc:
        # ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError and
        # ServerSelectionTimeoutError.
        raise BackendUnavailableError(f"{where}: MongoDB unavailable ({_detail(exc)})") from exc
    except pe.OperationFailure as exc:
        code = exc.code or 0
        if (
            code in TRANSIENT_CODES
            or exc.has_error_label("RetryableWriteError")
            or any(marker in str(exc) for marker in BUSY_MARKERS)
        ):
            raise BackendUnavailableError(f"{where}: MongoDB unavailable ({_detail(exc)})") from exc
        if code in AUTH_CODES:
            raise KeyAccessError(f"{where}: access denied ({_detail(exc)})") from exc
        if code in DISK_FULL_CODES:
            raise StorageFullError(f"{where}: server out of disk space ({_detail(exc)})") from exc
        raise DcstoreError(f"{where}: MongoDB error ({_detail(exc)})") from exc
    except (pe.ConfigurationError, pe.InvalidURI, pe.InvalidName) as exc:
        raise ConfigError(f"{where}: bad MongoDB configuration ({_detail(exc)})") from exc
    except pe.DocumentTooLarge as exc:
        raise ConfigError(
            f"{where}: document too large; lower chunk_size ({_detail(exc)})"
        ) from exc
    except pe.PyMongoError as exc:
        raise DcstoreError(f"{where}: MongoDB error ({_detail(exc)})") from exc
