"""pymemcache's consistent-hashing client, routed by hash tag, plus what it lacks.

:class:`TaggedHashClient` is pymemcache's :class:`~pymemcache.client.hash.HashClient`
(rendezvous hashing: adding or losing a server moves only that server's keys;
a failed server leaves the ring for ``dead_timeout`` seconds and its keys
become misses on the others) that places a key by its ``{tag}`` when it has
one, so all chunks of an object version live on one server and one
``get_multi`` fetches them. The helpers speak memcached commands pymemcache
has no method for: a compare-and-delete (meta ``md`` with a CAS) and a
listing of keys (``lru_crawler metadump``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from dcstore.cache.memcached_io import get_into

ROUTES_KEPT = 1 << 16
"""Placements remembered (then forgotten all at once)."""


def route_of(key: str) -> str:
    """The part of ``key`` that places it: the first ``{...}`` tag, else the whole key."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


class TaggedHashClient(HashClient):  # type: ignore[misc]  # pymemcache is untyped
    """A pooled HashClient that places every key by :func:`route_of`, remembers
    placements until the ring changes, and receives large values in place."""

    def __init__(self, servers: Any, **kwargs: Any):
        self._routes: dict[str, Any] = {}
        # pymemcache changes its ring and its failed/dead bookkeeping without a lock: two
        # threads bringing a server back both deleted it from the dead ones (KeyError)
        self._ring_lock = threading.RLock()
        self._on_trial: set[Any] = set()  # back in the ring after dead_timeout, not yet heard
        super().__init__(servers, use_pooling=True, **kwargs)
        self._homes = RendezvousHash(nodes=list(self.clients))  # the ring with every server

    def add_server(self, server: Any, port: Any = None) -> None:
        with self._ring_lock:
            self._routes = {}
            super().add_server(server, port)

    def remove_server(self, server: Any, port: Any = None) -> None:
        with self._ring_lock:
            name = server if port is None else (server, port)
            if name in self._dead_clients:  # another thread took it out of the ring already
                self._failed_clients.pop(name, None)  # what this thread's failure recorded
                return
            self._routes = {}
            self._failed_clients.setdefault(name, {})
            super().remove_server(server, port)

    def _retry_dead(self) -> None:
        with self._ring_lock:
            dead = set(self._dead_clients)
            super()._retry_dead()
            self._on_trial |= dead - set(self._dead_clients)

    def servers_out(self) -> list[Any]:
        """The servers out of the ring, and those on trial that have not answered since
        (a killed server is put back every ``dead_timeout`` until it answers)."""
        with self._ring_lock:
            return [*self._dead_clients, *(self._on_trial - set(self._dead_clients))]

    def _answered(self, server: Any) -> None:
        if server in self._on_trial and server not in self._dead_clients:
            with self._ring_lock:
                self._on_trial.discard(server)

    @contextlib.contextmanager
    def _request_to(self, server: Any, closed: tuple[type[Exception], ...]) -> Iterator[None]:
        """One request to ``server``: an error of ``closed`` (the connection closed or
        refused: a killed server) takes it out of the ring at once; an answer ends its
        trial."""
        try:
            yield
        except closed:
            self._mark_failed_server(server)
            raise
        self._answered(server)

    def _safely_run_func(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        # a refused connection (OSError) pymemcache marks failed itself
        with self._request_to(client.server, (MemcacheUnexpectedCloseError,)):
            return super()._safely_run_func(client, *args, **kwargs)

    def _safely_run_set_many(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        with self._request_to(client.server, (MemcacheUnexpectedCloseError,)):
            return super()._safely_run_set_many(client, *args, **kwargs)

    def _mark_failed_server(self, server: Any) -> None:
        with self._ring_lock:
            super()._mark_failed_server(server)

    def _get_client(self, key: str) -> Any:
        if self._dead_clients:
            self._retry_dead()  # may put a server back: then the routes are forgotten
        route = route_of(key)
        client = self._routes.get(route)
        if client is None:
            client = super()._get_client(route)  # rendezvous hashing, in Python: slow
            if client is not None:
                if len(self._routes) >= ROUTES_KEPT:
                    self._routes = {}
                self._routes[route] = client
        return client

    def get_into(
        self, route: str, keys: list[bytes], buf: bytearray, start: int
    ) -> tuple[dict[bytes, tuple[int, int]], bytearray, int]:
        """:func:`~dcstore.cache.memcached_io.get_into` of ``keys`` (encoded), which share
        the route of ``route`` (one of them); a server that cannot be reached leaves the
        ring, as in the other commands."""
        client = self._get_client(route)
        if client is None:
            raise MemcacheError("all memcached servers are down")
        with self._request_to(client.server, (OSError, MemcacheUnexpectedCloseError)):
            return get_into(client, keys, buf, start)

    def at_home(self, key: str) -> bool:
        """Whether ``key`` is placed now on the server it has with every server up (not
        moved to another while its own is out of the ring)."""
        client = self._get_client(key)
        return client is not None and client is self.clients[self._homes.get_node(route_of(key))]

    def server_clients(self) -> dict[str, Any]:
        """``"host:port"`` -> the (pooled) client of every configured server, dead or alive."""
        return dict(self.clients)

    def delete_if(self, key: str, cas: int) -> bool:
        """Delete ``key`` only while its CAS is still ``cas`` (memcached >= 1.6 meta delete)."""
        client = self._get_client(key)
        if client is None:
            return False
        reply = client.raw_command(f"md {key} C{cas}".encode())
        if reply not in (b"HD", b"NF", b"EX"):
            raise MemcacheError(f"unexpected reply to meta delete: {reply[:80]!r}")
        return bool(reply == b"HD")


def list_keys(host: str, port: int, prefix: str, timeout: float) -> list[str]:
    """Every key of one server that starts with ``prefix`` (``lru_crawler metadump all``)."""
    keys = []
    for line in crawled(host, port, timeout).splitlines():
        if line.startswith(b"key="):
            key = unquote(line[4:].split(b" ", 1)[0].decode("ascii", "replace"))
            if key.startswith(prefix):
                keys.append(key)
    return keys


def crawled(host: str, port: int, timeout: float) -> bytes:
    """The complete ``lru_crawler metadump all`` reply of one server. The crawler serves
    one request at a time; a busy crawler is retried for ~5 s."""
    for _ in range(50):
        raw = _metadump(host, port, timeout)
        if not raw.startswith(b"BUSY"):
            break
        time.sleep(0.1)
    else:
        raise MemcacheError(f"the LRU crawler of {host}:{port} stayed busy; try again")
    if not raw.endswith(b"END\r\n"):
        raise MemcacheError(f"key listing refused by {host}:{port}: {raw.splitlines()[0][:80]!r}")
    return raw


def _metadump(host: str, port: int, timeout: float) -> bytes:
    """The whole reply to ``lru_crawler metadump all`` (or its one-line refusal)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        parts: list[bytes] = []
        tail = b""
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise MemcacheError(f"{host}:{port} closed the connection during a key listing")
            parts.append(data)
            tail = (tail + data)[-64:]
            if tail.endswith(b"END\r\n") or (
                len(parts) == 1 and data.endswith(b"\r\n") and not data.startswith(b"key=")
            ):
                return b"".join(parts)
