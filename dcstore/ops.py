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


def copy_object(src: Backend, dst: Backend, key: str, dst_key: str | None = None) -> ObjectMeta:
    """Copy one object; the destination put is atomic."""
    return dst.put(dst_key or key, src.get(key))


def copy_prefix(
    src: Backend,
    dst: Backend,
    prefix: str = "",
    *,
    workers: int = 4,
    on_copied: Callable[[ObjectMeta], None] | None = None,
) -> list[ObjectMeta]:
    """Copy every object under ``prefix`` with ``workers`` threads; return what was written."""
    metas = list(src.list(prefix))
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
