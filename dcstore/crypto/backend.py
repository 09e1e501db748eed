"""``EncryptedBackend``: plaintext above, ciphertext below.

Guarantees (on top of the :class:`~dcstore.backends.base.Backend` contract):

* ``put`` writes a fresh data key per object, wrapped under the keyring's
  primary KEK, and segments of ``segment_size`` plaintext bytes
  (``docs/format.md``). The inner backend, and every cache below this layer,
  only ever sees ciphertext.
* ``get`` returns the plaintext only if every segment authenticates; any
  corruption, truncation, extension, reordering or renaming raises
  :class:`IntegrityError` naming the object, and no plaintext is returned.
  A missing, retired or wrong key raises :class:`KeyAccessError`.
* ``get_range`` reads (``inner.get_range``) and decrypts only the segments
  covering the range, with the same guarantee for the bytes it returns; a
  truncation at a segment boundary is seen only by a read that includes the
  (new) last segment. ``head`` and ``list_objects`` report plaintext sizes computed
  from the ciphertext size and the header (headers are cached by version):
  they reject sizes no writer produces, but authenticate nothing.
* A read learns the object's version once (``inner.head``, or the caller's
  ``version=``) and every inner read asks for exactly that version, so a
  cache below answers without the origin and an overwrite during the read is
  a :class:`VersionChangedError` from below, never a mix: the read then starts
  again on the new version, unless the caller pinned one. A whole ``get`` that
  loses that race :data:`RANGE_ATTEMPTS` times reads the object once unpinned
  (the backend returns one whole version) and decrypts it in memory, so it never
  fails because writers are busy; a ranged read raises after as many races, or,
  with cache tiers below, after as many more read past them (a miss through a tier
  costs more round trips to the origin, so its attempts lose the race more often).
  A read pinned to a version whose header is cached asks nothing before its data:
  the version's stored size is remembered with the header (a version is
  immutable), and the inner read of that version raises VersionChangedError
  itself if the object was replaced, so a loader's window reads cost no
  ``inner.head`` each (a round trip on a remote store).
* With cache tiers below, each version's header is read from the storage itself
  (once per version and process), so a tier's writer cannot pair a version with an
  older authentic copy of the object: its segments fail to authenticate under the
  stored header (a whole small object's header is compared), the cached copies are
  dropped and the read goes to the origin. While the storage's reads fail, the cached
  header serves unchecked.
* Before wrapping a new data key (``put``), the backend asks its key source
  whether it changed (one ``stat`` for a key file) and reloads it if so; a
  read that meets a key id the loaded keyring lacks reloads once if the
  source changed (always, for sources without a version). So a long-lived
  writer follows ``dcstore keys new`` / ``retire`` without a restart.
* The backend pickles its :class:`KeySource`, never keys: each process loads
  the keyring itself on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dcstore.backends.base import (
    Backend,
    Buffer,
    ObjectMeta,
    ObjectWriter,
    Wrapper,
    check_range,
)
from dcstore.backends.keys import validate_key, validate_prefix
from dcstore.backends.objectio import ObjectReader
from dcstore.crypto.buffers import OutputBuffer
from dcstore.crypto.format import (
    DEFAULT_SEGMENT_SIZE,
    MAX_V1_HEADER_SIZE,
    Header,
    Layout,
    check_segment_size,
    header_size_hint,
    parse_header,
)
from dcstore.crypto.keyring import Keyring
from dcstore.crypto.segments import ObjectCipher, run_tasks
from dcstore.crypto.sources import KeySource, open_key_source
from dcstore.crypto.writer import EncryptingWriter
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    IntegrityError,
    KeyAccessError,
    NotFoundError,
    VersionChangedError,
)

CACHE_FORGEABLE = (IntegrityError, KeyAccessError)
"""What a damaged or forged cached copy can make a read raise: bytes that do not
authenticate, or a header whose key id or wrapped key was altered (a key error whose
header is the stored one is the reader's keys: raised as is). Either drops the cached
copies of the version and reads it again once, from the origin."""

T = TypeVar("T")
Fetch = Callable[[int, int], Buffer]
"""Ciphertext ``[start, end)`` of the one stored version a read is about."""
HEADER_CACHE_ENTRIES = 4096
RANGE_ATTEMPTS = 3
"""A read of the current version that fails because the object was overwritten
meanwhile starts again, at most this many times in all."""
READ_CHUNK_BYTES = 16 << 20
"""Larger objects are read in ranged runs of whole segments of at most this size:
bounded memory, no page faults for the ciphertext (below glibc's mmap threshold),
and pipelining when ``threads > 1``."""


class EncryptedBackend(Wrapper):
    """Encrypts ``put`` and authenticates and decrypts reads of ``inner``.

    ``keys`` is a :class:`KeySource`, a :class:`Keyring` (single process: it
    does not pickle) or a key file URL. ``threads > 1`` spreads the segments
    of one large object over a private thread pool (OpenSSL releases the GIL).
    """

    check_cached_headers: bool = True
    """With cache tiers below: read each version's header from the storage, so a
    tier's writer cannot pair a version with an older authentic copy of the object.
    Off only in :meth:`trusting_cached_headers` copies."""

    def __init__(
        self,
        inner: Backend,
        keys: KeySource | Keyring | str,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        threads: int = 1,
    ):
        try:
            check_segment_size(segment_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.inner = inner
        self.keys = open_key_source(keys)
        self.segment_size = segment_size
        self.threads = threads
        self._start()

    def trusting_cached_headers(self) -> EncryptedBackend:
        """A copy of this stack (its own remembered headers) that takes headers from the
        cache tiers: only for objects no older copy of which decrypts to other bytes
        (a dataset's shards: written once, under unique names; a rotation rewraps the
        same data key)."""
        copy = EncryptedBackend(
            self.inner, self.keys, segment_size=self.segment_size, threads=self.threads
        )
        copy.check_cached_headers = False
        return copy

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._keyring: Keyring | None = None
        self._key_version: Hashable | None = None
        self._headers: OrderedDict[tuple[str, str], tuple[Header, int]] = OrderedDict()
        """(key, version) -> the version's header and stored (ciphertext) size."""
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "inner": self.inner,
            "keys": self.keys,
            "segment_size": self.segment_size,
            "threads": self.threads,
            "check_cached_headers": self.check_cached_headers,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start()

    @property
    def url(self) -> str:
        return self.inner.url

    def __repr__(self) -> str:
        return f"EncryptedBackend({self.inner.url!r}, keys={self.keys.describe()!r})"

    # -- runtime state -------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keyring, loaded from the key source on first use in this process."""
        keyring = self._keyring
        if keyring is None:
            with self._lock:
                keyring = self._keyring or self._load_locked()
        return keyring

    @property
    def read_alignment(self) -> int:
        """Segment-aligned reads decrypt no byte twice."""
        return self.segment_size

    @property
    def encryption_key_id(self) -> str:
        """The primary key of the current keyring (reloaded if the key file changed)."""
        return str(self.current_keyring().primary)

    @property
    def authenticates_reads(self) -> bool:
        """Reads return plaintext only from segments that authenticated (see above)."""
        return True

    def current_keyring(self, *, unversioned: bool = False) -> Keyring:
        """The keyring, first reloaded if the key source's :meth:`~KeySource.version`
        changed since it was loaded; with ``unversioned``, also reloaded when the
        source has no version. Called before every wrap."""
        keyring = self.keyring
        version = self.keys.version()
        if version == self._key_version and not (version is None and unversioned):
            return keyring
        with self._lock:
            if self._keyring is not keyring:  # another thread reloaded meanwhile
                return self._keyring or self._load_locked()
            return self._load_locked()

    def _load_locked(self) -> Keyring:
        version = self.keys.version()  # before loading: a change during the load reloads again
        keyring = self.keys.load()
        self._keyring, self._key_version = keyring, version
        return keyring

    def reload_keys(self) -> None:
        """Forget the loaded keyring; the next operation loads it again."""
        with self._lock:
            self._keyring = None

    def _executor(self) -> ThreadPoolExecutor | None:
        if self.threads == 1:
            return None
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, "dcstore-crypto")
        return self._pool

    def _what(self, key: str) -> str:
        return f"{self.inner.url}: object {key!r}"

    def _cipher(self, header: Header, key: str) -> ObjectCipher:
        what = self._what(key)
        keyring = self.keyring
        if header.key_id not in keyring:  # added (or restored) since we loaded?
            keyring = self.current_keyring(unversioned=True)
        dek = keyring.unwrap(header, what, source=self.keys.describe())
        return ObjectCipher(header, dek, key, what)

    def _header(
        self, meta: ObjectMeta, fetch: Fetch | None = None, *, size_only: bool = False
    ) -> Header:
        """``meta``'s header: remembered, else read (from the storage itself when
        :attr:`check_cached_headers` applies, except for ``size_only``: a plaintext
        size, which authenticates nothing anyway)."""
        cache_key = (meta.key, meta.version)
        with self._lock:
            known = self._headers.get(cache_key)
            if known is not None:
                self._headers.move_to_end(cache_key)
                return known[0]
        checking = self._checks_headers
        if checking and not size_only:
            stored = self._stored_header(meta)
            if stored is not None:
                self._remember(cache_key, stored, meta.size)
                return stored
        header = self._read_header(meta, fetch or self._fetcher(meta))
        if not checking:  # else unchecked: used for this read only
            self._remember(cache_key, header, meta.size)
        return header

    @property
    def _checks_headers(self) -> bool:
        return self.check_cached_headers and bool(self.inner.caches)

    def _stored_header(self, meta: ObjectMeta) -> Header | None:
        """The header of ``meta``'s version as the storage holds it, read past the cache
        tiers: a tier's writer could otherwise pair this version with an older authentic
        copy of the object, which decrypts. None while the storage's reads fail (the
        cached copy serves, as without the check)."""
        storage = _below_the_caches(self.inner)
        try:
            return self._read_header(
                meta,
                lambda start, end: storage.get_range(meta.key, start, end, version=meta.version),
            )
        except BackendUnavailableError:
            return None

    def _read_header(self, meta: ObjectMeta, fetch: Fetch) -> Header:
        """The header of ``meta``'s version, read with ``fetch``."""
        prefix: bytes | memoryview = memoryview(fetch(0, min(meta.size, MAX_V1_HEADER_SIZE)))
        whole = min(header_size_hint(prefix), meta.size)  # <= MAX_HEADER_SIZE
        if whole > len(prefix):  # a version-2 (public-key) header: fetch its remainder
            prefix = bytes(prefix) + bytes(fetch(len(prefix), whole))
        return parse_header(prefix, self._what(meta.key))

    def _forged_in_cache(self, exc: BaseException, meta: ObjectMeta) -> bool:
        """Whether ``exc``, met reading ``meta``'s version, may come from a damaged or
        forged cached copy: any integrity error; a key error only if the header read
        differs from the one stored (read past the cache). So a reader with the wrong
        keys does not evict what readers with the right ones cached, and a forged key id
        or wrapped key is still dropped."""
        if not isinstance(exc, KeyAccessError):
            return True
        if not self.inner.caches:
            return False
        with self._lock:
            known = self._headers.get((meta.key, meta.version))
        try:
            stored = self._stored_header(meta)
        except DcstoreError:  # cannot tell: the key error stands
            return False
        return stored is not None and (known is None or known[0] != stored)

    def _remember(self, cache_key: tuple[str, str], header: Header, stored_size: int) -> None:
        with self._lock:
            self._headers[cache_key] = (header, stored_size)
            while len(self._headers) > HEADER_CACHE_ENTRIES:
                self._headers.popitem(last=False)

    def _fetcher(self, meta: ObjectMeta, inner: Backend | None = None) -> Fetch:
        """Ranged reads of version ``meta`` straight from the inner store (or ``inner``)."""
        below = self.inner if inner is None else inner
        return lambda start, end: below.get_range(meta.key, start, end, version=meta.version)

    def _layout(
        self, meta: ObjectMeta, fetch: Fetch | None = None, *, size_only: bool = False
    ) -> tuple[Header, Layout]:
        header = self._header(meta, fetch, size_only=size_only)
        layout = Layout.from_cipher_size(
            header.size, header.segment_size, meta.size, self._what(meta.key)
        )
        return header, layout

    # -- the Backend contract --------------------------------------------------

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        validate_key(key)
        header, dek = self.current_keyring().new_header(self.segment_size)
        blob = ObjectCipher(header, dek, key, self._what(key)).encrypt(data, self._executor())
        meta = self.inner.put(key, blob)
        self._remember((key, meta.version), header, meta.size)
        return dataclasses.replace(meta, size=memoryview(data).nbytes)

    def open_write(self, key: str) -> ObjectWriter:
        """Encrypts segment by segment into ``inner.open_write``: memory stays bounded
        by a segment (plus what the inner writer holds)."""
        validate_key(key)
        header, dek = self.current_keyring().new_header(self.segment_size)
        cipher = ObjectCipher(header, dek, key, self._what(key))
        return EncryptingWriter(
            key,
            cipher,
            self.inner.open_write(key),
            lambda meta: self._remember((key, meta.version), header, meta.size),
        )

    def get(self, key: str, *, version: str | None = None) -> bytes:
        validate_key(key)
        try:
            return self._retrying(key, version, self._read_all, read_checks_version=True)
        except VersionChangedError:
            if version is not None:
                raise
        # Overwritten during every attempt: one unpinned read below returns one whole
        # version (the backend contract), decrypted from memory; past the cache tiers
        # when they are not trusted with headers (nothing to compare this one with).
        source = _below_the_caches(self.inner) if self._checks_headers else self.inner
        return self._decrypt_whole(key, memoryview(source.get(key)))

    def map_range(
        self, key: str, start: int, end: int, *, version: str | None = None
    ) -> memoryview | None:
        """Never maps: the stored bytes are ciphertext, the plaintext is decrypted."""
        return None

    def map_object(self, key: str, *, version: str | None = None) -> memoryview | None:
        """Never maps: the stored bytes are ciphertext, the plaintext is decrypted."""
        return None

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        validate_key(key)
        try:
            return self._retrying(
                key, version, lambda meta: self._read_range(meta, start, end),
                read_checks_version=True,
            )  # fmt: skip
        except VersionChangedError:
            storage = _below_the_caches(self.inner)
            if version is not None or storage is self.inner:
                raise
        # Overwritten during every attempt through the cache tiers (a miss costs them more
        # round trips to the origin than a read without them, so the race is lost more
        # often: 16 % of unpinned ranged reads against Redis under a writer in a loop,
        # 0 % without a cache): as many attempts again past them, as a store without
        # cache tiers makes. Each still reads one version, checked at the storage.
        return self._retrying(
            key, None, lambda meta: self._read_range(meta, start, end, inner=storage),
            inner=storage,
        )  # fmt: skip

    def open_read(self, key: str, *, version: str | None = None) -> ObjectReader:
        """A seekable reader of one version's plaintext. One inner reader (one opened
        file or session) supplies the ciphertext of every range, decrypted and
        authenticated as ``get_range`` does; it is closed with this reader."""
        validate_key(key)
        source = self.inner.open_read(key, version=version)
        try:
            meta = source.meta
            with self._lock:
                was_cached = (meta.key, meta.version) in self._headers
            try:
                _, layout = self._layout(meta, source.read_range)
            except CACHE_FORGEABLE as exc:  # a damaged cached header: dropped, read again once
                if not self._forged_in_cache(exc, meta):
                    raise
                if not self._drop_copies(meta, header_was_cached=was_cached):
                    raise
                _, layout = self._layout(meta, source.read_range)
        except BaseException:
            source.close()
            raise
        return ObjectReader(
            dataclasses.replace(meta, size=layout.plain_size),
            lambda start, end: self._read_pinned(meta, start, end, source),
            align=layout.segment_size,
            what=self._what(key),
            on_close=source.close,
        )

    def _read_pinned(self, meta: ObjectMeta, start: int, end: int, source: ObjectReader) -> bytes:
        """``_read_range`` of an opened version. A header that came from the cache and
        fails to authenticate or to unwrap is dropped and read again once (as
        :meth:`_retrying`)."""
        with self._lock:
            was_cached = (meta.key, meta.version) in self._headers
        try:
            return self._read_range(meta, start, end, source)
        except CACHE_FORGEABLE as exc:
            if not self._forged_in_cache(exc, meta):
                raise
            if not self._drop_copies(meta, header_was_cached=was_cached):
                raise
        return self._read_range(meta, start, end, source)

    def _retrying(
        self, key: str, version: str | None, read: Callable[[ObjectMeta], T], *,
        read_checks_version: bool = False, inner: Backend | None = None,
    ) -> T:  # fmt: skip
        """Run ``read(inner meta)`` of ``version`` (the current one when None).

        ``read_checks_version``: ``read`` asks the inner store for exactly
        ``meta.version``, which raises VersionChangedError if it is gone, so a pinned
        version whose header is cached needs no ``inner.head`` first. An overwrite
        during an unpinned read starts it again on the new version. An integrity
        failure drops the copies of the version that caches hold (the header remembered
        here, what the inner stack's cache tier holds) and, if there was one, retries
        once, from the origin; otherwise, or failing again, it is raised. A key error
        (an altered key id or wrapped key in a cached header) is handled alike.
        ``inner``: the store whose ``head`` gives the version (default: the inner store).
        """
        dropped = False
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            meta = self._remembered(key, version) if read_checks_version else None
            if meta is None:
                meta = (self.inner if inner is None else inner).head(key, version=version)
            with self._lock:
                was_cached = (key, meta.version) in self._headers
            try:
                return read(meta)
            except VersionChangedError:
                if version is not None or attempt == RANGE_ATTEMPTS:
                    raise
            except CACHE_FORGEABLE as exc:
                if not self._forged_in_cache(exc, meta):
                    raise
                if dropped or attempt == RANGE_ATTEMPTS:
                    self._forget((key, meta.version))
                    raise
                dropped = True
                if not self._drop_copies(meta, header_was_cached=was_cached):
                    raise
        raise AssertionError("unreachable")

    def _drop_copies(self, meta: ObjectMeta, *, header_was_cached: bool) -> bool:
        """After an integrity failure reading ``meta``'s version: forget its header and
        have the inner stack drop what its cache tier holds of it (a corrupt or forged
        cache entry must not fail every reader). True if a cached copy was dropped."""
        self._forget((meta.key, meta.version))
        return self.inner.drop_cached(meta.key, meta.version) or header_was_cached

    def _remembered(self, key: str, version: str | None) -> ObjectMeta | None:
        """The inner metadata of pinned ``version`` if its header is cached, else None."""
        if version is None:
            return None
        with self._lock:
            known = self._headers.get((key, version))
        return None if known is None else ObjectMeta(key, known[1], version)

    def _forget(self, cache_key: tuple[str, str]) -> None:
        with self._lock:
            self._headers.pop(cache_key, None)

    def _run(self, tasks: list[Callable[[], None]]) -> None:
        run_tasks(tasks, self._executor())

    def _read_all(self, meta: ObjectMeta) -> bytes:
        if meta.size > READ_CHUNK_BYTES:
            _, layout = self._layout(meta)
            return self._read_range(meta, 0, layout.plain_size)
        # Small: one request, header included.
        return self._decrypt_whole(
            meta.key, memoryview(self.inner.get(meta.key, version=meta.version)), meta
        )

    def _decrypt_whole(self, key: str, blob: memoryview, meta: ObjectMeta | None = None) -> bytes:
        """The plaintext of a whole stored object held in memory (``meta``: its version,
        whose header is then remembered)."""
        what = self._what(key)
        header = parse_header(blob, what)
        if meta is not None and self._checks_headers and header != self._header(meta):
            raise IntegrityError(f"{what}: the cached copy is not the stored version's")
        if meta is not None:
            self._remember((meta.key, meta.version), header, meta.size)
        layout = Layout.from_cipher_size(header.size, header.segment_size, len(blob), what)
        cipher = self._cipher(header, key)
        out = OutputBuffer(layout.plain_size)

        def decrypt(run: tuple[int, int]) -> Callable[[], None]:
            (c0, c1), (p0, p1) = _spans(layout, *run)
            return lambda: cipher.decrypt_into(layout, *run, blob[c0:c1], out.view[p0:p1])

        try:
            self._run([decrypt(run) for run in self._runs(layout, 0, layout.segments)])
        except BaseException:
            out.discard()
            raise
        return out.finish()

    def _runs(self, layout: Layout, first: int, stop: int) -> list[tuple[int, int]]:
        """Segment runs to fetch/decrypt as units: at most READ_CHUNK_BYTES, and
        with ``threads > 1`` small enough to give every thread two runs."""
        limit = READ_CHUNK_BYTES
        if self.threads > 1:
            total = layout.cipher_span(stop - 1)[1] - layout.cipher_span(first)[0]
            limit = min(limit, -(-total // (2 * self.threads)))
        return layout.runs(first, stop, limit)

    def _read_range(
        self, meta: ObjectMeta, start: int, end: int, source: ObjectReader | None = None,
        *, inner: Backend | None = None,
    ) -> bytes:  # fmt: skip
        """Plaintext ``[start, end)``: only the covering segments are fetched, in runs
        of at most :data:`READ_CHUNK_BYTES` (pipelined over ``threads``), mapped where
        the store maps its objects (decrypted straight out of the page cache), else read
        by ranged gets. Through ``source`` when given: an opened inner reader, so a local
        file stays on the version it opened even if the key is replaced meanwhile; else
        from ``inner`` (default: the inner store)."""
        if source is not None:
            fetch: Fetch = source.read_range
            mapper: Callable[[int, int], memoryview | None] = source.map_range
        else:
            below = self.inner if inner is None else inner
            fetch = self._fetcher(meta, below)
            mapper = functools.partial(below.map_range, meta.key, version=meta.version)
        header, layout = self._layout(meta, fetch)
        check_range(meta.key, start, end, layout.plain_size)
        if start == end:
            return b""
        cipher = self._cipher(header, meta.key)
        out = OutputBuffer(end - start)

        def read_run(run: tuple[int, int]) -> Callable[[], None]:
            def task() -> None:
                (c0, c1), (p0, p1) = _spans(layout, *run)
                # A store of local files maps the ciphertext: decrypted straight out of the
                # page cache, no copy into a buffer first (the view owns its mapping).
                mapped = mapper(c0, c1)
                blob = fetch(c0, c1) if mapped is None else mapped
                if start <= p0 and p1 <= end:
                    cipher.decrypt_into(layout, *run, blob, out.view[p0 - start : p1 - start])
                    return
                scratch = bytearray(p1 - p0)  # a run at an unaligned edge of the range
                cipher.decrypt_into(layout, *run, blob, scratch)
                lo, hi = max(start, p0), min(end, p1)
                out.view[lo - start : hi - start] = memoryview(scratch)[lo - p0 : hi - p0]

            return task

        try:
            self._run(
                [read_run(run) for run in self._runs(layout, *layout.segments_for(start, end))]
            )
        except BaseException:
            out.discard()
            raise
        return out.finish()

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        validate_key(key)
        return self._retrying(key, version, self._plain_meta)

    def _plain_meta(self, meta: ObjectMeta) -> ObjectMeta:
        _, layout = self._layout(meta, size_only=True)
        return dataclasses.replace(meta, size=layout.plain_size)

    def list_objects(
        self, prefix: str = "", *, on_damaged: Callable[[IntegrityError], None] | None = None
    ) -> Iterator[ObjectMeta]:
        """Objects under ``prefix`` with plaintext sizes. An object whose header or
        size is corrupt raises :class:`IntegrityError`, ending the listing, unless
        ``on_damaged`` is given: then it receives the error (its ``key`` and ``url`` set)
        and the listing goes on."""
        validate_prefix(prefix)
        for meta in self.inner.list_objects(prefix):
            try:
                try:
                    plain = self._plain_meta(meta)
                except VersionChangedError:  # replaced while listing: describe the new one
                    plain = self.head(meta.key)
            except NotFoundError:
                continue  # deleted while listing
            except IntegrityError as exc:
                if on_damaged is None:
                    raise
                exc.url, exc.key = exc.url or self.url, exc.key or meta.key
                on_damaged(exc)
                continue
            yield plain

    def delete(self, key: str) -> None:
        validate_key(key)
        self.inner.delete(key)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.inner.close()


def _spans(layout: Layout, first: int, stop: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Ciphertext and plaintext ``[start, end)`` of segments ``[first, stop)``."""
    cipher = (layout.cipher_span(first)[0], layout.cipher_span(stop - 1)[1])
    plain = (layout.plain_span(first)[0], layout.plain_span(stop - 1)[1])
    return cipher, plain


def _below_the_caches(backend: Backend) -> Backend:
    """The first backend of ``backend``'s stack below every cache tier in it."""
    while backend.caches and isinstance(backend, Wrapper):
        backend = backend.inner
    return backend
