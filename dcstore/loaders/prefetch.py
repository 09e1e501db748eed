"""Bounded, order-preserving read-ahead over a small thread pool.

Each ``DataLoader`` worker owns one :class:`Prefetcher` (created lazily in
that process; nothing is shared across processes). Guarantees:

* Results come back in submission order.
* At most ``max_bytes`` of requests are in flight or waiting to be consumed
  (always at least one, so an item larger than the budget still proceeds);
  the item the consumer is working on is not counted.
* An exception raised by a fetch is returned in its place, as the value, so
  the consumer decides (raise or skip) at the item's position.
* Closing the generator cancels what has not started and never blocks: fetches
  already running finish in the background and their results are dropped. (The
  garbage collector may close an abandoned generator in any thread, including a
  pool thread running one of its fetches; waiting there would deadlock.)
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Fetched(Generic[T, R]):
    """One completed request: the item, and its value or the exception it raised."""

    __slots__ = ("error", "item", "value")

    def __init__(self, item: T, value: R | None, error: BaseException | None):
        self.item = item
        self.value = value
        self.error = error


def _call(fn: Callable[[T], R], item: T) -> Fetched[T, R]:
    try:
        return Fetched(item, fn(item), None)
    except Exception as exc:
        return Fetched(item, None, exc)


class Prefetcher:
    """Run ``fn`` over items ahead of the consumer, bounded in bytes and threads."""

    def __init__(self, *, threads: int = 2, max_bytes: int = 128 * 1024 * 1024):
        if threads < 1 or max_bytes < 1:
            raise ValueError("threads and max_bytes must be positive")
        self.threads = threads
        self.max_bytes = max_bytes
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self.peak_bytes = 0

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pid != os.getpid():  # a forked worker has no threads
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dcstore-prefetch")
            self._pid = os.getpid()
        return self._pool

    def map(
        self, fn: Callable[[T], R], items: Iterable[T], size_of: Callable[[T], int]
    ) -> Generator[Fetched[T, R], None, None]:
        """Yield :class:`Fetched` results of ``fn(item)`` in order."""
        pool = self._executor()
        source = iter(items)
        window: deque[tuple[int, Future[Fetched[T, R]]]] = deque()
        in_flight = 0
        pending: T | None = None
        exhausted = False
        try:
            while True:
                while not exhausted:
                    if pending is None:
                        try:
                            pending = next(source)
                        except StopIteration:
                            exhausted = True
                            break
                    size = size_of(pending)
                    if window and in_flight + size > self.max_bytes:
                        break
                    window.append((size, pool.submit(_call, fn, pending)))
                    in_flight += size
                    self.peak_bytes = max(self.peak_bytes, in_flight)
                    pending = None
                if not window:
                    return
                size, future = window.popleft()
                in_flight -= size
                yield future.result()
        finally:
            for _, future in window:
                future.cancel()

    def close(self) -> None:
        """Stop the threads (the prefetcher restarts them if used again)."""
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict[str, object]:
        return {"threads": self.threads, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state)  # type: ignore[misc]
