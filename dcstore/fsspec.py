"""``dcstore://``: any dcstore store as an fsspec filesystem, for pandas, pyarrow, DuckDB, ...

Usage::

    import pandas as pd
    opts = {"store": "hdfs://nn:9000/tables", "keys": "kek.json", "cache": "redis://c:6379/0"}
    df = pd.read_parquet("dcstore://sales/2026.parquet", storage_options=opts)

    fs = DcstoreFileSystem("hdfs://nn:9000/tables", keys="kek.json")
    pyarrow.parquet.read_table("sales/2026.parquet", filesystem=fs)

    con = duckdb.connect()
    con.register_filesystem(fs)
    con.sql("SELECT count(*) FROM read_parquet('dcstore://sales/2026.parquet')")

Registered with fsspec under ``dcstore`` (an entry point), so ``fsspec.open``,
``fsspec.filesystem("dcstore", store=...)`` and every library that takes
``storage_options`` find it. ``store`` is any URL ``open_store`` takes (local
paths, ``hdfs://``, ``cassandra://``, ``mongodb://``), with ``keys``, ``cache`` and
``segment_size`` as there; every path is an object key in that store. fsspec's chained form
``dcstore::hdfs://nn:9000/tables/t.parquet`` works for the protocols fsspec
itself knows (``hdfs``, ``file``): the store is rooted at ``store=`` when given,
else at the URL's host, and the rest of the path is the key.

Guarantees:

* Reads are ranged: plaintext reads fetch exactly the bytes asked for (from local
  files, as views of the page cache: no copy; a file maps its object once, at its
  first read, and its reads are slices of that mapping: pages are read in as they
  are touched); an encrypted read fetches and
  decrypts, in one ranged get, the whole segments it touches that are not already
  held, and keeps the segments at its edges that it used in part (at most eight, least
  recently used dropped first), so neighbouring reads
  decrypt a segment once (:class:`SegmentCache`; pass ``cache_type=`` to ``open`` to
  choose another fsspec cache). Segments are aligned to the store's
  ``segment_size`` (``segment_size=`` here, as the writer's: smaller segments make
  pyarrow's column reads decrypt fewer bytes they do not need). ``read`` returns
  ``bytes``; ``read_buffer`` (which pyarrow uses) the same bytes without a copy.
  Reads go through the store's hot tier when it has one.
* A file opened for reading is one version of the object: every fetch asks the
  store for that version, so if the object is replaced while the file is open, the
  next read that fetches raises ``VersionChangedError``; bytes the file still holds
  are of the version it opened. Two versions are never mixed.
* Writes are atomic and stream: a file opened with ``"wb"`` (or ``"w"``) writes
  through the store's ``open_write`` as its blocks fill (memory stays bounded by a
  block and the writer's chunk) and is committed on ``close``, so readers see the old
  object or the new one, never a part. A file that a ``with`` block closes on its way
  out of a failure is discarded instead: a ``with`` on the file (binary, text or
  compressed: ``compression=``), on ``fsspec.open``, and the context managers of
  writers that close their file as they fail (pandas' ``to_csv``, pyarrow's
  ``ParquetWriter``, ``contextlib.closing``); so is a file from ``fs.open`` never
  closed. A ``close()`` in your own code commits: inside an ``except`` block, your own
  ``__exit__`` or ``@contextmanager`` too; so does a ``with`` that ends normally
  there. Not seen: a text wrapper the caller makes itself (``io.TextIOWrapper(f)``,
  ``fsspec.open(...).open()``) closes the file from C, so its failing ``with`` commits
  the part written, and it commits when collected. Inside ``with fs.transaction:``
  files are committed when the block ends (one still open is closed first), in the
  order they were opened, and all discarded if it fails (one by one: not atomic
  together). Copies (``cp_file``, ``copy``) are files written, and removals (``rm``,
  ``rm_file``) wait for the end too, in their turn: so ``mv`` inside a failing
  transaction leaves both paths as they were (fsspec's own filesystems remove at
  once). Until the block ends, reads see the objects as they were before it.
* Directories are key prefixes (``a/b`` is a directory when a key starts with
  ``a/b/``); they exist only through their objects. A name that is both an object and
  a prefix (stores but local disk allow ``a`` beside ``a/b``) is listed twice: the file
  ``a`` and the directory ``a/``, so ``find``, ``du``, ``copy`` and ``rm`` of the parent
  reach both.
* ``modified(path)`` is the time the store reports for the write of the object's
  current version (``ObjectMeta.modified``; every store dcstore ships reports it),
  not earlier after an overwrite, so DuckDB's caches, keyed by path and modification
  time, see a replaced object as changed; ``info`` and ``ls`` give it as ``mtime``
  (seconds). A store that cannot say raises ``NotImplementedError`` there.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import functools
import inspect
import io
import os
import shutil
import site
import sys
import sysconfig
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from fsspec.caching import BaseCache, register_cache
from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.compression import compr
from fsspec.core import get_compression
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import isfilelike

from dcstore import pyarrow_teardown
from dcstore.backends.base import Backend, Buffer, ObjectMeta, ObjectWriter
from dcstore.backends.keys import validate_key
from dcstore.crypto.format import MAX_HEADER_SIZE, refuse_ciphertext
from dcstore.errors import ConfigError, InvalidKeyError, NotFoundError
from dcstore.localfile import write_file_atomically
from dcstore.ops import copy_object
from dcstore.store import store_for

PROTOCOL = "dcstore"
DEFAULT_BLOCK = 4 << 20
EXIT_FRAMES = 6
"""How far up from ``DcstoreFile.close`` an ``__exit__`` counts as closing it: pandas'
handles close a text wrapper that closes the file (3 frames), pyarrow's writer its sink."""


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    dirs += [*site.getsitepackages(), site.getusersitepackages(), os.path.dirname(__file__)]
    return tuple(sorted({os.path.join(os.path.realpath(d), "") for d in dirs}))


