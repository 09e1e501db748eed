"""The embedded default tier: an in-process LRU bounded in bytes.

Shared by the threads of one process only; each DataLoader worker gets its
own empty copy (pickling keeps the configuration, not the contents).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dcstore.backends.base import Buffer
from dcstore.cache.tier import STAT_FIELDS, CachePolicy, CacheTier, MiB
from dcstore.errors import ConfigError

DEFAULT_MAX_BYTES = 256 * MiB
ENTRY_OVERHEAD = 240
"""Bytes of Python objects an entry costs beyond its value and key (the ``bytes`` and
``str`` headers, the tuple, the dict slot and list node: 253 bytes in all per entry of
a 2-byte value under a 46-character key, by ``tracemalloc``). Counted, so ``max_bytes``
bounds the memory held, many small values included (200,000 of them held 52 MiB under
a 1 MiB limit when only values were counted)."""


class LruTier(CacheTier):
    """Least-recently-used chunks in this process, at most ``max_bytes`` in total: each
    entry counts its value, its key and :data:`ENTRY_OVERHEAD` (one entry alone may pass
    the limit by its key and overhead, so a chunk of ``max_bytes`` is still cached).

    A value larger than ``max_bytes`` is not stored. TTLs from the policy are honoured
    on read.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        policy: CachePolicy | None = None,
        namespace: str = "dcstore",
    ):
        if max_bytes < 1:
            raise ConfigError(
                f"max_bytes must be at least 1 (got {max_bytes}: a cache that holds nothing; "
                "to read without a cache, give none)"
            )
        self.max_bytes = max_bytes
        self.policy = policy or CachePolicy()
        self.namespace = namespace
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        """key -> (value, expiry)."""
        self._bytes = 0
        self._leases: dict[str, tuple[str, float]] = {}
        self._stats: defaultdict[str, int] = defaultdict(int)

    @property
    def url(self) -> str:
        query = {"max_bytes": str(self.max_bytes), **self.policy.query()}
        if self.namespace != "dcstore":
            query["namespace"] = self.namespace
        return "lru://?" + "&".join(f"{k}={v}" for k, v in sorted(query.items()))

    @property
    def used_bytes(self) -> int:
        """Bytes held now: values, keys and :data:`ENTRY_OVERHEAD` per entry."""
        return self._bytes

    def get_many(
        self, keys: Sequence[str], sizes: Sequence[int], exact: bool = True
    ) -> list[Buffer | None]:
        now = time.monotonic()
        out: list[Buffer | None] = []
        with self._lock:
            for key, size in zip(keys, sizes, strict=True):
                item = self._items.get(key)
                if item is not None and item[1] is not None and item[1] <= now:
                    self._drop(key)
                    item = None
                if item is None or (exact and len(item[0]) != size):
                    out.append(None)
                    continue
                self._items.move_to_end(key)
                out.append(item[0])
        return out

    def get_slices(self, items: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        values = self.get_many([k for k, _, _ in items], [-1] * len(items), exact=False)
        return [
            None if v is None else bytes(memoryview(v)[a:b])
            for v, (_, a, b) in zip(values, items, strict=True)
        ]

    def set_many(self, items: Sequence[tuple[str, Buffer]]) -> None:
        ttl = self.policy.ttl
        expires = None if ttl is None else time.monotonic() + ttl
        with self._lock:
            for key, value in items:
                blob = bytes(value)
                self._drop(key)
                if len(blob) > self.max_bytes:
                    continue
                self._items[key] = (blob, expires)
                self._bytes += _cost(key, blob)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= _cost(key, item[0])

    def delete_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._drop(key)

    def try_leases(self, keys: Sequence[str], token: str, ttl: float) -> list[bool]:
        now = time.monotonic()
        out = []
        with self._lock:
            for key in keys:
                held = self._leases.get(key)
                free = held is None or held[1] <= now
                if free:
                    self._leases[key] = (token, now + ttl)
                out.append(free)
        return out

    def leases_held(self, keys: Sequence[str]) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(self._leases.get(k, ("", 0.0))[1] > now for k in keys)

    def release_leases(self, keys: Sequence[str], token: str) -> None:
        with self._lock:
            for key in keys:
                if self._leases.get(key, ("", 0.0))[0] == token:
                    del self._leases[key]

    def add_stats(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for name, value in counts.items():
                self._stats[name] += value

    def read_stats(self) -> dict[str, int]:
        with self._lock:
            return {name: self._stats[name] for name in STAT_FIELDS}

    def clear(self) -> int:
        with self._lock:
            count = len(self._items)
            self._items.clear()
            self._bytes = 0
            self._leases.clear()
            self._stats.clear()
            return count

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes, "policy": self.policy, "namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()


def _cost(key: str, value: bytes) -> int:
    """What an entry counts against ``max_bytes``."""
    return len(value) + len(key) + ENTRY_OVERHEAD
