"""Retrying transient failures: only :class:`BackendUnavailableError` is retried."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from dcstore.backends.base import Backend, Buffer, ObjectMeta, ObjectWriter, Wrapper
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
    ``list_objects`` retries only the start of the listing.
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

    def open_write(self, key: str) -> ObjectWriter:
        """Opening is retried; the writes are not (a stream is consumed once)."""
        return self.policy.call(f"put {key}", lambda: self.inner.open_write(key))

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        return self.policy.call(f"head {key}", lambda: self.inner.head(key, version=version))

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        items = self.policy.call(f"list {prefix}", lambda: iter(self.inner.list_objects(prefix)))
        yield from items

    def delete(self, key: str) -> None:
        self.policy.call(f"delete {key}", lambda: self.inner.delete(key))

    def close(self) -> None:
        self.inner.close()
