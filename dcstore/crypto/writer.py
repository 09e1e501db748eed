"""Encrypting a stream of unknown length, segment by segment.

:class:`EncryptingWriter` is what ``EncryptedBackend.open_write`` returns. It writes
the header, then each segment as soon as the next byte shows it is not the last one;
``close()`` encrypts the held segment as the final one (its nonce carries the
last-segment flag, so a truncated object never authenticates) and commits the inner
writer. Memory: one plaintext and one ciphertext segment.
"""

from __future__ import annotations

from collections.abc import Callable

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
        self._out = bytearray(self.chunk_size + TAG_SIZE)
        self._index = 0
        self._plain = 0
        inner.write(cipher.header.encode())

    def _write_chunk(self, view: memoryview, last: bool) -> None:
        if self._index >= MAX_SEGMENTS:
            raise IntegrityError(f"{self.what}: more than {MAX_SEGMENTS} segments")
        out = memoryview(self._out)[: len(view) + TAG_SIZE]
        self._cipher.encrypt_segment(self._index, last, view, out)
        self._inner.write(out)
        self._index += 1
        self._plain += len(view)

    def _finish(self) -> ObjectMeta:
        self._inner.close()
        meta = self._inner.meta
        assert meta is not None
        if self._on_commit is not None:
            self._on_commit(meta)
        return ObjectMeta(self._key, self._plain, meta.version)

    def _abort(self) -> None:
        self._inner.abort()
