"""A circuit breaker that keeps a failing cache tier out of the read path.

Closed: every call goes to the tier. The first failure opens the circuit,
logs one warning for the episode and counts an error; while open, calls are
skipped (the reader goes to the origin) until ``retry_interval`` has passed,
then calls probe the tier again. The first success closes the circuit and
logs that the tier recovered (naming the servers of a tier of several that are still
out of use: it answers without them).

A write refused for want of memory (:class:`CacheFullError`) is no outage: the tier
still serves what it holds, so the circuit stays closed (the refused call is skipped
and counted as an error); one warning per episode of refusals, which a write that
succeeds (:meth:`CircuitBreaker.stored`) ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from dcstore.cache.tier import CacheFullError, CacheUnavailableError

log = logging.getLogger("dcstore.cache")


class TierSkipped(Exception):
    """The tier is not used for this call (circuit open or the call failed)."""


class CircuitBreaker:
    """Thread-safe closed/open state with one warning per failure episode; ``with
    breaker:`` runs a block against the tier (see :meth:`__enter__`, :meth:`__exit__`)."""

    def __init__(
        self, name: str, retry_interval: float, on_error: Callable[[], None],
        servers_out: Callable[[], list[str]] = list,
    ) -> None:  # fmt: skip
        self.name = name
        self._servers_out = servers_out
        self.retry_interval = retry_interval
        self._on_error = on_error
        self._lock = threading.Lock()
        self._open = False
        self._retry_at = 0.0
        self._full = False
        self.episodes = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def allow(self) -> bool:
        """Whether a call may use the tier now (closed, or time to probe)."""
        return not self._open or time.monotonic() >= self._retry_at

    def __enter__(self) -> None:
        """Enter a block against the tier: raise :class:`TierSkipped` if it must not run.

        A plain context manager (not ``@contextmanager``) that tests the closed state
        first, without a call: it sits on every cache read."""
        if self._open and not self.allow():
            raise TierSkipped

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        """Close the circuit after a success; open it after a tier failure, raising
        :class:`TierSkipped` in its place. Other exceptions pass through."""
        if kind is None:
            if self._open:
                self.success()
            return False
        if isinstance(exc, CacheFullError):
            self.refused(exc)
            raise TierSkipped from exc
        if isinstance(exc, CacheUnavailableError):
            self.failure(exc)
            raise TierSkipped from exc
        return False

    def failure(self, exc: BaseException) -> None:
        self._on_error()
        with self._lock:
            first = not self._open
            self._open = True
            self._retry_at = time.monotonic() + self.retry_interval
            if first:
                self.episodes += 1
        if first:
            log.warning(
                "%s; reading from the origin until the cache returns (retry every %gs)",
                exc,
                self.retry_interval,
            )

    def refused(self, exc: CacheFullError) -> None:
        """A write refused for want of memory: the tier answers, so the circuit closes."""
        self._on_error()
        with self._lock:
            first, self._full = not self._full, True
        if first:
            log.warning(
                "%s; new data is not cached until the tier stores again "
                "(what it holds is still served)",
                exc,
            )
        if self._open:
            self.success()

    def stored(self) -> None:
        """A write succeeded: ends an episode of refused writes."""
        if not self._full:
            return
        with self._lock:
            was_full, self._full = self._full, False
        if was_full:
            log.warning("cache tier %s stores again; new data is cached", self.name)

    def success(self) -> None:
        with self._lock:
            was_open, self._open = self._open, False
        if not was_open:
            return
        out = self._servers_out()
        if out:  # the call that succeeded went to the servers that answer
            log.warning(
                "cache tier %s answers again, without %s (out of use until they answer); "
                "reads use the servers that answer",
                self.name,
                ", ".join(out),
            )
        else:
            log.warning("cache tier %s is back; reads use it again", self.name)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("CircuitBreaker is per process; rebuild it after unpickling")
