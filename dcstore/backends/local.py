"""``file://`` and plain paths: objects as files under a root directory.

Guarantees beyond the Backend contract:

* ``put`` writes a temporary file in the target's directory, fsyncs it,
  renames it over the target and fsyncs the directory: readers in any thread
  or process see the old or the new file, and a crash leaves the old one.
  Temporary files use the reserved ``.dcstore`` prefix, so ``list_objects`` never
  shows them.
* Keys cannot escape the root (see :mod:`dcstore.backends.keys`), and neither do
  symbolic links: a key whose path passes through a linked directory below the root
  is refused (``InvalidKeyError``) by every call, a key that is itself a link is not
  an object (reads find none: ``NotFoundError``; a write or delete replaces or removes
  the link, never what it points to), and ``list_objects`` neither shows nor enters
  links. Checked
  before each call opens the file (a link swapped in during the call is not caught);
  the root itself may be a link.
* ``open_write`` writes into the temporary file as data comes (``put`` and
  ``put_stream`` go through it); abandoned temporary files (a killed writer) are
  removed by ``sweep``.
* ``open_read`` reads the file it opened: an overwrite during the read leaves
  the reader on the old version, whole.
* ``get_range`` uses ``pread``: only the requested bytes are read.
* ``map_range`` maps the requested pages of the file (``MAP_POPULATE``: one
  system call maps page-cache pages, no copy). A mapping sees the file it
  opened: an overwrite (a rename) leaves it on the old file. A file truncated
  *in place* while a view of it is read makes the process fail with SIGBUS, as
  any memory-mapped reader (numpy's memmap, LitData) does; dcstore itself never
  truncates a file in place. ``map_object`` maps the whole file the same way but
  without ``MAP_POPULATE`` (pages fault in as read): one mapping serves many ranges.
* The version token combines inode, mtime (ns) and size; a rename-based
  overwrite always creates a new inode, and ``put`` gives it an mtime later than the
  file it replaces (1 ns later if the clock's granularity says otherwise), so
  sequential overwrites never repeat a token even if an inode is reused.
  ``modified`` is that mtime. A read with ``version=`` checks it on
  the descriptor it reads from (``fstat``): no extra lookup, no race.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range, check_version
from dcstore.backends.keys import RESERVED_PREFIX, validate_key, validate_prefix
from dcstore.backends.objectio import ObjectReader, ObjectWriter
from dcstore.backends.options import Options, ParsedUrl
from dcstore.errors import (
    ConfigError,
    DcstoreError,
    InvalidKeyError,
    KeyAccessError,
    NotFoundError,
    StorageFullError,
    VersionChangedError,
)

TEMP_PREFIX = f"{RESERVED_PREFIX}-tmp-"
log = logging.getLogger(__name__)
MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # Linux: map every page at once
ABANDON_AFTER_S = 24 * 3600.0
"""``sweep()`` removes temporary files untouched for this long (a writer still writing
touches its file with every write)."""


class LocalBackend(Backend):
    """Objects stored as files below ``root`` (created on first put)."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True):
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.fsync = fsync
        self._root_str = str(self.root)

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> LocalBackend:
        if url.netloc not in ("", "localhost"):
            raise ConfigError(
                f"file:// URLs name a local path (file:///abs/path), got host {url.netloc!r}"
            )
        if not url.path:
            raise ConfigError("file:// URL has no path")
        return cls(url.path, fsync=options.flag("fsync", True))

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    # -- helpers -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The key's file; refused if a directory on the way there is a symbolic link
        (the final name is opened with ``O_NOFOLLOW`` or checked with ``lstat``)."""
        parts = validate_key(key).split("/")
        self._check_no_link(parts[:-1], key)
        return self.root.joinpath(*parts)

    def _check_no_link(self, dir_parts: list[str], key: str) -> None:
        """One ``lstat`` per directory below the root (the root itself may be a link)."""
        path = self._root_str
        for part in dir_parts:
            path = f"{path}/{part}"
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                return  # missing (or not a directory): the call itself says so
            if stat.S_ISLNK(mode):
                raise InvalidKeyError(
                    f"{self.url}: {key!r} passes through a symbolic link below the store's "
                    "root (links are not followed)"
                )

    def _error(self, exc: OSError, key: str, action: str) -> DcstoreError:
        where = f"{self.url}: cannot {action} {key!r}"
        if stat.S_ISREG(_mode(self.root)):
            return ConfigError(f"{self.url}: the store's root {str(self.root)!r} is a file")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            missing = "no such object" if self.root.is_dir() else "no such store directory"
            return NotFoundError(f"{where}: {missing}")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return KeyAccessError(f"{where}: permission denied")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFullError(f"{where}: no space left on device")
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link: not an object, as ls says
            return NotFoundError(f"{where}: it is a symbolic link, not an object")
        if exc.errno == errno.ENAMETOOLONG:
            return InvalidKeyError(
                f"{where}: a segment of the key is too long for a file name here "
                "(most filesystems take 255 bytes)"
            )
        if exc.errno in (errno.EISDIR, errno.EEXIST):
            return InvalidKeyError(f"{where}: {exc.strerror} (conflicts with another key)")
        return DcstoreError(f"{where}: {exc.strerror or exc}")

    def _not_a_file(self, key: str, st: os.stat_result) -> NotFoundError:
        what = "a prefix" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        return NotFoundError(f"{self.url}: no object {key!r} (it is {what})")

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str, *, version: str | None = None) -> bytes:
        fd, _ = self._open_object(key, version)
        try:
            with open(fd, "rb", buffering=0) as f:
                return f.read()
        except OSError as exc:
            raise self._error(exc, key, "read") from exc

    def _open_object(self, key: str, version: str | None) -> tuple[int, int]:
        """A read-only descriptor of the object's file and its size (a prefix is not
        found; a file of another version than ``version`` is a VersionChangedError)."""
        try:
            # O_NONBLOCK: a FIFO put in the store by hand would block the open forever
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise self._error(exc, key, "read") from exc
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise self._error(exc, key, "read") from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._not_a_file(key, st)
        try:
            check_version(self.url, key, version, _meta(key, st).version)
        except DcstoreError:
            os.close(fd)
            raise
        return fd, st.st_size

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        fd, size = self._open_object(key, version)
        try:
            check_range(key, start, end, size)
            return os.pread(fd, end - start, start) if end > start else b""
        except OSError as exc:
            raise self._error(exc, key, "read") from exc
        finally:
            os.close(fd)

    def open_read(self, key: str, *, version: str | None = None) -> ObjectReader:
        """Reads the file opened here with ``pread``: always this version, whole."""
        fd, _ = self._open_object(key, version)
        return _FileReader(self, key, fd)

    def map_range(
        self, key: str, start: int, end: int, *, version: str | None = None
    ) -> memoryview | None:
        fd, size = self._open_object(key, version)
        try:
            check_range(key, start, end, size)
            return self._map_fd(fd, key, start, end)
        finally:
            os.close(fd)

    def _map_fd(self, fd: int, key: str, start: int, end: int) -> memoryview:
        """Bytes ``[start, end)`` of the open file ``fd``, mapped with every page in."""
        if end == start:
            return memoryview(b"")
        offset = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            mapping = mmap.mmap(
                fd, end - offset, flags=MAP_FLAGS, prot=mmap.PROT_READ, offset=offset
            )
        except OSError as exc:
            raise self._error(exc, key, "read") from exc
        return memoryview(mapping)[start - offset :]

    def map_object(self, key: str, *, version: str | None = None) -> memoryview | None:
        """The whole file, mapped without ``MAP_POPULATE``: pages fault in as read."""
        fd, size = self._open_object(key, version)
        try:
            if size == 0:
                return memoryview(b"")
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except OSError as exc:
            raise self._error(exc, key, "read") from exc
        finally:
            os.close(fd)
        return memoryview(mapping)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        try:
            st = os.lstat(self._path(key))
        except OSError as exc:
            raise self._error(exc, key, "stat") from exc
        if stat.S_ISLNK(st.st_mode):
            raise self._error(OSError(errno.ELOOP, os.strerror(errno.ELOOP)), key, "stat")
        if not stat.S_ISREG(st.st_mode):
            raise self._not_a_file(key, st)
        meta = _meta(key, st)
        check_version(self.url, key, version, meta.version)
        return meta

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        # Start at the deepest directory the prefix names, then filter by prefix.
        base_parts = prefix.split("/")[:-1]
        self._check_no_link(base_parts, prefix)
        base = self.root.joinpath(*base_parts)
        base_key = "/".join(base_parts) + "/" if base_parts else ""
        yield from (m for m in self._walk(base, base_key) if m.key.startswith(prefix))

    def _walk(self, directory: Path, key_prefix: str) -> Iterator[ObjectMeta]:
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if not e.name.startswith(RESERVED_PREFIX)]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error(exc, key_prefix or ".", "list") from exc
        # Sort as keys sort: a directory "a" holds keys "a/...", which sort after "a.txt".
        decorated = []
        for entry in entries:
            is_dir = entry.is_dir(follow_symlinks=False)
            decorated.append((entry.name + "/" if is_dir else entry.name, is_dir, entry))
        decorated.sort(key=lambda item: item[0])
        for _, is_dir, entry in decorated:
            key = key_prefix + entry.name
            if is_dir:
                yield from self._walk(Path(entry.path), key + "/")
            else:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listing
                if stat.S_ISREG(st.st_mode):
                    yield _meta(key, st)

    # -- writes --------------------------------------------------------------------------

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        with self.open_write(key) as writer:
            writer.write(data)
        assert writer.meta is not None
        return writer.meta

    def open_write(self, key: str) -> ObjectWriter:
        """Writes a temporary file beside the target, renamed over it on commit."""
        path = self._path(key)
        for _ in range(8):  # a concurrent delete may remove our fresh parent directory
            tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error(exc, key, "write") from exc
            if _lock_as_writer(fd):
                return _FileWriter(self, key, path, tmp, fd)
            # a sweep removed the file between its creation and our lock: another name
        raise DcstoreError(f"{self.url}: cannot write {key!r}: its directory keeps vanishing")

    def sweep(self, older_than: float | None = None) -> int:
        """Remove temporary files of writes untouched for ``older_than`` seconds
        (default a day): a killed writer's leftovers. Returns how many. A writer holds
        a lock on its file until it commits, so one still open (pausing, or slower than
        ``older_than``) is never swept, whatever ``older_than`` says."""
        cutoff = time.time() - (ABANDON_AFTER_S if older_than is None else older_than)
        removed = 0
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < cutoff and _remove_unless_open(path):
                        removed += 1
        return removed

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing there (or a parent is an object, so this key cannot exist)
        except IsADirectoryError:
            return  # a prefix, not an object
        except OSError as exc:
            raise self._error(exc, key, "delete") from exc
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty, or already gone
            directory = directory.parent


class _FileWriter(ObjectWriter):
    """Writes into ``tmp`` (open as ``fd``); commit: fsync, rename over ``path``, fsync
    the directory; abort: remove ``tmp``."""

    def __init__(self, store: LocalBackend, key: str, path: Path, tmp: Path, fd: int):
        super().__init__(f"{store.url}: put {key!r}")
        self._store, self._key, self._path, self._tmp, self._fd = store, key, path, tmp, fd

    def _write(self, view: memoryview) -> None:
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise self._store._error(exc, self._key, "write") from exc

    def _commit(self) -> ObjectMeta:
        try:
            st = _later_than(self._path, self._fd, os.fstat(self._fd))
            if self._store.fsync:
                os.fsync(self._fd)  # write-back errors surface here, before the commit
            os.rename(self._tmp, self._path)  # still open, so still locked against sweep
        except OSError as exc:
            raise self._store._error(exc, self._key, "write") from exc
        fd, self._fd = self._fd, -1  # never closed twice, whatever close says
        try:
            os.close(fd)
        except OSError as exc:  # committed already: an error would say it was not
            url, key = self._store.url, self._key
            log.warning("%s: %r committed, but closing its file failed: %s", url, key, exc.strerror)
        if self._store.fsync:
            _fsync_dir(self._path.parent)
        return _meta(self._key, st)

    def _abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class _FileReader(ObjectReader):
    """An open object file read with ``pread`` straight into the caller's buffer."""

    def __init__(self, store: LocalBackend, key: str, fd: int):
        self._store, self._key, self._fd = store, key, fd
        super().__init__(_meta(key, os.fstat(fd)), self._pread, what=f"{store.url}: {key!r}")

    def _pread(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (inside the size the file had when opened): one ``pread``
        unless the kernel returns less (Linux: at most ~2 GiB a call); none at all means
        the file was cut short in place, which is a :class:`VersionChangedError`."""
        parts = []
        pos = start
        while pos < end:
            try:
                data = os.pread(self._fd, end - pos, pos)
            except OSError as exc:
                raise self._store._error(exc, self._key, "read") from exc
            if not data:
                raise VersionChangedError(
                    f"{self.what}: the file changed size while it was read ({self.size} bytes "
                    f"when opened, {os.fstat(self._fd).st_size} now): written in place, not "
                    "replaced"
                )
            if pos == start and len(data) == end - start:
                return data
            parts.append(data)
            pos += len(data)
        return b"".join(parts)

    def map_range(self, start: int, end: int) -> memoryview:
        """The opened file's bytes, mapped: this version even if the key was replaced."""
        if self.closed:
            raise ValueError(f"{self.what}: read from a closed reader")
        check_range(self._key, start, end, self.size)
        return self._store._map_fd(self._fd, self._key, start, end)

    def readinto(self, buffer: Buffer) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError(f"{self.what}: read from a closed reader")
        out = memoryview(buffer).cast("B")
        pos = self.tell()
        n = max(0, min(len(out), self.size - pos))
        if n == 0:
            return 0
        try:
            got = os.preadv(self._fd, [out[:n]], pos)
        except OSError as exc:
            raise self._store._error(exc, self._key, "read") from exc
        self.seek(pos + got)
        return got

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()


def _lock_as_writer(fd: int) -> bool:
    """Lock a writer's fresh temporary file until it commits, so :meth:`LocalBackend.sweep`
    leaves it alone; ``False`` (``fd`` closed) if a sweep removed it before the lock was
    taken. A filesystem without locks (ENOLCK: NFS without lockd) goes unlocked, as
    before locks were taken: there only the age protects a writer."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a sweep holds it only while it removes the file
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise
        return True
    if os.fstat(fd).st_nlink == 0:
        os.close(fd)
        return False
    return True


def _remove_unless_open(path: str) -> bool:
    """Remove a writer's temporary file unless its writer still holds it open (its lock:
    see :meth:`LocalBackend.open_write`); whether it was removed. A file this process
    cannot open or lock is removed by its age alone, as before locks were taken."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.ELOOP):
            raise  # gone (FileNotFoundError), or out of descriptors: not judged here
        os.unlink(path)  # not ours to read (a shared store), a link: by its age
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer
        except OSError:  # no locks on this filesystem
            pass
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def _meta(key: str, st: os.stat_result) -> ObjectMeta:
    return ObjectMeta(
        key,
        st.st_size,
        f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}",
        st.st_mtime_ns / 1e9,
    )


def _later_than(path: Path, fd: int, st: os.stat_result) -> os.stat_result:
    """``st`` of the new file ``fd``, its mtime set 1 ns past that of the file at ``path``
    (which it is about to replace) if the clock's granularity gave it one not later."""
    try:
        previous = os.stat(path).st_mtime_ns
    except OSError:
        return st  # nothing to replace (or something the rename will refuse)
    if st.st_mtime_ns > previous:
        return st
    os.utime(fd, ns=(st.st_atime_ns, previous + 1))
    return os.fstat(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode(path: Path) -> int:
    """``path``'s ``st_mode``; 0 when it cannot be stat'ed (missing, or no permission)."""
    try:
        return path.stat().st_mode
    except OSError:
        return 0
