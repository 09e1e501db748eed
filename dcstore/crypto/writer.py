"""Encrypting a stream of unknown length, segment by segment.

:class:`EncryptingWriter` is what ``EncryptedBackend.open_write`` returns. It writes
the header, then each segment as soon as the next byte shows it is not the last one;
``close()`` encrypts the held segment as the final one (its nonce carries the
last-segment flag, so a truncated object never authenticates) and commits the inner
writer.

From the second segment on, the inner writes run in one background thread, one at a
time and in order, while the caller's thread encrypts the next segment (the store's
network and the cipher overlap). The two ciphertext buffers alternate: a buffer is
encrypted into only after the write that read it has returned. An inner write's error
is raised by the next ``write`` or by ``close``; ``close`` and ``abort`` return only
once no write is running. Memory: one plaintext and two ciphertext segments.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from dcstore.backends.base import ObjectMeta, ObjectWriter
from dcstore.backends.objectio import ChunkedWriter
from dcstore.crypto.format import MAX_SEGMENTS, TAG_SIZE
from dcstore.crypto.segments import ObjectCipher
from dcstore.errors import IntegrityError


class EncryptingWriter(ChunkedWriter):
    """Encrypts into ``inner`` (a writer of the ciphertext object) under ``cipher``;
    ``on_commit(meta)`` sees the inner object's metadata once it is committed."""

    def __init__(
        self,
        key: str,
        cipher: ObjectCipher,
        inner: ObjectWriter,
        on_commit: Callable[[ObjectMeta], None] | None = None,
    ):
        super().__init__(cipher.what, cipher.header.segment_size)
        self._key, self._cipher, self._inner, self._on_commit = key, cipher, inner, on_commit
        self._outs = [bytearray(self.chunk_size + TAG_SIZE)]
        self._index = 0
        self._plain = 0
        self._pool: ThreadPoolExecutor | None = None
        self._writing: Future[int] | None = None
        inner.write(cipher.header.encode())

    def _write_chunk(self, view: memoryview, last: bool) -> None:
        if self._index >= MAX_SEGMENTS:
            raise IntegrityError(f"{self.what}: more than {MAX_SEGMENTS} segments")
        if not last and self._pool is None:  # a second segment follows: write behind
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="dcstore-write-behind")
            self._outs.append(bytearray(self.chunk_size + TAG_SIZE))
        out = memoryview(self._outs[self._index % len(self._outs)])[: len(view) + TAG_SIZE]
        self._cipher.encrypt_segment(self._index, last, view, out)  # not the buffer in flight
        self._wait()
        if self._pool is None:
            self._inner.write(out)
        else:
            self._writing = self._pool.submit(self._inner.write, out)
        self._index += 1
        self._plain += len(view)

    def _wait(self) -> None:
        """Until the write in flight (if any) returns; raises its error."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _stop(self) -> None:
        """No write running, no thread left: raises a write's error."""
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _finish(self) -> ObjectMeta:
        self._stop()
        self._inner.close()
        meta = self._inner.meta
        assert meta is not None
        if self._on_commit is not None:
            self._on_commit(meta)
        return dataclasses.replace(meta, size=self._plain)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stop()
        self._inner.abort()
