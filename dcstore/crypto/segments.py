"""Encrypting and decrypting segment runs of one object, zero-copy.

Segments are processed with ``AESGCM.encrypt_into`` / ``decrypt_into`` from
memoryview slices into one preallocated buffer, so no per-segment ``bytes``
are created; the OpenSSL calls release the GIL, so threads working on
different objects, or on different runs of one, run in parallel.

A failing segment raises :class:`IntegrityError` naming the object; the
output buffer may then hold plaintext of segments already checked and must
be discarded by the caller (every caller here does).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dcstore.backends.base import Buffer
from dcstore.crypto.format import Header, Layout, segment_ad, segment_nonce
from dcstore.errors import IntegrityError

if not hasattr(AESGCM, "decrypt_into"):  # pragma: no cover - depends on the installed version
    raise ImportError(
        "dcstore.crypto needs a cryptography release with AESGCM.encrypt_into/decrypt_into "
        "(46 or newer): pip install -U cryptography"
    )

PARALLEL_MIN_SEGMENTS = 4
"""Objects with fewer segments are processed on the calling thread."""


def run_tasks(tasks: list[Callable[[], None]], pool: Executor | None) -> None:
    """Run ``tasks`` on ``pool`` (inline without one, or for a single task).

    When a task fails, every task finishes before the first error is raised.
    When the wait itself is interrupted (``KeyboardInterrupt``, ``SystemExit``),
    tasks not yet started are cancelled and the interrupt propagates at once;
    tasks already running finish in the background, writing into buffers that
    their own views keep alive (see :mod:`dcstore.crypto.buffers`).
    """
    if pool is None or len(tasks) < 2:
        for task in tasks:
            task()
        return
    futures = [pool.submit(task) for task in tasks]
    try:
        for future in futures:
            future.exception()
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    for future in futures:
        future.result()


class ObjectCipher:
    """The data key of one object bound to its header and name."""

    __slots__ = ("_ad", "_aead", "header", "what")

    def __init__(self, header: Header, dek: bytes, name: str, what: str):
        self._aead = AESGCM(dek)
        self._ad = segment_ad(header.segment_size, name)
        self.header = header
        self.what = what

    def __reduce__(self) -> NoReturn:
        raise TypeError("an ObjectCipher holds a data key and never pickles")

    def __repr__(self) -> str:
        return f"ObjectCipher({self.what!r}, key_id={self.header.key_id!r})"

    def encrypt(self, data: Buffer, pool: Executor | None = None) -> bytearray:
        """The whole encrypted object (header + segments) for plaintext ``data``."""
        size = memoryview(data).nbytes
        out = bytearray(self.layout(size).cipher_size)
        self.encrypt_into(data, out, pool)
        return out

    def layout(self, plain_size: int) -> Layout:
        """The layout of a ``plain_size``-byte object under this header."""
        return Layout(self.header.size, self.header.segment_size, plain_size)

    def encrypt_into(self, data: Buffer, out: Buffer, pool: Executor | None = None) -> None:
        """Write the encrypted object for ``data`` into ``out`` (exactly
        ``layout(len(data)).cipher_size`` bytes, e.g. a reused buffer)."""
        src = memoryview(data).cast("B")
        layout = self.layout(len(src))
        dst = memoryview(out).cast("B")
        if len(dst) != layout.cipher_size:
            raise ValueError(f"output must be {layout.cipher_size} bytes, got {len(dst)}")
        dst[: layout.header_size] = self.header.encode()
        last = layout.segments - 1
        prefix = self.header.nonce_prefix

        def step(i: int) -> None:
            p0, p1 = layout.plain_span(i)
            c0, c1 = layout.cipher_span(i)
            nonce = segment_nonce(prefix, i, i == last)
            self._aead.encrypt_into(nonce, src[p0:p1], self._ad, dst[c0:c1])

        if layout.segments < PARALLEL_MIN_SEGMENTS:
            pool = None
        run_tasks([functools.partial(step, i) for i in range(layout.segments)], pool)

    def encrypt_segment(self, index: int, last: bool, src: Buffer, dst: Buffer) -> None:
        """Encrypt segment ``index`` (``last``: the object's final one) from ``src`` into
        ``dst`` (``len(src) + TAG_SIZE`` bytes): the streaming writer's step."""
        nonce = segment_nonce(self.header.nonce_prefix, index, last)
        self._aead.encrypt_into(nonce, src, self._ad, dst)

    def decrypt_into(
        self,
        layout: Layout,
        first: int,
        stop: int,
        cipher: Buffer,
        out: Buffer,
    ) -> None:
        """Decrypt segments ``[first, stop)`` of the object into ``out``.

        ``cipher`` holds exactly those segments' ciphertext (it starts at
        ``layout.cipher_span(first)[0]``); ``out`` receives exactly their
        plaintext (it corresponds to ``layout.plain_span(first)[0]``).
        """
        src = memoryview(cipher).cast("B")
        dst = memoryview(out).cast("B")
        c_base = layout.cipher_span(first)[0]
        p_base = layout.plain_span(first)[0]
        expect = layout.cipher_span(stop - 1)[1] - c_base
        if len(src) != expect:
            raise IntegrityError(f"{self.what}: truncated while reading segments")
        last = layout.segments - 1
        prefix = self.header.nonce_prefix

        def step(i: int) -> None:
            c0, c1 = layout.cipher_span(i)
            p0, p1 = layout.plain_span(i)
            nonce = segment_nonce(prefix, i, i == last)
            try:
                self._aead.decrypt_into(
                    nonce, src[c0 - c_base : c1 - c_base], self._ad, dst[p0 - p_base : p1 - p_base]
                )
            except InvalidTag:
                raise IntegrityError(
                    f"{self.what}: segment {i} of {layout.segments} failed authentication "
                    "(corrupt, truncated, extended, reordered or renamed object, or one read "
                    "under another name than it was written: another store root)"
                ) from None

        for i in range(first, stop):
            step(i)
