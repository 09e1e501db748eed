"""Leases a reader may have left behind: taken by a request that failed, or not released.

A lease request that times out may still be executed: a paused server (``SIGSTOP``, a
stalled VM) runs the commands queued on its sockets when it resumes, even those of a
connection the client has since closed. Such a lease has no holder; without help every
reader of its chunks would wait for it to expire (``lease_ttl``). So the reader hands
the lease keys, with its token, to a :class:`LeaseSweeper`, which releases them
(compare-and-delete: never another reader's lease) as soon as the tier answers again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from dcstore.cache.tier import CacheUnavailableError

Release = Callable[[Sequence[str], str], None]


class LeaseSweeper:
    """Releases ``(leases, token)`` pairs with ``release`` in a daemon thread, trying
    every ``interval`` seconds until the tier answers, while this process lives.

    A pair is done only when a release is answered. A resumed server runs the failed
    request (queued first) before that, so a lease taken late is released too; a
    request held up in the network until after the release still leaves its lease to
    expire after ``lease_ttl``."""

    def __init__(self, release: Release, interval: float):
        self._release = release
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: list[tuple[list[str], str]] = []
        self._thread: threading.Thread | None = None

    def add(self, leases: Sequence[str], token: str) -> None:
        """Release ``leases`` held by ``token``, if any, once the tier answers."""
        with self._lock:
            self._pending.append((list(leases), token))
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

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                batch = list(self._pending)
            released = self._sweep(batch)
            with self._lock:  # only appended to meanwhile: the released ones lead
                del self._pending[:released]
                if not self._pending:
                    self._thread = None
                    return

    def _sweep(self, batch: list[tuple[list[str], str]]) -> int:
        """Release the pairs of ``batch`` in order; how many before the tier failed."""
        for n, (leases, token) in enumerate(batch):
            try:
                self._release(leases, token)
            except CacheUnavailableError:
                return n
        return len(batch)
