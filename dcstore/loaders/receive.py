"""Receiving batches in a background thread, a bounded number ahead of the consumer.

``Received(loader, depth, prepare)`` iterates ``loader`` in a daemon thread,
applies ``prepare`` to each batch there (e.g. pinning), and hands the results
to the consumer through a queue of ``depth`` batches. This is the pattern of
``DataLoader``'s own pin-memory thread: the inter-process hand-off (unpickling,
mapping shared memory) and the preparation overlap the caller's step instead
of adding to its data-wait. Guarantees:

* Batches come out in the loader's order; the loader's exception (e.g. a
  worker's error re-raised by ``DataLoader``) is raised in the consumer, in
  place, with its traceback.
* At most ``depth`` prepared batches wait in the queue (plus the one being
  prepared); neither this object nor the thread keeps a reference to a batch
  once it is handed out, so the caller decides when a batch is freed.
* :meth:`close` (also on garbage collection) stops the thread after the batch
  it is receiving and drops what was queued; the loader's iterator is then
  released in that thread, which shuts ``DataLoader`` workers down.
  :meth:`handle` lets an owner wait for that (e.g. before iterating the same
  ``DataLoader`` again: with ``persistent_workers`` its iterator is reused,
  and two threads must never drive it at once).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_BATCH, _END, _ERROR = range(3)
_POLL_S = 0.1


def _put(q: queue.Queue[tuple[int, Any]], stop: threading.Event, kind: int, value: Any) -> bool:
    while not stop.is_set():
        try:
            q.put((kind, value), timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _pump(
    loader: Iterable[Any],
    prepare: Callable[[Any], Any] | None,
    setup: Callable[[], None] | None,
    q: queue.Queue[tuple[int, Any]],
    stop: threading.Event,
) -> None:
    try:
        if setup is not None:
            setup()
        it = iter(loader)
        for batch in it:
            item = prepare(batch) if prepare is not None else batch
            del batch
            if not _put(q, stop, _BATCH, item):
                return
            del item
        _put(q, stop, _END, None)
    except BaseException as exc:  # handed to the consumer, raised there
        _put(q, stop, _ERROR, exc)


@dataclass(frozen=True)
class ReceiverHandle:
    """Stops a :class:`Received`'s thread without keeping the batches alive."""

    stop_event: threading.Event
    thread: threading.Thread

    def stop(self) -> None:
        """Stop the thread and wait until it has let go of the loader."""
        self.stop_event.set()
        self.thread.join()


class Received:
    """Iterator over ``prepare(batch)`` for the batches of ``loader``, received ahead."""

    def __init__(
        self,
        loader: Iterable[Any],
        depth: int = 2,
        prepare: Callable[[Any], Any] | None = None,
        *,
        setup: Callable[[], None] | None = None,
    ):
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._done = False
        # the thread holds the queue and the event, not ``self``: dropping this object stops it
        self._thread = threading.Thread(
            target=_pump,
            args=(loader, prepare, setup, self._queue, self._stop),
            name="dcstore-receive",
            daemon=True,
        )
        self._thread.start()

    def __iter__(self) -> Received:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _BATCH:
            return value
        self._done = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def handle(self) -> ReceiverHandle:
        return ReceiverHandle(self._stop, self._thread)

    def close(self) -> None:
        """Stop receiving and drop the queued batches (does not wait for the thread)."""
        self._done = True
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __del__(self) -> None:
        self.close()
