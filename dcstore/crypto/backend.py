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
  covering the range; ``head`` and ``list`` report plaintext sizes, computed
  from the ciphertext size and the header (headers are cached by version).
* The backend pickles its :class:`KeySource`, never keys: each process loads
  the keyring itself on first use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range
from dcstore.backends.keys import validate_key, validate_prefix
from dcstore.crypto.format import (
    DEFAULT_SEGMENT_SIZE,
    MAX_HEADER_SIZE,
    Header,
    Layout,
    check_segment_size,
    parse_header,
)
from dcstore.crypto.keyring import Keyring
from dcstore.crypto.segments import ObjectCipher, plain_run_size
from dcstore.crypto.sources import KeySource, open_key_source
from dcstore.errors import ConfigError, IntegrityError, NotFoundError

HEADER_CACHE_ENTRIES = 4096
RANGE_ATTEMPTS = 3
"""A range read that fails because the object was overwritten meanwhile is retried."""


class EncryptedBackend(Backend):
    """Encrypts ``put`` and authenticates and decrypts reads of ``inner``.

    ``keys`` is a :class:`KeySource`, a :class:`Keyring` (single process: it
    does not pickle) or a key file URL. ``threads > 1`` spreads the segments
    of one large object over a private thread pool (OpenSSL releases the GIL).
    """

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

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._keyring: Keyring | None = None
        self._headers: OrderedDict[tuple[str, str], Header] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "inner": self.inner,
            "keys": self.keys,
            "segment_size": self.segment_size,
            "threads": self.threads,
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
                if self._keyring is None:
                    self._keyring = self.keys.load()
                keyring = self._keyring
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
        return ObjectCipher(header, self.keyring.unwrap(header, what), key, what)

    def _header(self, meta: ObjectMeta) -> Header:
        cache_key = (meta.key, meta.version)
        with self._lock:
            header = self._headers.get(cache_key)
            if header is not None:
                self._headers.move_to_end(cache_key)
                return header
        prefix = self.inner.get_range(meta.key, 0, min(meta.size, MAX_HEADER_SIZE))
        header = parse_header(prefix, self._what(meta.key))
        self._remember(cache_key, header)
        return header

    def _remember(self, cache_key: tuple[str, str], header: Header) -> None:
        with self._lock:
            self._headers[cache_key] = header
            while len(self._headers) > HEADER_CACHE_ENTRIES:
                self._headers.popitem(last=False)

    def _layout(self, meta: ObjectMeta) -> tuple[Header, Layout]:
        header = self._header(meta)
        layout = Layout.from_cipher_size(
            header.size, header.segment_size, meta.size, self._what(meta.key)
        )
        return header, layout

    # -- the Backend contract --------------------------------------------------

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        validate_key(key)
        header, dek = self.keyring.new_header(self.segment_size)
        blob = ObjectCipher(header, dek, key, self._what(key)).encrypt(data, self._executor())
        meta = self.inner.put(key, blob)
        self._remember((key, meta.version), header)
        return ObjectMeta(key, memoryview(data).nbytes, meta.version)

    def get(self, key: str) -> bytes:
        validate_key(key)
        blob = self.inner.get(key)
        what = self._what(key)
        header = parse_header(blob, what)
        layout = Layout.from_cipher_size(header.size, header.segment_size, len(blob), what)
        cipher = self._cipher(header, key)
        out = bytearray(layout.plain_size)
        cipher.decrypt_into(
            layout, 0, layout.segments, memoryview(blob)[header.size :], out, self._executor()
        )
        return bytes(out)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        validate_key(key)
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            meta = self.inner.head(key)
            try:
                return self._read_range(meta, start, end)
            except IntegrityError:
                if attempt == RANGE_ATTEMPTS or self._unchanged(meta):
                    raise
        raise AssertionError("unreachable")

    def _unchanged(self, meta: ObjectMeta) -> bool:
        try:
            return self.inner.head(meta.key).version == meta.version
        except NotFoundError:
            return False

    def _read_range(self, meta: ObjectMeta, start: int, end: int) -> bytes:
        header, layout = self._layout(meta)
        check_range(meta.key, start, end, layout.plain_size)
        if start == end:
            return b""
        size = layout.segment_size
        first, stop = start // size, (end - 1) // size + 1
        c0, c1 = layout.cipher_span(first)[0], layout.cipher_span(stop - 1)[1]
        blob = self.inner.get_range(meta.key, c0, c1)
        out = bytearray(plain_run_size(layout, first, stop))
        self._cipher(header, meta.key).decrypt_into(
            layout, first, stop, blob, out, self._executor()
        )
        offset = first * size
        if start == offset and end - offset == len(out):
            return bytes(out)
        return bytes(memoryview(out)[start - offset : end - offset])

    def head(self, key: str) -> ObjectMeta:
        validate_key(key)
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            meta = self.inner.head(key)
            try:
                _, layout = self._layout(meta)
                return ObjectMeta(key, layout.plain_size, meta.version)
            except IntegrityError:
                if attempt == RANGE_ATTEMPTS or self._unchanged(meta):
                    raise
        raise AssertionError("unreachable")

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        for meta in self.inner.list(prefix):
            try:
                _, layout = self._layout(meta)
            except NotFoundError:
                continue  # deleted while listing
            yield ObjectMeta(meta.key, layout.plain_size, meta.version)

    def delete(self, key: str) -> None:
        validate_key(key)
        self.inner.delete(key)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.inner.close()
