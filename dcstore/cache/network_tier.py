"""What the tiers on servers share: one lazily made client per process, key names,
failures mapped to :class:`CacheUnavailableError`, pickling without connections."""

from __future__ import annotations

import abc
import contextlib
import os
import threading
from typing import Any, Literal

from dcstore.cache.buffers import ReceiveBuffers
from dcstore.cache.tier import CacheFullError, CacheTier, CacheUnavailableError
from dcstore.errors import ConfigError

_DCSTORE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
"""dcstore's package directory: code of ours, whose exceptions are never a tier fault."""


def library_dirs(*modules: Any) -> tuple[str, ...]:
    """The directories of ``modules`` (packages), each ending with a separator, for
    :data:`NetworkTier.LIBRARIES`."""
    return tuple(os.path.dirname(m.__file__) + os.sep for m in modules)  # as co_filename has it


class NetworkTier(CacheTier):
    """A tier whose store is reached through a client object made by :meth:`_connect`.

    The client is made on first use, again in a forked child (a DataLoader worker must
    not share its parent's sockets) and after :meth:`close`; it is never pickled.
    """

    FAULTS: tuple[type[BaseException], ...] = (OSError,)
    """Exceptions of the client that mean the store failed (down, timeout, refused)."""
    LIBRARIES: tuple[str, ...] = ()
    """Directories of the client library's modules: any other exception raised in their
    code is a fault of the store too (see :meth:`_raised_by_client`)."""
    TRANSIENT: tuple[str, ...] = ("_lock", "_client", "_pid", "_buffers")
    """Attributes that are per process and never pickled."""

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = os.getpid()
        self._buffers = ReceiveBuffers()

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new client of the store (connections may open lazily)."""

    def _connection(self) -> Any:
        """This process's client, made on first use."""
        if self._pid != os.getpid():
            self._init_state()
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                client = self._client
        return client

    def _misconfigured(self, exc: BaseException) -> str | None:
        """What is wrong with the tier's settings if ``exc`` says so (not an outage:
        reading on from the origin would hide it), else None."""
        return None

    def _full(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the store refusing a write for want of memory."""
        return False

    def _on_fault(self) -> None:
        """Called when an operation failed, before the error is raised."""

    def _explain(self, exc: BaseException) -> str | None:
        """What a fault means for the tier's settings, in place of the client's own
        message (which may not say it), or None to show that message."""
        return None

    def _raised_by_client(self, exc: BaseException) -> bool:
        """Whether ``exc`` (not one of :data:`FAULTS`) was raised inside the client
        library's code: of its traceback's frames in the library (:data:`LIBRARIES`) or in
        dcstore, the innermost is the library's (a frame of the standard library that the
        library called, ``socket`` or ``ssl``, is the library's doing).

        The boundary: a server that answers, but not as its protocol says, can make a
        client library fail in ways it does not declare (redis-py 8 called ``.get`` on a
        handshake reply that was ``+OK``: ``AttributeError``), and a cache read must not
        fail for that. An exception raised in dcstore's own code (the tier, the receive
        paths of ``redis_io``/``resp``/``memcached_io``, which turn bad replies into the
        library's errors themselves) still propagates, so a bug of ours is not hidden
        as an outage. ``MemoryError`` and exceptions that are not ``Exception``
        (``KeyboardInterrupt``) are never a tier fault. A bug of dcstore that only shows
        inside the library (a wrong argument) is logged by the circuit breaker with its
        type and message, once per episode, and counted in ``errors``.
        """
        if not self.LIBRARIES or not isinstance(exc, Exception) or isinstance(exc, MemoryError):
            return False
        library = False  # whether the innermost frame of the library or of dcstore is the library's
        tb = exc.__traceback__
        while tb is not None:  # frames of the standard library (socket, ssl) count for neither
            name = tb.tb_frame.f_code.co_filename
            if name.startswith(self.LIBRARIES):
                library = True
            elif name.startswith(_DCSTORE):
                library = False
            tb = tb.tb_next
        return library

    def _errors(self, what: str) -> _FaultMap:
        """Map every failure of the store (:data:`FAULTS`) to :class:`CacheUnavailableError`."""
        return _FaultMap(self, what)

    def key(self, suffix: str) -> str:
        """The store's key of a namespace-relative key."""
        return f"{self.namespace}:{suffix}"

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self.TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()


class _FaultMap:
    """The context manager of :meth:`NetworkTier._errors`: a plain class, not
    ``@contextmanager``, as it is entered on every cache read."""

    __slots__ = ("tier", "what")

    def __init__(self, tier: NetworkTier, what: str):
        self.tier, self.what = tier, what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        if exc is None:
            return False
        if not isinstance(exc, self.tier.FAULTS) and not self.tier._raised_by_client(exc):
            return False
        problem = self.tier._misconfigured(exc)
        if problem is not None:
            raise ConfigError(f"cache tier {self.tier.url}: {problem}") from exc
        full = self.tier._full(exc)
        if not full:  # a full store answered: its connection is fine
            self.tier._on_fault()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        error = CacheFullError if full else CacheUnavailableError
        explained = self.tier._explain(exc)
        if explained is None:
            explained = f"{type(exc).__name__}: {detail}"
        raise error(f"cache tier {self.tier.url}: {self.what} failed: {explained}") from exc
