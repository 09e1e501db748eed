"""HDFS backend on ``hdfs-native`` (a Rust client: no JVM, releases the GIL).

URL: ``hdfs://namenode:port/base/path`` (one NameNode), ``hdfs://nameservice/base``
(HA: NameNodes from the Hadoop configuration) or ``viewfs://cluster/base``.
Keys map to files under the base path; ``/`` in a key is a directory.

Options (URL query or keyword):
    conf_dir           directory with core-site.xml / hdfs-site.xml; without it the driver
                       reads ``$HADOOP_CONF_DIR`` (or ``$HADOOP_HOME/etc/hadoop``) itself
    replication        replication of new files (default 0: the cluster's)
    block_size         block size of new files in bytes (default 0: the cluster's; the
                       NameNode refuses one below its minimum, 1 MiB unless configured)
    failover_attempts  NameNode connection attempts per call inside the driver (default 2;
                       dcstore's RetryPolicy retries on top of that)
    failover_sleep_ms  base backoff between those attempts (default 100 ms)
    timeout            socket timeout in seconds for NameNode/DataNode I/O (default 60)
    hadoop_conf        extra Hadoop settings: a dict, or ``"key=value;key=value"``

Guarantees (see :mod:`dcstore.backends.base`):
    * ``put`` writes ``<dir>/.dcstore-tmp-<uuid>`` in the target's directory, closes it and
      renames it over the target (one NameNode operation): readers see the old or the new
      file. An interrupted put leaves the old object and, at worst, a hidden temporary file.
    * The version is ``<mtime>-<size>``; ``put`` sets the new file's modification time to
      ``max(now, previous mtime + 1 ms)``, so overwrites always change it: concurrent
      commits of one key take turns (:mod:`dcstore.backends.hdfs.commit_lock`). A key
      deleted and written again within the same millisecond, at the same size, may
      repeat a token.
      ``modified`` is that modification time (ms) in seconds.
    * ``list_objects`` walks directories lazily, in key order, skipping ``.dcstore*`` entries.
    * A key cannot be both an object and a "directory" of other keys (HDFS is a tree).
    * Safe across threads, pickling and ``fork``: a child forked within 3 s of a read
      waits out the driver's DataNode connection cache before its first read (once),
      instead of stalling ~60 s per read on a connection bound to the parent's runtime
      (hdfs-native 0.14.7); see :mod:`dcstore.backends.hdfs.fork`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from dcstore.backends.base import (
    Backend,
    Buffer,
    ObjectMeta,
    ObjectReader,
    ObjectWriter,
    check_range,
    check_version,
)
from dcstore.backends.error_map import mapped_errors
from dcstore.backends.hdfs.commit_lock import LOCK_MARKER, STALE_AFTER_S, CommitLock
from dcstore.backends.hdfs.errors import classify_error, remote_error
from dcstore.backends.hdfs.fork import note_open, note_read, opened
from dcstore.backends.keys import RESERVED_PREFIX, validate_key, validate_prefix
from dcstore.backends.options import Options, ParsedUrl, parse_url
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    NotFoundError,
)

try:
    import hdfs_native
except ImportError as exc:  # pragma: no cover - exercised through the registry
    raise ImportError("hdfs-native is required for hdfs:// URLs", name="hdfs_native") from exc


class HdfsBackend(Backend):
    """Objects as files under a base directory of an HDFS (or viewfs) namespace."""

    def __init__(
        self,
        url: str,
        *,
        conf_dir: str | None = None,
        replication: int = 0,
        block_size: int = 0,
        failover_attempts: int = 2,
        failover_sleep_ms: int = 100,
        timeout: float = 60.0,
        hadoop_conf: Mapping[str, str] | str | None = None,
    ) -> None:
        parsed = parse_url(url)
        if parsed.scheme not in ("hdfs", "viewfs"):
            raise ConfigError(f"not an hdfs:// or viewfs:// URL: {parsed.safe()}")
        if parsed.query:
            raise ConfigError(
                f"{parsed.safe(query={})}: pass options as keywords here, or open the URL "
                "with its query through open_backend/open_store"
            )
        for name, value, least in (
            ("replication", replication, 0),
            ("block_size", block_size, 0),
            ("failover_attempts", failover_attempts, 1),
        ):
            if value < least:
                raise ConfigError(f"{parsed.safe()}: {name} must be >= {least}, got {value}")
        if timeout <= 0:
            raise ConfigError(f"{parsed.safe()}: timeout must be > 0, got {timeout}")
        if any(part in (".", "..") for part in parsed.path.split("/")):  # else at the 1st put
            raise ConfigError(
                f"{parsed.safe()}: '.' and '..' are not resolved in HDFS paths: name the "
                "directory itself"
            )
        if conf_dir is not None and not os.path.isdir(conf_dir):  # else only "no NameNode"
            raise ConfigError(f"{parsed.safe()}: conf_dir {conf_dir!r} is not a directory")
        self._parsed = parsed
        self._root = parsed.path.rstrip("/")
        self._conf_dir = conf_dir
        self._replication = replication
        self._block_size = block_size
        self._failover_attempts = failover_attempts
        self._failover_sleep_ms = failover_sleep_ms
        self._timeout = timeout
        self._extra = _conf_pairs(hadoop_conf)
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> HdfsBackend:
        return cls(
            url.safe(path=url.path, query={}),
            conf_dir=options.text("conf_dir"),
            replication=options.integer("replication", 0),
            block_size=options.size("block_size", 0),
            failover_attempts=options.integer("failover_attempts", 2),
            failover_sleep_ms=options.integer("failover_sleep_ms", 100),
            timeout=options.number("timeout", 60.0),
            hadoop_conf=options.raw("hadoop_conf"),
        )

    # -- identity, pickling, connections ----------------------------------------------

    @property
    def url(self) -> str:
        query: dict[str, str] = {}
        if self._conf_dir:
            query["conf_dir"] = self._conf_dir
        for name, value, default in (
            ("replication", self._replication, 0),
            ("block_size", self._block_size, 0),
            ("failover_attempts", self._failover_attempts, 2),
            ("failover_sleep_ms", self._failover_sleep_ms, 100),
            ("timeout", self._timeout, 60.0),
        ):
            if value != default:
                query[name] = str(value)
        if self._extra:
            query["hadoop_conf"] = ";".join(f"{k}={v}" for k, v in sorted(self._extra.items()))
        return self._parsed.safe(query=query)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_client_pid"] = 0
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._client = None

    def _hadoop_config(self) -> dict[str, str]:
        base = max(1, self._failover_sleep_ms)
        return {
            "dfs.client.failover.max.attempts": str(self._failover_attempts),
            "dfs.client.failover.sleep.base.millis": str(base),
            "dfs.client.failover.sleep.max.millis": str(base * 10),
            "dfs.client.socket-timeout": str(int(self._timeout * 1000)),
            **self._extra,
        }

    def _fs(self) -> Any:
        """The driver client, created lazily (and again in a forked or unpickled process)."""
        client = self._client
        if client is not None and self._client_pid == os.getpid():
            return client
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                netloc = self._parsed.netloc
                target = f"{self._parsed.scheme}://{netloc}" if netloc else None
                note_open()
                try:
                    with self._errors("connect"):
                        self._client = hdfs_native.Client(
                            target, config=self._hadoop_config(), config_dir=self._conf_dir
                        )
                except ConfigError as exc:
                    raise self._no_namenode(exc) from None
                opened(self._client)
                self._client_pid = os.getpid()
            return self._client

    def _no_namenode(self, exc: ConfigError) -> ConfigError:
        """``exc``, or when the URL gave a host without a port (read as an HA nameservice)
        that no Hadoop configuration names, what to write instead."""
        host = self._parsed.netloc
        if "No NameNode hosts found" not in str(exc) or not host or ":" in host:
            return exc
        return ConfigError(
            f"{self._parsed.safe()}: no port given, so {host!r} was taken as an HA "
            "nameservice, and no Hadoop configuration names its NameNodes: give the "
            f"NameNode's RPC port (hdfs://{host}:9000 or :8020), or conf_dir= (or "
            "$HADOOP_CONF_DIR) with an hdfs-site.xml that defines the nameservice"
        )

    # -- error mapping: the one place driver exceptions become dcstore errors -------------

    def _errors(self, op: str, key: str = "") -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self._parsed.safe(), op, key, classify_error)

    # -- paths --------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    def _stat(self, key: str) -> Any:
        with self._errors("stat", key):
            status = self._fs().get_file_info(self._path(key))
        if status.isdir:
            raise NotFoundError(f"{self._parsed.safe()} [{key}]: not found (a directory)")
        return status

    # -- the contract -------------------------------------------------------------------

    def get(self, key: str, *, version: str | None = None) -> bytes:
        validate_key(key)
        return self._read(key, None, None, version)

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        validate_key(key)
        return self._read(key, start, end, version)

    def _read(self, key: str, start: int | None, end: int | None, version: str | None) -> bytes:
        """Open (one NameNode RPC), read; with ``version``, the file status is checked
        *after* the read: versions only move forward (put makes mtimes increase), so
        the expected version still current afterwards means it was the one read."""
        # A reader that opened the file just before an overwrite may find its blocks
        # deleted; it re-opens once and reads the new object (never a mix).
        for attempt in (1, 2):
            with self._errors("get", key):
                reader = self._fs().read(self._path(key))
            size = len(reader)
            lo, hi = (0, size) if start is None or end is None else (start, end)
            check_range(key, lo, hi, size)
            try:
                data = self._read_span(key, reader, lo, hi)
            except BackendUnavailableError:
                if version is not None:
                    self.head(key, version=version)  # replaced while being read?
                if attempt == 2:
                    raise
                continue
            if version is not None:
                self.head(key, version=version)
            return data
        raise AssertionError("unreachable")

    def open_read(self, key: str, *, version: str | None = None) -> ObjectReader:
        """One open file (one NameNode RPC for all the ranges read from it). The version
        is checked before and after opening (versions never repeat), so the blocks it
        holds are that version's: HDFS blocks are immutable, and a replaced file's blocks
        either still read or fail, never show another version."""
        validate_key(key)
        meta = self.head(key, version=version)
        with self._errors("get", key):
            reader = self._fs().read(self._path(key))
        self.head(key, version=meta.version)
        return _HdfsReader(self, meta, reader)

    def _read_span(self, key: str, reader: Any, lo: int, hi: int) -> bytes:
        if lo == hi:
            return b""
        with self._errors("read", key):
            try:
                return bytes(reader.read_range(lo, hi - lo))
            finally:
                note_read()

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        with self.open_write(key) as writer:
            writer.write(data)
        assert writer.meta is not None
        return writer.meta

    def open_write(self, key: str) -> _HdfsWriter:
        """Streams into a temporary file beside the object (one HDFS write pipeline),
        renamed over it on commit; on any failure the temporary file is deleted and the
        old object stays."""
        validate_key(key)
        path = self._path(key)
        tmp = f"{path.rsplit('/', 1)[0]}/{RESERVED_PREFIX}-tmp-{uuid.uuid4().hex}"
        options = hdfs_native.WriteOptions(
            block_size=self._block_size or None,
            replication=self._replication or None,
            overwrite=False,
            create_parent=True,
        )
        fs = self._fs()
        with self._errors("put", key):
            return _HdfsWriter(self, fs, key, path, tmp, fs.create(tmp, options))

    def _commit(self, fs: Any, key: str, path: str, tmp: str, size: int) -> ObjectMeta:
        """Rename the complete temporary file ``tmp`` over ``path``, its modification
        time set above the current file's, under the key's :class:`CommitLock` (so
        concurrent commits of one key never give two files one version token)."""
        with self._errors("put", key), CommitLock(fs, path, tmp) as lock:
            mtime = int(time.time() * 1000)
            with contextlib.suppress(FileNotFoundError):
                previous = fs.get_file_info(path)
                mtime = max(mtime, previous.modification_time + 1)
            fs.set_times(tmp, mtime, mtime)
            lock.check_held()
            self._rename_over(fs, tmp, path)
        return _meta(key, size, mtime)

    def sweep(self, older_than: float | None = None) -> int:
        """Delete temporary files of writes untouched for ``older_than`` seconds (default
        a day): what a killed writer left. Returns how many. Commit locks as old (and at
        least :data:`~dcstore.backends.hdfs.commit_lock.STALE_AFTER_S`) go too, uncounted."""
        age = ABANDON_AFTER_S if older_than is None else older_than
        cutoff_ms = (time.time() - age) * 1000
        lock_cutoff_ms = (time.time() - max(age, STALE_AFTER_S)) * 1000
        marker = f"/{RESERVED_PREFIX}-tmp-"
        removed = 0
        fs = self._fs()
        with self._errors("sweep"):
            try:
                statuses = list(fs.list_status(self._root or "/", True))
            except FileNotFoundError:
                return 0
            for status in statuses:
                if status.isdir:
                    continue
                if marker in status.path and status.modification_time < cutoff_ms:
                    with contextlib.suppress(FileNotFoundError):
                        fs.delete(status.path, False)
                        removed += 1
                elif LOCK_MARKER in status.path and status.modification_time < lock_cutoff_ms:
                    with contextlib.suppress(FileNotFoundError):
                        fs.delete(status.path, False)
        return removed

    @staticmethod
    def _rename_over(fs: Any, tmp: str, path: str) -> None:
        try:
            fs.rename(tmp, path, True)
        except RuntimeError as exc:
            # A directory at the target: fine once no object is left under it ("a/b/c"
            # deleted, now put "a"); otherwise the key is a prefix of other keys.
            if "must both be directories" not in str(exc):
                raise
            _remove_empty_tree(fs, path)
            fs.rename(tmp, path, True)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        validate_key(key)
        status = self._stat(key)
        meta = _meta(key, status.length, status.modification_time)
        check_version(self.url, key, version, meta.version)
        return meta

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        directory, _, name_prefix = prefix.rpartition("/")
        return self._walk(directory, name_prefix)

    def _walk(self, directory: str, name_prefix: str) -> Iterator[ObjectMeta]:
        """Yield objects under ``directory`` whose first name starts with ``name_prefix``.

        Siblings are ordered by ``name`` for files and ``name + "/"`` for directories,
        which is exactly the order of the full keys.
        """
        dir_path = f"{self._root}/{directory}" if directory else (self._root or "/")
        try:
            with self._errors("list", directory or "/"):
                entries = list(self._fs().list_status(dir_path, False))
        except NotFoundError:
            return
        if len(entries) == 1 and not entries[0].isdir and entries[0].path.rstrip("/") == dir_path:
            return  # listing a file returns the file itself: the prefix names an object
        children = []
        for status in entries:
            name = status.path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(RESERVED_PREFIX) or not name.startswith(name_prefix):
                continue
            children.append((name + "/" if status.isdir else name, name, status))
        children.sort(key=lambda child: child[0])
        for _, name, status in children:
            key = f"{directory}/{name}" if directory else name
            if status.isdir:
                yield from self._walk(key, "")
            else:
                yield _meta(key, status.length, status.modification_time)

    def delete(self, key: str) -> None:
        """Delete the file, then the directories it leaves empty (up to the base path)."""
        validate_key(key)
        fs = self._fs()
        with contextlib.suppress(NotFoundError), self._errors("delete", key):
            if not _delete_unless_nonempty(fs, self._path(key)):
                return  # a non-empty directory is a prefix, not an object: nothing to delete
            parents = key.split("/")[:-1]
            while parents and _delete_unless_nonempty(fs, self._path("/".join(parents))):
                parents.pop()


def _meta(key: str, size: int, mtime_ms: int) -> ObjectMeta:
    return ObjectMeta(key, size, f"{mtime_ms}-{size}", mtime_ms / 1000)


def _delete_unless_nonempty(fs: Any, path: str) -> bool:
    """Delete the file or directory ``path``; False if it is a non-empty directory (the
    NameNode checks, so a directory a concurrent put writes into is kept)."""
    try:
        fs.delete(path, False)
    except RuntimeError as exc:
        if remote_error(exc)[0] != "PathIsNotEmptyDirectoryException":
            raise
        return False
    return True


def _remove_empty_tree(fs: Any, path: str) -> None:
    """Remove the directory ``path`` and the directories below it, bottom-up, each only
    if empty: the NameNode checks every delete, so an object under ``path`` (also one put
    concurrently) is never removed and the last delete raises."""
    for status in fs.list_status(path, False):
        if status.isdir:
            _remove_empty_tree(fs, status.path)
    fs.delete(path, False)


_WRITE_CHUNK = 8 << 20
ABANDON_AFTER_S = 24 * 3600.0
"""``sweep()`` deletes temporary files untouched for this long."""


class _HdfsWriter(ObjectWriter):
    """An open HDFS file ``tmp`` that becomes ``path`` on commit."""

    def __init__(self, store: HdfsBackend, fs: Any, key: str, path: str, tmp: str, writer: Any):
        super().__init__(f"{store.url}: put {key!r}")
        self._store, self._fs, self._key = store, fs, key
        self._path, self._tmp, self._writer = path, tmp, writer
        self._open = True

    def _write(self, view: memoryview) -> None:
        with self._store._errors("put", self._key):
            _write_all(self._writer, view)

    def _close_file(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()

    def _commit(self) -> ObjectMeta:
        with self._store._errors("put", self._key):
            self._close_file()
        return self._store._commit(self._fs, self._key, self._path, self._tmp, self._written)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close_file()
        with contextlib.suppress(Exception):
            self._fs.delete(self._tmp, False)


class _HdfsReader(ObjectReader):
    """Ranged reads of one opened HDFS file (see :meth:`HdfsBackend.open_read`)."""

    def __init__(self, store: HdfsBackend, meta: ObjectMeta, reader: Any):
        self._store, self._reader = store, reader
        super().__init__(meta, self._range, what=f"{store.url}: {meta.key!r}")

    def _range(self, start: int, end: int) -> bytes:
        try:
            return self._store._read_span(self.meta.key, self._reader, start, end)
        except BackendUnavailableError:
            # Blocks gone: replaced meanwhile (VersionChangedError), else the failure.
            self._store.head(self.meta.key, version=self.meta.version)
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._reader.close()
        super().close()


def _write_all(writer: Any, view: memoryview) -> None:
    """Write ``view``. hdfs-native takes bytes and bytearray fast but a memoryview about 30x
    slower (measured), so a view of a whole ``bytes``/``bytearray`` goes in as that object
    (no copy) and other views in ``bytes`` copies of 8 MiB."""
    whole = view.obj
    if type(whole) in (bytes, bytearray) and len(whole) == view.nbytes:  # type: ignore[arg-type]
        writer.write(whole)
        return
    for offset in range(0, len(view), _WRITE_CHUNK):
        writer.write(bytes(view[offset : offset + _WRITE_CHUNK]))


def _conf_pairs(value: Mapping[str, str] | str | None) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    pairs: dict[str, str] = {}
    for item in str(value).split(";"):
        if not item.strip():
            continue
        name, sep, setting = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"hadoop_conf expects key=value pairs separated by ';', got {item!r}")
        pairs[name.strip()] = setting.strip()
    return pairs
