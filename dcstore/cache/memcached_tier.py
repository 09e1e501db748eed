"""The shared tier on Memcached: several servers, client-side consistent hashing.

URL::

    memcached://h1:11211,h2:11211,h3:11211[?options]

Options: ``namespace`` (key prefix, default ``dcstore``), ``socket_timeout``
(s, default 2), ``connect_timeout`` (s, default 1), ``dead_timeout`` (s a
failed server stays out of the ring, default 5), ``item_size_max`` (the
servers' ``-I``, default 1 MiB) and the
:class:`~dcstore.cache.tier.CachePolicy` options. ``chunk_bytes`` defaults
to half of ``item_size_max`` (memcached's own slab chunk limit) and must leave
:data:`ITEM_OVERHEAD` bytes of the item for the key and header.

Keys: ``<namespace>:{<object digest>}:<chunk>`` for chunks and
``<namespace>:{<digest>}:lease:<chunk>`` for leases, placed on a server by the
digest (:mod:`.memcached_client`), so an object's chunks come from one server
in one round trip; ``<namespace>:{stats:<namespace>}:<counter>`` for the shared
counters (all on one server: read in one round trip, and lost together if it restarts).
Leases are ``add`` (set if absent) with an expiry, released by a
compare-and-delete. Memory is bounded by each server's ``-m`` (its LRU evicts)
and, in this process, by fetching at most :data:`GET_BYTES` per request.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dcstore.backends.base import Buffer
from dcstore.backends.options import Options, ParsedUrl
from dcstore.cache.endpoints import check_namespace, check_timeouts, parse_host, query_string
from dcstore.cache.network_tier import NetworkTier, library_dirs
from dcstore.cache.tier import STAT_FIELDS, CachePolicy, MiB
from dcstore.errors import ConfigError

try:
    import pymemcache
    from pymemcache.exceptions import MemcacheError, MemcacheServerError

    from dcstore.cache.memcached_client import TaggedHashClient, list_keys
    from dcstore.cache.memcached_io import reply_capacity
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "the memcached cache tier needs pymemcache: pip install 'dcstore[memcached]'"
    ) from exc

SCHEME = "memcached"
DEFAULT_PORT = 11211
DEFAULT_ITEM_SIZE_MAX = 1 * MiB
ITEM_OVERHEAD = 1024
"""Bytes of an item kept free for its key, flags, CAS and header (memcached counts
them against ``-I``)."""

GET_BYTES = 16 * MiB
"""Chunks fetched per request (in bytes): bounds the reply held in this process."""

MAX_RELATIVE_EXPIRY = 30 * 24 * 3600
"""Memcached reads a larger expiry as an absolute Unix time."""


def expiry(seconds: float | None) -> int:
    """Memcached's expiry field for a lifetime of ``seconds`` (0 = never)."""
    if seconds is None:
        return 0
    whole = max(1, math.ceil(seconds))
    return whole if whole <= MAX_RELATIVE_EXPIRY else int(time.time()) + whole


CLEAR_PASSES = 5
"""Crawls per server in :meth:`MemcachedTier.clear` (the last one normally finds nothing)."""


