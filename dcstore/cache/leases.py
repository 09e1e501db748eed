"""Leases a reader may have left behind: taken by a request that failed, or not released.

A lease request that times out may still be executed: a paused server (``SIGSTOP``, a
stalled VM) runs the commands queued on its sockets when it resumes, even those of a
connection the client has since closed. Such a lease has no holder; without help every
reader of its chunks would wait for it to expire (``lease_ttl``). So the reader hands
the lease keys, with its token, to a :class:`LeaseSweeper`, which releases them
(compare-and-delete: never another reader's lease) as soon as the tier answers again.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence

from dcstore.cache.tier import CacheUnavailableError

Release = Callable[[Sequence[str], str], None]

MAX_PENDING = 4096
"""Lease sets kept at most; past that the oldest are left to expire by themselves."""


class LeaseSweeper:
    """Releases ``(leases, token)`` pairs with ``release`` in a daemon thread, trying
    every ``interval`` seconds until the tier answers, while this process lives and
    until :meth:`close`.

    A pair is done when a release is answered, or after ``ttl`` (the lease expires by
    itself then): so what waits is bounded by the pairs added within one ``ttl``, and at
    most :data:`MAX_PENDING`. A resumed server runs the failed request (queued first)
    before the release, so a lease taken late is released too; a request held up in the
    network until after the release still leaves its lease to expire after ``ttl``."""

    def __init__(self, release: Release, interval: float, ttl: float):
        self._release = release
        self._interval = interval
        self._ttl = ttl
        self._lock = threading.Lock()
        self._pending: deque[tuple[list[str], str, float]] = deque(maxlen=MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._closed = False
        _SWEEPERS.add(self)

    def _forked(self) -> None:
        """In a forked child: the lock may have been held by the parent's thread at the
        fork (then no thread of the child would ever release it), and what waits is the
        parent's to release."""
        self._lock = threading.Lock()
        self._thread = None
        self._pending.clear()

    def add(self, leases: Sequence[str], token: str) -> None:
        """Release ``leases`` held by ``token``, if any, once the tier answers."""
        with self._lock:
            if self._closed:
                return
            self._pending.append((list(leases), token, time.monotonic() + self._ttl))
            if self._thread is None or not self._thread.is_alive():  # none, or a forked copy
                self._thread = threading.Thread(
                    target=self._run, name="dcstore-lease-sweeper", daemon=True
                )
                self._thread.start()

    @property
    def pending(self) -> int:
        """How many lease sets still wait for the tier."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Stop: what waits is left to expire (the tier is being closed)."""
        with self._lock:
            self._closed = True
            self._pending.clear()

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                now = time.monotonic()
                while self._pending and self._pending[0][2] <= now:
                    self._pending.popleft()  # expired by itself meanwhile
                if self._closed or not self._pending:
                    self._thread = None
                    return
                batch = list(self._pending)
            released = {id(item) for item in batch[: self._sweep(batch)]}  # batch holds them
            with self._lock:
                kept = [item for item in self._pending if id(item) not in released]
                self._pending = deque(kept, maxlen=MAX_PENDING)

    def _sweep(self, batch: list[tuple[list[str], str, float]]) -> int:
        """Release the pairs of ``batch`` in order; how many before the tier failed."""
        for n, (leases, token, _) in enumerate(batch):
            if self._closed:
                return n
            try:
                self._release(leases, token)
            except CacheUnavailableError:
                return n
        return len(batch)


_SWEEPERS: weakref.WeakSet[LeaseSweeper] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sweeper in list(_SWEEPERS):
        sweeper._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
