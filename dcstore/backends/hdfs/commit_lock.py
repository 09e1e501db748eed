"""One commit at a time per key, so that no two files of a key share a version token.

A version on HDFS is ``<mtime>-<size>``, and ``put`` gives a new file the modification
time ``max(now, previous + 1 ms)``. Two writers committing one key at once could both
read the same previous file and pick the same time; with the same size, the two files
then had one token, and a reader or a cache tier holding the first file's bytes under
that token served them for the second (found with two racing writers and Redis).

The lock is an empty file ``.dcstore-lock-<name>`` beside the object, made with an
exclusive create (the NameNode refuses a second one atomically; an empty file needs no
block, so it costs no DataNode round trip). Its holder reads the current file's time,
sets its own strictly above it, renames and deletes the lock, so the times of one key's
files only grow while writers use the lock.

A lock whose holder died is broken once it is :data:`STALE_AFTER_S` old (by the
NameNode's clock, read from the file being committed): renamed aside first, and deleted
only if what was renamed is the lock judged stale (else put back), so a breaker never
removes a live holder's lock. A holder that finds half of that time gone before its
rename gives up without renaming (its lock may have been broken), and then leaves the
lock alone (it may be another writer's by now); sooner, nobody may break it, so the
holder deletes it. What remains: a live lock renamed aside by a breaker, and another writer taking
the free name before it is put back, both within milliseconds after a writer died.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import hdfs_native

from dcstore.backends.keys import RESERVED_PREFIX
from dcstore.errors import BackendUnavailableError

STALE_AFTER_S = 30.0
"""Age at which a lock is taken for one its holder left behind (a commit takes a few
NameNode round trips; a writer killed inside one blocks the key's writers this long)."""
LOCK_MARKER = f"/{RESERVED_PREFIX}-lock-"


def lock_path(path: str) -> str:
    """The lock file of the object at ``path``: beside it, hidden from listings."""
    directory, _, name = path.rpartition("/")
    return f"{directory}{LOCK_MARKER}{name}"


class CommitLock:
    """The commit lock of the object at ``path``, held for a ``with`` body.

    ``clock_file`` is a file of this commit whose modification time the NameNode set
    moments ago (the temporary file): lock ages are measured on the NameNode's clock
    from it, so a client's clock skew cannot break a live lock."""

    def __init__(self, fs: Any, path: str, clock_file: str) -> None:
        self._fs, self._path, self._clock_file = fs, path, clock_file
        self._lock = lock_path(path)
        self._taken = 0.0

    def __enter__(self) -> CommitLock:
        options = hdfs_native.WriteOptions(overwrite=False, create_parent=True)
        reference_ms = self._fs.get_file_info(self._clock_file).modification_time
        reference_at = time.monotonic()
        delay = 0.001
        while True:
            try:
                self._fs.create(self._lock, options).close()
                self._taken = time.monotonic()
                return self
            except FileExistsError:
                pass
            try:
                taken_ms = self._fs.get_file_info(self._lock).modification_time
            except FileNotFoundError:
                continue  # released meanwhile
            now_ms = reference_ms + (time.monotonic() - reference_at) * 1000
            if taken_ms < now_ms - STALE_AFTER_S * 1000:
                self._break(taken_ms)
                continue
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _break(self, stale_ms: int) -> None:
        """Remove the lock judged stale (modified at ``stale_ms``): renamed aside, then
        deleted if it is that lock, else (a live holder's, taken meanwhile) put back."""
        aside = f"{self._lock}-broken-{uuid.uuid4().hex}"
        try:
            self._fs.rename(self._lock, aside, False)
        except (FileNotFoundError, FileExistsError):
            return  # broken or released by someone else meanwhile
        if self._fs.get_file_info(aside).modification_time == stale_ms:
            self._fs.delete(aside, False)
            return
        with contextlib.suppress(FileExistsError):  # the rare case the module describes
            self._fs.rename(aside, self._lock, False)
            return
        self._fs.delete(aside, False)

    def check_held(self) -> None:
        """Raise :class:`BackendUnavailableError` unless the lock was taken less than
        half of :data:`STALE_AFTER_S` ago: past that, another writer may have broken
        it, so the caller must not rename."""
        if self._stalled():
            raise BackendUnavailableError(
                f"the commit of {self._path} stalled inside its lock; not committed "
                "(write it again)"
            )

    def _stalled(self) -> bool:
        return time.monotonic() - self._taken > STALE_AFTER_S / 2

    def __exit__(self, *exc_info: object) -> None:
        """Delete the lock, unless this holder stalled (then it may be another writer's
        by now: it is left to be released or broken)."""
        if self._stalled():
            return
        with contextlib.suppress(OSError, RuntimeError):  # else it goes stale, then broken
            self._fs.delete(self._lock, False)
