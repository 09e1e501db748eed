"""Local files written whole or not at all: ``dcstore get -o FILE`` and ``dcstore://``'s
``get_file`` (a failed read leaves a file that was there as it was)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterable
from typing import BinaryIO

from dcstore.backends.base import Buffer
from dcstore.errors import DcstoreError


def write_all(out: BinaryIO, data: Buffer) -> None:
    """All of ``data`` to ``out``: a buffered write may take only part of it and say so
    (a nearly full disk takes what fits), and the rest is written again, so a full disk
    raises (ENOSPC) instead of leaving a short file."""
    view = memoryview(data).cast("B")
    while view:
        view = view[out.write(view) :]


def write_file_atomically(path: str, chunks: Iterable[Buffer]) -> None:
    """``chunks`` to ``path`` through a temporary file renamed into place when complete.
    A file that was there keeps its mode (and its owner, where the caller may set it:
    root), a new one gets 0644 less the umask (as the local store writes objects); being
    a new file, it is no longer a hard link of the old one's other names. While it is written the
    temporary file is its owner's only (0600): it may be decrypted data, and a process
    killed with SIGKILL leaves it behind. Through a symbolic link the file it names is
    replaced (the link stays, as ``cp`` writes through it); a path that is not a regular
    file (a FIFO, a device such as ``/dev/null``) is written as it is, never replaced."""
    try:
        there: os.stat_result | None = os.stat(path)  # through links: /dev/stdout to a pipe
    except FileNotFoundError:
        there = None
    if there is not None and not stat.S_ISREG(there.st_mode) and not stat.S_ISDIR(there.st_mode):
        _write_in_place(path, chunks)  # its errors are the read's: raised as they are
        return
    shown, path = path, os.path.realpath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):  # name the user's output, not the temporary file
        raise FileNotFoundError(errno.ENOENT, "the output's directory does not exist", shown)
    kept = stat.S_IMODE(there.st_mode) if there is not None else None
    tmp = os.path.join(directory, f".dcstore-get-{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        exc.filename = shown  # the user's output, not the temporary file
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            final = kept if kept is not None else stat.S_IMODE(os.fstat(fd).st_mode)
            os.fchmod(fd, 0o600)
            for chunk in chunks:
                write_all(f, chunk)
            f.flush()
            os.fsync(f.fileno())
            if there is not None and (there.st_uid, there.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):  # root keeps the owner; others cannot
                    os.fchown(fd, there.st_uid, there.st_gid)  # before the mode: chown
            os.fchmod(fd, final)  # clears setuid/setgid bits
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, DcstoreError):
            exc.filename = shown  # a write's error names no file; a rename's the temporary
        raise


def _write_in_place(path: str, chunks: Iterable[Buffer]) -> None:
    """``chunks`` written to ``path``, a FIFO or a device, opened as it is."""
    with open(path, "wb") as f:
        for chunk in chunks:
            write_all(f, chunk)
