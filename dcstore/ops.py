"""Helpers that work on any :class:`Backend` (free functions, not base-class methods)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.errors import NotFoundError


def exists(backend: Backend, key: str) -> bool:
    """True if ``key`` names an object."""
    try:
        backend.head(key)
    except NotFoundError:
        return False
    return True


COPY_CHUNK_BYTES = 8 << 20
"""Objects larger than this are copied in ranged reads of this size (bounded memory)."""


def read_chunks(src: Backend, meta: ObjectMeta, chunk: int = COPY_CHUNK_BYTES) -> Iterator[bytes]:
    """Object ``meta`` (that version exactly) in ranged reads of about ``chunk`` bytes,
    rounded up to the store's read alignment (encrypted: whole segments). Raises
    :class:`VersionChangedError` as soon as the object is replaced, so a writer fed by
    this stream (``put_stream``) never commits a mix of two versions."""
    align = src.read_alignment or 1
    step = -(-chunk // align) * align
    for start in range(0, meta.size, step):
        yield src.get_range(meta.key, start, min(meta.size, start + step), version=meta.version)


def copy_object(
    src: Backend,
    dst: Backend,
    key: str,
    dst_key: str | None = None,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> ObjectMeta:
    """Copy one object; the destination put is atomic. Large objects stream through
    in chunks of :data:`COPY_CHUNK_BYTES`; ``on_bytes(n)`` reports progress."""
    meta = src.head(key)
    if meta.size <= COPY_CHUNK_BYTES:
        data = src.get(key)
        written = dst.put(dst_key or key, data)
        if on_bytes is not None:
            on_bytes(len(data))
        return written

    def reported() -> Iterator[bytes]:
        for chunk in read_chunks(src, meta):
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    return dst.put_stream(dst_key or key, reported(), meta.size)


def copy_prefix(
    src: Backend,
    dst: Backend,
    prefix: str = "",
    *,
    workers: int = 4,
    on_copied: Callable[[ObjectMeta], None] | None = None,
) -> list[ObjectMeta]:
    """Copy every object under ``prefix`` with ``workers`` threads; return what was written.

    :class:`NotFoundError` if no object matches: copying nothing is never a success.
    """
    metas = list(src.list_objects(prefix))
    if not metas:
        raise NotFoundError(f"{src.url}: no objects under prefix {prefix!r}")
    written: list[ObjectMeta] = []

    def one(meta: ObjectMeta) -> ObjectMeta:
        result = copy_object(src, dst, meta.key)
        if on_copied is not None:
            on_copied(meta)
        return result

    with ThreadPoolExecutor(max(1, workers)) as pool:
        written.extend(pool.map(one, metas))
    return written


def get_many(backend: Backend, keys: Iterable[str], *, workers: int = 4) -> Iterator[bytes]:
    """Fetch ``keys`` concurrently, yielding the objects in the order given. Closing the
    generator early cancels the fetches not started and does not wait for running ones
    (the collector may close an abandoned generator in any thread, even one of its pool's)."""
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        yield from pool.map(backend.get, keys)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
