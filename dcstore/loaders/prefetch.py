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

:class:`ReadAhead` starts reading a worker's first items before its first request.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from dcstore.errors import ConfigError

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
        """``threads`` and ``max_bytes`` are the datasets' ``prefetch_threads`` and
        ``prefetch_bytes``: a :class:`ConfigError` names those when either is below 1."""
        for name, value in (("prefetch_threads", threads), ("prefetch_bytes", max_bytes)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value!r}")
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


class ReadAhead(Generic[T]):
    """``source``'s items, the first ones pulled by a background thread from the moment
    this is made until the first :meth:`__next__` (or ``limit`` items, or ``max_bytes``
    of them by ``size_of``): a ``DataLoader`` worker reads its first batch while it waits
    for its first request. After that, ``source`` is read in the caller's thread.

    Guarantees: items come out in ``source``'s order, exactly once; an exception the
    thread met is raised after the items read before it; ``source`` is never used by two
    threads at once (the first ``__next__`` waits for the item in progress). ``mark()``
    is read after each item is pulled and passed to ``handed(mark)`` when that item is
    handed out (so progress counted by ``source`` is reported as of what was handed out).
    """

    def __init__(
        self, source: Iterator[T], *, limit: int, max_bytes: int, size_of: Callable[[T], int],
        mark: Callable[[], int], handed: Callable[[int], None],
    ) -> None:  # fmt: skip
        self._source, self._mark, self._handed = source, mark, handed
        self._limit, self._max_bytes, self._size_of = limit, max_bytes, size_of
        self._buffer: deque[tuple[T, int]] = deque()
        self._error: BaseException | None = None
        self._exhausted = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="dcstore-read-ahead", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        size = 0
        try:
            while not self._stop.is_set() and len(self._buffer) < self._limit:
                item = next(self._source)
                self._buffer.append((item, self._mark()))
                size += self._size_of(item)
                if size >= self._max_bytes:
                    break
        except StopIteration:
            self._exhausted = True
        except BaseException as exc:  # raised in the consumer, at its position
            self._error = exc

    def _join(self) -> None:
        thread = self._thread
        if thread is not None:
            self._stop.set()
            if thread is threading.current_thread():  # closed by the GC in its own thread
                return
            thread.join()
            self._thread = None

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        self._join()
        if self._buffer:
            item, mark = self._buffer.popleft()
        elif self._error is not None:
            error, self._error = self._error, None
            self._exhausted = True
            raise error
        elif self._exhausted:
            raise StopIteration
        else:
            item = next(self._source)
            mark = self._mark()
        self._handed(mark)
        return item

    def close(self) -> None:
        """Stop reading ahead and close ``source`` (if it can be closed)."""
        self._join()
        self._buffer.clear()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()
