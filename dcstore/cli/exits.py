"""Exit codes and the one line the CLI prints for each failure (table: ``docs/cli.md``)."""

from __future__ import annotations

import errno

from dcstore import errors

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_NOT_FOUND = 3
EXIT_ACCESS = 4
EXIT_UNAVAILABLE = 5
EXIT_INTEGRITY = 6
EXIT_NO_SPACE = 7
EXIT_INTERRUPTED = 130

_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.ConfigError, EXIT_CONFIG),
    (errors.NotFoundError, EXIT_NOT_FOUND),
    (errors.KeyAccessError, EXIT_ACCESS),
    (errors.BackendUnavailableError, EXIT_UNAVAILABLE),
    (errors.IntegrityError, EXIT_INTEGRITY),
    (errors.VersionChangedError, EXIT_INTEGRITY),  # the data is not what its manifest lists
    (errors.StorageFullError, EXIT_NO_SPACE),
    (FileNotFoundError, EXIT_NOT_FOUND),
    (PermissionError, EXIT_ACCESS),
)

MODULE_EXTRAS = {
    "hdrh": "bench",
    "matplotlib": "bench",
    "psutil": "bench",
    "torch": "torch",
    "torchdata": "torch",
    "redis": "redis",
    "hiredis": "redis",
    "hdfs_native": "hdfs",
    "cassandra": "cassandra",
    "pymongo": "mongodb",
    "gridfs": "mongodb",
    "PIL": "images",
}
"""Top-level modules of optional dependencies and the pip extra that installs them."""


def missing_extra(exc: ImportError) -> errors.ConfigError | None:
    """The ConfigError with the pip hint for an optional dependency that is not installed;
    ``None`` when ``exc`` is about something else (a bug, not a missing extra)."""
    top = (exc.name or "").partition(".")[0]
    extra = MODULE_EXTRAS.get(top)
    if extra is None:
        return None
    return errors.ConfigError(
        f"this command needs {top}, which is not installed: pip install 'dcstore[{extra}]'"
    )


def exit_code_for(exc: BaseException) -> int:
    """The exit code the CLI uses for an exception."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return EXIT_NO_SPACE
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILURE


def describe(exc: BaseException) -> str:
    """One line naming what went wrong."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"no space left on device{where}"
    if isinstance(exc, OSError) and not isinstance(exc, errors.DcstoreError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
