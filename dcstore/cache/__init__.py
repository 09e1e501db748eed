"""The hot tier: a bounded, shared, read-through cache in front of any backend.

``CachedBackend(inner, cache)`` wraps a :class:`~dcstore.backends.base.Backend`;
``open_cache_tier(spec)`` opens the in-process LRU (``"memory"``, the
embedded default), Redis (``"redis://host:6379/0"``, ``"rediss://..."``,
``"redis+cluster://h1:p1,h2:p2"``) or Memcached (``"memcached://h1:11211,h2:11211"``).
See ``docs/cache.md``.
"""

from dcstore.cache.backend import CachedBackend
from dcstore.cache.lru import LruTier
from dcstore.cache.spec import open_cache_tier
from dcstore.cache.tier import (
    STAT_FIELDS,
    CacheFullError,
    CachePolicy,
    CacheTier,
    CacheUnavailableError,
    with_ratio,
)

__all__ = [
    "STAT_FIELDS",
    "CacheFullError",
    "CachePolicy",
    "CacheTier",
    "CacheUnavailableError",
    "CachedBackend",
    "LruTier",
    "open_cache_tier",
    "with_ratio",
]
