"""Retrying transient failures: only :class:`BackendUnavailableError` is retried."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from dcstore.backends.base import Backend, Buffer, ObjectMeta, ObjectWriter, Wrapper
from dcstore.backends.objectio import ObjectReader
from dcstore.errors import BackendUnavailableError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped at ``max_delay`` seconds."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; retry it on :class:`BackendUnavailableError` up to ``attempts`` times."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except BackendUnavailableError as exc:
                if attempt >= self.attempts:
                    raise BackendUnavailableError(
                        f"{exc} (gave up after {self.attempts} attempts)", url=exc.url, key=exc.key
                    ) from exc
                delay = random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
                log.info("%s: %s; retrying in %.2fs", what, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


class RetryingBackend(Wrapper):
    """Retries transient failures of ``inner``; every other error passes through.

    ``put`` is retried too: it is atomic, so a repeated put is harmless.
    ``list_objects`` retries the start of the listing (up to its first object).
    """

    def __init__(self, inner: Backend, policy: RetryPolicy | None = None):
        self.inner = inner
        self.policy = policy or RetryPolicy()

    @property
    def url(self) -> str:
        return self.inner.url

    def get(self, key: str, *, version: str | None = None) -> bytes:
        return self.policy.call(f"get {key}", lambda: self.inner.get(key, version=version))

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        return self.policy.call(
            f"get {key}", lambda: self.inner.get_range(key, start, end, version=version)
        )

    def map_range(
        self, key: str, start: int, end: int, *, version: str | None = None
    ) -> memoryview | None:
        return self.policy.call(
            f"get {key}", lambda: self.inner.map_range(key, start, end, version=version)
        )

    def map_object(self, key: str, *, version: str | None = None) -> memoryview | None:
        return self.policy.call(f"get {key}", lambda: self.inner.map_object(key, version=version))

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        return self.policy.call(f"put {key}", lambda: self.inner.put(key, data))

    def open_read(self, key: str, *, version: str | None = None) -> ObjectReader:
        """Opening is retried, and so is each range: a range that fails transiently is
        read again from a newly opened reader of the same version, so a long read resumes
        at the range that failed instead of starting over."""
        first = self.policy.call(f"get {key}", lambda: self.inner.open_read(key, version=version))
        return _ResumingReader(self, first)

    def open_write(self, key: str) -> ObjectWriter:
        """Opening is retried; the writes are not (a stream is consumed once)."""
        return self.policy.call(f"put {key}", lambda: self.inner.open_write(key))

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        return self.policy.call(f"head {key}", lambda: self.inner.head(key, version=version))

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """The start of the listing is retried: up to its first object (a listing is a
        lazy generator that asks the store nothing until then); later pages are not."""

        def start() -> tuple[Iterator[ObjectMeta], ObjectMeta | None]:
            items = iter(self.inner.list_objects(prefix))
            return items, next(items, None)

        items, first = self.policy.call(f"list {prefix}", start)
        if first is not None:
            yield first
            yield from items

    def delete(self, key: str) -> None:
        self.policy.call(f"delete {key}", lambda: self.inner.delete(key))

    def close(self) -> None:
        self.inner.close()


class _ResumingReader(ObjectReader):
    """Ranges of one version through the inner store's reader, reopened (at that
    version) after a transient failure; see :meth:`RetryingBackend.open_read`."""

    def __init__(self, store: RetryingBackend, first: ObjectReader):
        self._store = store
        self._source: ObjectReader | None = first
        self._lock = threading.Lock()
        super().__init__(
            first.meta, self._range, align=first.align, what=first.what, on_close=self._drop
        )

    def _range(self, start: int, end: int) -> Buffer:
        return self._store.policy.call(f"get {self.meta.key}", lambda: self._once(start, end))

    def _once(self, start: int, end: int) -> Buffer:
        source = self._current()
        try:
            return source.read_range(start, end)
        except BackendUnavailableError:
            self._drop(source)
            raise

    def map_range(self, start: int, end: int) -> memoryview | None:
        """The current reader's mapping (a local file's; nothing transient to retry)."""
        if self.closed:
            raise ValueError(f"{self.what}: read from a closed reader")
        return self._current().map_range(start, end)

    def _current(self) -> ObjectReader:
        with self._lock:
            if self._source is None:
                key, version = self.meta.key, self.meta.version
                self._source = self._store.inner.open_read(key, version=version)
            return self._source

    def _drop(self, source: ObjectReader | None = None) -> None:
        """Close ``source`` (the current reader when None) unless already replaced."""
        with self._lock:
            if source is None:
                source = self._source
            elif source is not self._source:
                return
            self._source = None
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()