LIBRARY_DIRS = _library_dirs()
"""Where library code lives (the standard library, installed packages, the user's site,
dcstore): an ``__exit__`` there closing a file on its way out of a failure is a failed
write (``OpenFile``, pandas' handles, ``ParquetWriter``, Hugging Face's ``ArrowWriter``,
``contextlib.closing``). A close made by code elsewhere (the caller's own) is on purpose.
So is one by the caller's own package installed among the libraries (a wheel): that
close discards, as every close from a failing ``with`` did before."""
WRITING_LIBRARIES = frozenset(
    {"fsspec", "pandas", "pyarrow", "datasets", "polars", "contextlib", "dcstore"}
)
"""Libraries known to close a file as they fail, wherever they are installed (``--target``
directories, ``PYTHONPATH``)."""


class SegmentCache(BaseCache):  # type: ignore[misc]
    """The read cache of ``dcstore://`` files (``cache_type="dcstore"``, the default).

    Without ``alignment`` (plaintext stores) it keeps nothing: each read fetches
    exactly its bytes. With ``alignment`` (an encrypted store's segment size) a read
    fetches, in one ranged get, the whole segments covering the part of it not
    already held, and keeps the segments at its edges that it used only in part: a
    neighbouring read then takes them instead of fetching and decrypting them again
    (pyarrow reads column chunks out of order, from several threads, so a few are
    kept). At most ``keep_bytes`` are held (default eight segments, never fewer than
    two), least recently used dropped first; a segment cut out of a large fetch is
    copied, so the fetch is not pinned. Held bytes are of the version the file
    opened, so serving them never mixes versions. Reads return buffers (views where
    they can): :class:`DcstoreFile` hands them to pyarrow as they are and turns them
    into ``bytes`` for ``read``.
    """

    name = "dcstore"

    def __init__(
        self,
        blocksize: int,
        fetcher: Callable[[int, int], Any],
        size: int,
        alignment: int | None = None,
        keep_bytes: int | None = None,
    ):
        super().__init__(blocksize, fetcher, size)
        self.alignment = alignment or 0
        keep = 8 * self.alignment if keep_bytes is None else keep_bytes
        self.keep_bytes = max(keep, 2 * self.alignment)
        # segment index -> its plaintext (a view: a copy when cut out of a large fetch),
        # least recently used first
        self._held: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def _fetch(self, start: int | None, stop: int | None) -> Any:
        start = 0 if start is None else start
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        if not self.alignment:
            self.miss_count += 1
            self.total_requested_bytes += stop - start
            return self.fetcher(start, stop)
        with self._lock:
            return self._fetch_aligned(start, stop)

    def _take(self, index: int, lo: int, hi: int) -> memoryview | None:
        """Bytes ``[lo, hi)`` (inside segment ``index``) if that segment is held."""
        data = self._held.get(index)
        if data is None:
            return None
        self._held.move_to_end(index)
        base = index * self.alignment
        return memoryview(data)[lo - base : hi - base]

    def _fetch_aligned(self, start: int, stop: int) -> Any:
        al = self.alignment
        head: list[memoryview] = []
        tail: list[memoryview] = []
        lo, hi = start, stop
        while lo < hi and (view := self._take(lo // al, lo, min(hi, lo // al * al + al))):
            head.append(view)
            lo += len(view)
        while lo < hi and (view := self._take((hi - 1) // al, max(lo, (hi - 1) // al * al), hi)):
            tail.insert(0, view)
            hi -= len(view)
        if lo < hi:  # [f0, f1): whole segments, none of them held
            f0 = lo // al * al
            f1 = min(self.size, -(-hi // al) * al)
            data = self.fetcher(f0, f1)
            self.miss_count += 1
            self.total_requested_bytes += f1 - f0
            head.append(memoryview(data)[lo - f0 : hi - f0])
            self._keep(f0, f1, data, lo, hi)
        else:
            self.hit_count += 1
        pieces = head + tail
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _keep(self, f0: int, f1: int, data: Any, lo: int, hi: int) -> None:
        """Hold the segments of ``data`` (bytes ``[f0, f1)``) the read (``[lo, hi)``) used
        only in part: a neighbouring read may need the rest. Segments it used whole are
        not kept."""
        al = self.alignment
        view = memoryview(data)
        large = f1 - f0 > 2 * al  # a view would pin all of it: copy the edges out
        for begin in {f0, (f1 - 1) // al * al}:
            end = min(begin + al, f1)
            if lo > begin or hi < end:
                piece = view[begin - f0 : end - f0]
                self._held[begin // al] = bytes(piece) if large else piece
                self._held.move_to_end(begin // al)
        while len(self._held) * al > self.keep_bytes:
            self._held.popitem(last=False)


register_cache(SegmentCache, clobber=True)


class _SeenVersions:
    """A bounded, thread-safe set of ``(key, version)``: the versions a filesystem has
    found plaintext (most recent kept, at most :attr:`LIMIT`)."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, item: tuple[str, str | None]) -> bool:
        with self._lock:
            return item in self._seen

    def add(self, item: tuple[str, str | None]) -> None:
        with self._lock:
            self._seen[item] = None
            if len(self._seen) > self.LIMIT:
                self._seen.popitem(last=False)


def _chained_store(protocol: str, fo: str, options: dict[str, Any]) -> tuple[str, str]:
    """(store URL, key) of fsspec's chained form ``dcstore::<protocol>://...``."""
    if protocol == "file":
        raise ConfigError("dcstore::file://... needs store= (the store's root directory)")
    if protocol == "hdfs":
        host, port = options.get("host"), options.get("port")
        if not host:
            raise ConfigError(f"dcstore::hdfs://...{fo}: no NameNode host in the URL")
        store = f"hdfs://{host}:{port}" if port else f"hdfs://{host}"  # as open_store reads it
        if "*" in fo:  # fsspec expands no pattern of a chained URL's inner part ([ can name a key)
            raise ConfigError(
                f"dcstore::{store}{fo}: a pattern cannot be expanded in the chained form; use "
                f"dcstore://{fo.strip('/')} with storage_options={{'store': '{store}'}}"
            )
        return store, fo.strip("/")
    raise ConfigError(
        f"dcstore::{protocol}:// is not supported: use dcstore://KEY with store='{protocol}://...'"
    )


OWN_OPTIONS = ("store", "keys", "cache", "segment_size", "block_size")
"""The options (``storage_options``) of ``dcstore://`` itself."""
FSSPEC_OPTIONS = frozenset(
    {"use_listings_cache", "listings_expiry_time", "max_paths", "asynchronous", "loop"}
)
"""The ones fsspec's base filesystem takes (``skip_instance_cache`` never reaches it)."""


class DcstoreFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """The objects of one store (``store``: a URL or a :class:`Backend`) as files."""

    protocol = PROTOCOL
    root_marker = ""
    cachable = False  # each instance holds its own connections and key source
    file_class: type[DcstoreFile]

    def __init__(
        self,
        store: str | Backend | None = None,
        *,
        keys: Any = None,
        cache: Any = None,
        segment_size: int | str | None = None,
        block_size: int | None = None,
        fo: str | None = None,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        unknown = sorted(set(kwargs) - FSSPEC_OPTIONS)
        if unknown:  # a misspelt keys= would otherwise write plaintext without a word
            raise ConfigError(
                f"dcstore://: unknown option(s) {', '.join(map(repr, unknown))}; known: "
                f"{', '.join(OWN_OPTIONS)} and fsspec's {', '.join(sorted(FSSPEC_OPTIONS))}"
            )
        super().__init__(**kwargs)
        self._prefix = ""
        if store is None and target_protocol is not None:
            store, self._prefix = _chained_store(target_protocol, fo or "", target_options or {})
        elif store is not None and fo:  # chained form with an explicit store root
            self._prefix = self._relative_to_root(store, fo)
        if store is None:
            raise ConfigError("dcstore:// needs store= (the URL of a dcstore store)")
        self.store = store_for(store, cache=cache, keys=keys, segment_size=segment_size)
        self.blocksize = block_size or max(DEFAULT_BLOCK, self.store.read_alignment or 0)
        self._plaintext = _SeenVersions()

    @staticmethod
    def _relative_to_root(store: str | Backend, fo: str) -> str:
        root = (store.url if isinstance(store, Backend) else store).split("://", 1)[-1]
        root_path = "/" + root.split("/", 1)[1] if "/" in root else "/"
        path = "/" + fo.lstrip("/")
        if not (path + "/").startswith(root_path.rstrip("/") + "/"):
            raise ConfigError(f"{fo!r} is not under the store root {root_path!r}")
        return path[len(root_path.rstrip("/")) + 1 :]

    # -- paths ----------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :]
        return path.strip("/")

    def _full(self, path: str) -> str:
        """The object key (or prefix) ``path`` names: under the chained form's key, if any."""
        key = str(self._strip_protocol(path))
        if self._prefix:
            key = f"{self._prefix}/{key}" if key else self._prefix
        return key

    def _key(self, path: str) -> str:
        """The object key of ``path``; a bad one is an :class:`InvalidKeyError` (a
        ``ValueError``), whichever method was called."""
        return validate_key(self._full(path))

    def _prefix_of(self, path: str) -> str:
        key = self._full(path)
        return f"{key}/" if key else ""

    # -- metadata -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"DcstoreFileSystem({self.store!r})"

    def _file_info(self, meta: ObjectMeta) -> dict[str, Any]:
        """fsspec's ``info`` of an object, with its ``version`` and, when the store
        reports it, ``mtime`` (seconds since the epoch, as fsspec's local files)."""
        key = meta.key
        name = key[len(self._prefix) + 1 :] if self._prefix else key
        info = {"name": name, "size": meta.size, "type": "file", "version": meta.version}
        if meta.modified is not None:
            info["mtime"] = meta.modified
        return info

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        name = self._strip_protocol(path)
        if self._full(path):
            try:
                return self._file_info(self.store.head(self._key(path)))
            except NotFoundError:
                pass
        if not self._full(path) or next(iter(self.store.list_objects(self._prefix_of(path))), None):
            return {"name": name, "size": 0, "type": "directory"}
        raise FileNotFoundError(f"{self.store.url}: no object or prefix {self._full(path)!r}")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        prefix = self._prefix_of(path)
        entries: dict[str, dict[str, Any]] = {}
        for meta in self.store.list_objects(prefix):
            rest = meta.key[len(prefix) :]
            if "/" in rest:
                sub = meta.key[: len(prefix) + rest.index("/")]
                name = sub[len(self._prefix) + 1 :] if self._prefix else sub
                directory = {"name": name, "size": 0, "type": "directory"}
                if entries.get(name, directory)["type"] == "file":
                    directory["name"] = name = name + "/"  # "a" and "a/b" both exist
                entries.setdefault(name, directory)
            else:
                info = self._file_info(meta)
                entries[info["name"]] = info
        if not entries:
            info = self.info(path)  # a file lists itself; a missing path raises
            return [info if detail else info["name"]] if info["type"] == "file" else []
        out = sorted(entries.values(), key=lambda e: e["name"])
        return out if detail else [e["name"] for e in out]

    def ukey(self, path: str) -> str:
        return str(self.info(path)["version"])

    def modified(self, path: str) -> datetime.datetime:
        """When the object's current version was written (timezone-aware, UTC), as its
        store reports it (DuckDB's Parquet reader asks); ``NotImplementedError`` when
        the store cannot say."""
        key = self._key(path)
        modified = self.store.head(key).modified
        if modified is None:
            raise NotImplementedError(f"{self.store.url}: no modification time for {key!r}")
        return datetime.datetime.fromtimestamp(modified, tz=datetime.timezone.utc)

    # -- data -----------------------------------------------------------------------------

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        key, store = self._key(path), self.store
        keyless = store.encryption_key_id is None  # then refuse ciphertext
        if start is None and end is None:
            data = store.get(key)
            if keyless:
                refuse_ciphertext(data, f"{store.url}/{key}")
            return data
        meta = store.head(key)
        size = meta.size
        lo = 0 if start is None else (start if start >= 0 else max(0, size + start))
        hi = size if end is None else (end if end >= 0 else max(0, size + end))
        lo, hi = min(lo, size), max(min(hi, size), min(lo, size))
        data = store.get_range(key, lo, hi, version=meta.version)
        if keyless:
            self._refuse_ciphertext(key, size, meta.version, data if lo == 0 else None)
        return data

    def _refuse_ciphertext(
        self, key: str, size: int, version: str | None, first: Buffer | None = None
    ) -> None:
        """Read without keys: an encrypted object is a :class:`KeyAccessError` naming it,
        not ciphertext handed to a parser. ``first``: the object's bytes from offset 0
        already at hand (a mapping, a read from 0); one read of at most the header size
        when they are too few. A version found plaintext is not read again (its bytes never
        change; pyarrow opens a file twice per ``read_table``)."""
        if (key, version) in self._plaintext:
            return
        end = min(size, MAX_HEADER_SIZE)
        if first is not None and len(memoryview(first)) >= end:
            head = memoryview(first)[:end]
        else:
            head = memoryview(self.store.get_range(key, 0, end, version=version))
        refuse_ciphertext(head, f"{self.store.url}/{key}")
        self._plaintext.add((key, version))

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write ``value`` as the object at ``path``; ``mode="create"`` refuses an existing
        one with ``FileExistsError`` (checked, then written: not atomic, as fsspec's own)."""
        key = self._key(path)
        if mode == "create" and self.exists(path):
            raise FileExistsError(f"{self.store.url}: {key!r} exists (mode='create')")
        if self._intrans:  # committed with the transaction
            with self.open(path, "wb") as f:
                f.write(value)
        else:
            self.store.put(key, value)

    def get_file(
        self, rpath: str, lpath: Any, callback: Any = DEFAULT_CALLBACK, outfile: Any = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        """fsspec's ``get_file`` (``get`` calls it); a local file is written whole or not
        at all, as ``dcstore get -o`` writes it: a read that fails (no or wrong keys,
        damage found mid-stream) leaves a file that was there as it was."""
        if outfile is not None or isfilelike(lpath) or self.isdir(rpath):
            super().get_file(rpath, lpath, callback=callback, outfile=outfile, **kwargs)
            return
        lpath = os.path.abspath(lpath)
        os.makedirs(os.path.dirname(lpath), exist_ok=True)
        with self.open(rpath, "rb", **kwargs) as f:
            callback.set_size(f.size)
            write_file_atomically(lpath, _blocks(f, self.blocksize, callback))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """One version of ``path1`` to ``path2`` (``copy``, and ``mv`` then removes it),
        streamed for large objects; the new object is committed whole or not at all
        (inside a transaction: with it).
        Encrypted stores decrypt and encrypt anew (the format binds the object's name);
        without keys an encrypted object is refused, never copied as ciphertext."""
        src = self._key(path1)
        try:
            meta = self.store.head(src)
        except NotFoundError:
            if self.isdir(path1):  # a prefix of a recursive copy: nothing to create
                return
            raise
        if self._intrans:  # a file written: committed with the transaction
            with self.open(path1, "rb") as reader, self.open(path2, "wb") as writer:
                shutil.copyfileobj(reader, writer, self.blocksize)
            return
        copy_object(self.store, self.store, src, self._key(path2), meta=meta)

    def rm_file(self, path: str) -> None:
        """Delete one object (inside a transaction: when it commits); a missing one is a
        ``FileNotFoundError``, as fsspec's local filesystem says (the store's own delete
        of nothing is not an error)."""
        key = self._key(path)
        self.store.head(key)
        if self._intrans:
            self.transaction.files.append(_Removal(self.store, key))
        else:
            self.store.delete(key)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """As fsspec's local filesystem: a missing path is a ``FileNotFoundError`` and a
        directory without ``recursive=True`` an ``IsADirectoryError`` (directories are key
        prefixes: they go with their last object). The store's root (``""``, an unset
        prefix variable) is refused before anything is removed, as ``dcstore rm`` does."""
        paths = path if isinstance(path, list | tuple) else [path]
        if any(self._strip_protocol(p) == "" for p in paths):
            raise InvalidKeyError(
                f"rm of the store's root ({self.store.url}) would remove every object: "
                "name them (fs.rm(fs.find(''))), or run dcstore rm --all"
            )
        for p in reversed(self.expand_path(path, recursive=recursive, maxdepth=maxdepth)):
            try:
                self.rm_file(p)
            except FileNotFoundError:
                if recursive:
                    continue  # a directory, gone with the objects it held
                if self.isdir(p):
                    raise IsADirectoryError(
                        f"{p!r} is a directory: rm(path, recursive=True) removes what it holds"
                    ) from None
                raise

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories are key prefixes: nothing to create."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Directories are key prefixes: nothing to create."""

    def rmdir(self, path: str) -> None:
        """Directories are key prefixes: they vanish with their last object."""

    def _read_cache(self, options: Any) -> dict[str, Any]:
        """The read cache a file gets unless the caller names one: :class:`SegmentCache`
        aligned to the store's segments (plaintext: no alignment, nothing kept), with
        the caller's ``cache_options`` on top (measured with pyarrow reading 5 of 20
        Parquet columns: bench/fsspec_parquet.py)."""
        return {
            "cache_type": SegmentCache.name,
            "cache_options": {"alignment": self.store.read_alignment, **(options or {})},
        }

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """fsspec's ``open``. A file opened for writing, text or compressed
        (``compression=``, ``"infer"`` too) as well as binary, commits when closed and
        discards what it holds when its ``with`` block fails or it is collected unclosed.
        (fsspec's compressors leave the file under them open when closed: left to them,
        a compressed file was never committed.)"""
        if mode.replace("t", "").replace("b", "") not in ("r", "w"):  # named as given
            raise NotImplementedError(
                f"dcstore files open 'rb' or 'wb' (text: 'r', 'w'), not {mode!r}"
            )
        compression = get_compression(path, kwargs.pop("compression", None))
        if "w" not in mode or ("b" in mode and compression is None):
            return super().open(path, mode, compression=compression, **kwargs)
        text = {k: kwargs.pop(k) for k in ("encoding", "errors", "newline") if k in kwargs}
        binary = super().open(path, mode.replace("t", "").replace("b", "") + "b", **kwargs)
        outer: Any = binary
        try:
            if compression is not None:
                outer = _CompressedWriter(binary, compr[compression](binary, mode="w"))
            if "b" not in mode:
                outer = _TextWriter(outer, **text)
        except BaseException:  # a bad encoding=, a compressor's options
            binary.discard()
            raise
        # a transaction's commit closes it first; one it holds lives until then, as the
        # binary file does, even if the caller lets go of it
        binary._outer = weakref.ref(outer) if binary.autocommit else lambda: outer
        return outer

    def _open(
        self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
        cache_options: Any = None, **kwargs: Any,
    ) -> DcstoreFile:  # fmt: skip
        if mode not in ("rb", "wb"):
            raise NotImplementedError(f"dcstore files open 'rb' or 'wb', not {mode!r}")
        if mode == "rb" and "cache_type" not in kwargs:
            kwargs.update(self._read_cache(cache_options))
        kwargs.setdefault("cache_options", cache_options)
        return self.file_class(
            self, path, mode, block_size=block_size or self.blocksize, autocommit=autocommit,
            **kwargs,
        )  # fmt: skip


class _Removal:
    """An object's removal deferred to the end of a transaction (fsspec's transaction
    commits or discards what it holds)."""

    def __init__(self, store: Backend, key: str):
        self.store, self.key = store, key

    def commit(self) -> None:
        self.store.delete(self.key)

    def discard(self) -> None:
        """Nothing was removed."""


def _blocks(file: DcstoreFile, size: int, callback: Any) -> Iterator[bytes]:
    """``file``'s bytes in reads of ``size``, each reported to fsspec's ``callback``."""
    while block := file.read(size):
        callback.relative_update(len(block))
        yield block


@functools.lru_cache(maxsize=1024)
def _in_library(filename: str) -> bool:
    """Whether code from ``filename`` is library code (:data:`LIBRARY_DIRS`)."""
    if filename.startswith("<frozen "):  # the standard library's frozen modules
        return True
    return os.path.realpath(filename).startswith(LIBRARY_DIRS)


def _frames_of(traceback: TracebackType | None) -> list[FrameType]:
    """The frames an exception was raised in or passed through so far."""
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    return frames


def _handed(arguments: dict[str, Any], error: BaseException) -> bool:
    """Whether an ``__exit__``'s arguments (``exc``, or ``*args``) hold ``error`` itself."""
    for value in arguments.values():
        if value is error or (isinstance(value, tuple) and any(v is error for v in value)):
            return True
    return False


class DcstoreFile(AbstractBufferedFile):  # type: ignore[misc]
    """One object: ranged reads of the version seen at open, or an atomic streamed write."""

    buffer: io.BytesIO  # fsspec's: the block being written

    def __init__(self, fs: DcstoreFileSystem, path: str, mode: str = "rb", **kwargs: Any):
        self.key = fs._key(path)
        self.version: str | None = None
        self._mapped: memoryview | bool | None = False  # False: not asked yet
        self._checked = fs.store.encryption_key_id is not None  # else: refuse ciphertext
        if mode == "rb":
            meta = fs.store.head(self.key)
            self.version = meta.version
            kwargs["size"] = meta.size
        self._writer: ObjectWriter | None = None
        # an exception already being handled at open (a write in an `except` block, an
        # emergency checkpoint) is not this file's failure: see close()
        self._handled_at_open = sys.exc_info()[1]
        self._outer: Callable[[], Any] | None = None  # a text or compressing writer on top
        self._failed: BaseException | None = None  # a write's error: the file is done
        self._dropping = False  # being discarded: writes and a close commit nothing
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        store: Backend = self.fs.store
        if self._mapped is False:  # the first fetch maps the whole object, once
            self._mapped = store.map_object(self.key, version=self.version)
        elif self._mapped is not None:  # replaced since? VersionChangedError, as any fetch
            store.head(self.key, version=self.version)
        if isinstance(self._mapped, memoryview):  # local files: the page cache, no copy
            data: Any = self._mapped[start:end]  # a slice keeps the mapping alive
            cache = getattr(self, "cache", None)  # not yet set: "all" fetches as it is made
            if getattr(cache, "name", "") not in (SegmentCache.name, "none"):
                data = bytes(data)  # other fsspec caches join and keep what they fetch
            first: Any = self._mapped
        else:
            data = store.get_range(self.key, start, end, version=self.version)
            first = data if start == 0 else None
        if not self._checked:  # before anything is handed out
            self.fs._refuse_ciphertext(self.key, self.size, self.version, first)
            self._checked = True
        return data  # type: ignore[no-any-return]

    def close(self) -> None:
        """Reading: let go of the object. Writing: commit (inside a transaction, when it
        ends), unless library code closes the file on its way out of a failure raised
        since the file was opened (the ``with`` blocks of fsspec's ``OpenFile``, pandas'
        handles, pyarrow's ``ParquetWriter``, ``contextlib.closing``; pandas'
        ``get_handle`` cleaning up): then what was written is discarded. A ``close()``
        in the caller's own code (an ``except`` block, its own ``__exit__`` or
        ``@contextmanager``) commits."""
        self._mapped = None  # slices handed out keep the mapping alive; the file lets go
        if self.mode != "rb" and not self.closed and (self._dropping or self._failing()):
            self.discard()
            return
        super().close()

    def _failing(self) -> bool:
        """Whether this close is a library's cleanup from a failure: among the few
        callers above, all library code (:data:`LIBRARY_DIRS`), an ``__exit__`` was
        handed the exception now in flight (one raised since the file was opened), or a
        function the exception was raised in or passed through closes the file in its
        ``finally`` or ``except`` (pandas' ``get_handle`` when a codec is missing). An
        exception merely being handled is no failure of the file, and a close from the
        caller's own code is on purpose: both commit. (Python frames and their arguments
        are read, never changed; an ``__exit__`` written in C, such as
        ``io.TextIOWrapper``'s when the caller wraps the file itself, is not seen: that
        close commits.)"""
        error = sys.exc_info()[1]
        if error is None or error is self._handled_at_open:
            return False
        failed_in = _frames_of(error.__traceback__)
        frame = inspect.currentframe()
        for _ in range(EXIT_FRAMES):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return False
            package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
            if package not in WRITING_LIBRARIES and not _in_library(frame.f_code.co_filename):
                return False  # the caller's own code closed it
            if frame.f_code.co_name == "__exit__" and _handed(frame.f_locals, error):
                return True
            if any(frame is f for f in failed_in):  # its own `finally`/`except` cleaning up
                return True
        return False

    def read_buffer(self, length: int = -1) -> Any:
        """``read`` without the copy into ``bytes``: a buffer (a view of the page cache
        or of held segments where it can be). pyarrow's ``PythonFile`` reads through
        this when a file has it (see :mod:`dcstore.pyarrow_teardown` for why the
        buffer is watched)."""
        return pyarrow_teardown.track(memoryview(super().read(length)))

    def read(self, length: int = -1) -> bytes:
        out = super().read(length)
        return out if isinstance(out, bytes) else bytes(out)

    def _initiate_upload(self) -> None:
        # committed by the final upload or discarded by discard()
        self._writer = self.fs.store.open_write(self.key)

    def write(self, data: Any) -> int:
        """fsspec's ``write``. Once a write to the store failed (a full disk: raised to
        that write's caller), later writes are dropped and ``close`` raises that error
        again, committing nothing: a writer cleaning up as it fails (a text or gzip
        wrapper flushing its last bytes) does not mask it with an error of its own."""
        if self._failed is not None or self._dropping:
            return memoryview(data).nbytes
        return super().write(data)  # type: ignore[no-any-return]

    def _upload_chunk(self, final: bool = False) -> bool:
        if self._failed is not None:  # the writer aborted itself: say why, not "closed"
            raise self._failed
        if self._writer is None:
            self._initiate_upload()
        assert self._writer is not None
        try:
            self._writer.write(self.buffer.getbuffer())
        except BaseException as exc:
            self._failed = exc
            self.buffer = io.BytesIO()  # the error's frames may hold the old one's view
            raise
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Make what was written the object's new version (``close`` does, outside a
        transaction; the transaction does at its end, closing a file still open first)."""
        outer = self._outer() if self._outer is not None else None
        if outer is not None and not outer.closed:  # a transaction ends with it open
            outer.close()  # text still in its wrapper, a compressor's end: into this file
        if not self.closed:  # a transaction ends with the file open: what it holds counts
            super().close()  # the last block written out; not committed (autocommit off)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def discard(self) -> None:
        """Drop what was written: nothing is committed."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.buffer = io.BytesIO()  # what was written is dropped
        self.closed = True

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and self.mode != "rb":
            self.discard()
            return
        self._mapped = None
        super().close()  # a with block that ends normally commits

    def __del__(self) -> None:
        if getattr(self, "closed", True):  # closed, or __init__ failed before opening
            return
        if self.mode != "rb":
            self.discard()  # never commit a half-written file from a finalizer
        else:
            super().__del__()


class _DiscardsOnFailure:
    """A writer on top of a :class:`DcstoreFile`: closing it commits; its ``with`` block
    failing, or its collection unclosed, discards what was written (``io`` classes close,
    so would commit, in both cases)."""

    closed: bool

    @abc.abstractmethod
    def close(self) -> None:
        """Commit what was written (each writer closes what is under it)."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Drop what was written: nothing is committed."""

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        try:
            closed = self.closed
        except (AttributeError, ValueError):  # its __init__ failed (a bad encoding=)
            return
        if not closed:
            self.discard()


class _CompressedWriter(_DiscardsOnFailure, io.BufferedIOBase):
    """``fs.open(path, "wb", compression=...)``: a compressor writing into a
    :class:`DcstoreFile`. Closing it closes both (so the file commits, with the
    compressor's end written)."""

    def __init__(self, file: DcstoreFile, stream: Any):
        self._file = file
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._stream.write(data)  # type: ignore[no-any-return]

    def flush(self) -> None:
        if not self._stream.closed and not self._file.closed:
            self._stream.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            try:
                self._stream.close()  # its last bytes into the file
            except BaseException:
                self._file.discard()  # without its end the file must not commit
                raise
            self._file.close()  # commits (inside a transaction: when it ends)
        finally:
            io.BufferedIOBase.close(self)

    def discard(self) -> None:
        """Drop what was written: nothing is committed."""
        if self.closed:
            return
        # the compressor is closed first, its end dropped (closed after the file, a zip
        # writer raised and left its ZipFile to fail again, noisily, in __del__), and a
        # close of the file it makes (zstandard's) discards instead of committing
        self._file._dropping = True
        with contextlib.suppress(Exception):
            self._stream.close()
        self._file.discard()
        io.BufferedIOBase.close(self)


class _TextWriter(_DiscardsOnFailure, io.TextIOWrapper):
    """``fs.open(path, "w")``: a text wrapper over a :class:`DcstoreFile` or a
    :class:`_CompressedWriter`."""

    def close(self) -> None:
        io.TextIOWrapper.close(self)

    def discard(self) -> None:
        """Drop what was written: nothing is flushed, nothing committed."""
        file: DcstoreFile | _CompressedWriter = self.buffer  # type: ignore[assignment]
        if not file.closed:
            file.discard()  # the wrapper is closed with it
        else:
            self.close()


DcstoreFileSystem.file_class = DcstoreFile


def register() -> None:
    """Register ``dcstore://`` with fsspec (the entry point does it when installed)."""
    import fsspec

    fsspec.register_implementation(PROTOCOL, DcstoreFileSystem, clobber=True)


__all__ = ["DcstoreFile", "DcstoreFileSystem", "register"]