class MemcachedTier(NetworkTier):
    """Chunks, leases and statistics spread over memcached servers; see the module docstring."""

    FAULTS = (MemcacheError, OSError, ValueError)  # ValueError: a garbled reply
    LIBRARIES = library_dirs(pymemcache)  # anything else pymemcache raises on a bad reply

    def __init__(
        self,
        hosts: Sequence[tuple[str, int]] = (("127.0.0.1", DEFAULT_PORT),),
        *,
        namespace: str = "dcstore",
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        dead_timeout: float = 5.0,
        item_size_max: int = DEFAULT_ITEM_SIZE_MAX,
        policy: CachePolicy | None = None,
    ):
        if not hosts:
            raise ConfigError("a memcached cache URL needs at least one host")
        check_timeouts(
            "memcached",
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            dead_timeout=dead_timeout,
        )
        _check_item_size(item_size_max)
        self.hosts = [(h, int(p)) for h, p in hosts]
        self.namespace = check_namespace(namespace)
        self.socket_timeout, self.connect_timeout = socket_timeout, connect_timeout
        self.dead_timeout, self.item_size_max = dead_timeout, item_size_max
        self.policy = policy or CachePolicy(chunk_bytes=item_size_max // 2)
        limit = item_size_max - ITEM_OVERHEAD
        if self.policy.chunk_bytes > limit:
            raise ConfigError(
                f"memcached chunk_bytes {self.policy.chunk_bytes} exceeds item_size_max "
                f"{item_size_max} minus {ITEM_OVERHEAD} bytes of item overhead ({limit}); "
                "lower chunk_bytes or raise item_size_max with the servers' -I"
            )
        self._init_state()

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> MemcachedTier:
        if url.scheme != SCHEME:
            raise ConfigError(f"not a memcached URL scheme: {url.scheme!r}")
        if url.username or url.password or url.path.strip("/"):
            raise ConfigError("a memcached URL takes hosts and options only (no user, no path)")
        item_size_max = _check_item_size(options.size("item_size_max", DEFAULT_ITEM_SIZE_MAX))
        chunk_given = "chunk_bytes" in url.query
        policy = CachePolicy.from_options(options)
        if not chunk_given:
            policy = dataclasses.replace(policy, chunk_bytes=item_size_max // 2)
        return cls(
            [parse_host(h, DEFAULT_PORT, "memcached") for h in url.hosts],
            namespace=options.text("namespace", "dcstore") or "dcstore",
            socket_timeout=options.number("socket_timeout", 2.0),
            connect_timeout=options.number("connect_timeout", 1.0),
            dead_timeout=options.number("dead_timeout", 5.0),
            item_size_max=item_size_max,
            policy=policy,
        )

    @property
    def url(self) -> str:
        query: dict[str, object | None] = dict(self.policy.query())
        query.pop("chunk_bytes", None)
        if self.policy.chunk_bytes != self.item_size_max // 2:  # else the default
            query["chunk_bytes"] = self.policy.chunk_bytes
        query.update(
            {
                "namespace": None if self.namespace == "dcstore" else self.namespace,
                "socket_timeout": None if self.socket_timeout == 2.0 else self.socket_timeout,
                "connect_timeout": None if self.connect_timeout == 1.0 else self.connect_timeout,
                "dead_timeout": None if self.dead_timeout == 5.0 else self.dead_timeout,
                "item_size_max": None
                if self.item_size_max == DEFAULT_ITEM_SIZE_MAX
                else self.item_size_max,
            }
        )
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        return f"{SCHEME}://{hosts}{query_string(query)}"

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> TaggedHashClient:
        return TaggedHashClient(
            self.hosts,
            connect_timeout=self.connect_timeout,
            timeout=self.socket_timeout,
            no_delay=True,
            retry_attempts=0,  # a failed server leaves the ring at once...
            dead_timeout=self.dead_timeout,  # ...and is retried after this
            default_noreply=False,
        )

    def _full(self, exc: BaseException) -> bool:
        return isinstance(exc, MemcacheServerError) and "out of memory" in str(exc)

    def _memcached(self) -> TaggedHashClient:
        client: TaggedHashClient = self._connection()
        return client

    def servers_out(self) -> list[str]:
        """The servers out of this process's ring (failed; retried after ``dead_timeout``,
        and out until they answer)."""
        client = self._client if self._pid == os.getpid() else None  # never connects
        out = [] if client is None else client.servers_out()
        return [f"{host}:{port}" for host, port in out]

    # -- the tier contract -----------------------------------------------------------

    def get_many(self, keys: Sequence[str], sizes: Sequence[int]) -> list[Buffer | None]:
        """``get`` requests of at most :data:`GET_BYTES` each to the server holding the
        object (its keys share a route), received in place (:mod:`.memcached_io`)
        into this thread's reused buffer."""
        step = max(1, GET_BYTES // self.policy.chunk_bytes)
        encoded = [self.key(k).encode() for k in keys]
        buf = self._buffers.get(reply_capacity(encoded, sizes))
        found: dict[bytes, tuple[int, int]] = {}
        end = 0
        with self._errors("get"):
            client = self._memcached()
            for i in range(0, len(keys), step):
                got, buf, end = client.get_into(self.key(keys[i]), encoded[i : i + step], buf, end)
                found.update(got)
        view = memoryview(buf)
        out: list[Buffer | None] = []
        for key, size in zip(encoded, sizes, strict=True):
            offset, length = found.get(key, (0, -1))
            out.append(view[offset : offset + length] if length == size else None)
        return out

    def get_slices(self, items: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """Memcached has no range reads: whole chunks are fetched and sliced here."""
        full = [self.key(k) for k, _, _ in items]
        with self._errors("get"):
            found = self._memcached().get_many(full)
        out: list[bytes | None] = []
        for key, (_, start, end) in zip(full, items, strict=True):
            value = found.get(key)
            out.append(value[start:end] if value is not None and len(value) >= end else None)
        return out

    def set_many(self, items: Sequence[tuple[str, Buffer]]) -> None:
        if not items:
            return
        values = {self.key(k): bytes(v) for k, v in items}
        with self._errors("set"):
            failed = self._memcached().set_many(values, expire=expiry(self.policy.ttl))
            if failed:
                raise MemcacheError(f"{len(failed)} of {len(values)} chunks not stored")

    def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with self._errors("delete"):
            self._memcached().delete_many([self.key(k) for k in keys])

    def try_leases(self, keys: Sequence[str], token: str, ttl: float) -> list[bool]:
        with self._errors("lease"):
            client = self._memcached()
            return [bool(client.add(self.key(k), token.encode(), expire=expiry(ttl))) for k in keys]

    def leases_held(self, keys: Sequence[str]) -> bool:
        with self._errors("lease check"):
            return bool(self._memcached().get_many([self.key(k) for k in keys]))

    def release_leases(self, keys: Sequence[str], token: str) -> None:
        """Delete each lease whose value is still ``token`` (read with its CAS, then a
        delete that only succeeds if nobody replaced it in between). A lease whose own
        server is out of the ring may sit there too: that is a :class:`MemcacheError`
        after the others are released, so the caller tries again once it returns."""
        away = 0
        with self._errors("lease release"):
            client = self._memcached()
            for key in (self.key(k) for k in keys):
                value, cas = client.gets(key)
                if value == token.encode() and cas is not None:
                    client.delete_if(key, int(cas))
                away += not client.at_home(key)
            if away:
                raise MemcacheError(f"{away} lease(s) may be on a server out of the ring")

    def _stat_key(self, name: str) -> str:
        return self.key(f"{{stats:{self.namespace}}}:{name}")

    def add_stats(self, counts: Mapping[str, int]) -> None:
        """``incr`` each counter; a missing one is created with ``add`` (or, if another
        process created it first, incremented after all)."""
        with self._errors("stats"):
            client = self._memcached()
            for name, value in counts.items():
                if value <= 0:
                    continue
                key = self._stat_key(name)
                if client.incr(key, value) is None and not client.add(key, str(value).encode()):
                    client.incr(key, value)

    def read_stats(self) -> dict[str, int]:
        with self._errors("stats"):  # a counter that is no number (written by others): a fault
            found = self._memcached().get_many([self._stat_key(n) for n in STAT_FIELDS])
            return {n: int(found.get(self._stat_key(n), 0)) for n in STAT_FIELDS}

    def server_info(self) -> dict[str, Any]:
        """Memory, item and eviction figures summed over the servers (all must answer)."""
        totals = dict.fromkeys(("used_memory", "maxmemory", "evicted_keys", "items"), 0)
        with self._errors("stats"):
            clients = self._memcached().server_clients()
            for client in clients.values():
                stats = client.stats()
                totals["used_memory"] += int(stats.get(b"bytes", 0))
                totals["maxmemory"] += int(stats.get(b"limit_maxbytes", 0))
                totals["evicted_keys"] += int(stats.get(b"evictions", 0))
                totals["items"] += int(stats.get(b"curr_items", 0))
        return {**totals, "maxmemory_policy": "memcached-lru", "nodes": len(clients)}

    def clear(self) -> int:
        """Delete every key of the namespace on every server, listed by the LRU crawler
        (``lru_crawler metadump``; every server must answer). A crawl is no snapshot: an
        item the server moves between its LRUs meanwhile (recently written ones, e.g. the
        shared counters) can be missed, so each server is crawled again until a crawl
        finds nothing left (at most :data:`CLEAR_PASSES` crawls), and the shared counters,
        whose names are known, are deleted by name as well."""
        prefix = self.key("")
        count = 0
        with self._errors("clear"):
            servers = self._memcached().server_clients()
            for host, port in self.hosts:
                server = servers[f"{host}:{port}"]
                for _ in range(CLEAR_PASSES):
                    keys = list_keys(host, port, prefix, self.socket_timeout)
                    if not keys:
                        break
                    count += sum(bool(server.delete(key)) for key in keys)
            client = self._memcached()  # the counters by name too: the newest items of all
            count += sum(bool(client.delete(self._stat_key(n), noreply=False)) for n in STAT_FIELDS)
        return count


def _check_item_size(item_size_max: int) -> int:
    if item_size_max < 1024:
        raise ConfigError(
            f"memcached item_size_max must be at least 1KiB (memcached's -I minimum), "
            f"got {item_size_max}"
        )
    return item_size_max
