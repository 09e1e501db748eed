"""``open_cache_tier(spec)``: a tier object, or the URL that names one.

* ``"memory"``, ``"lru"``, ``"memory://"``, ``"lru://?max_bytes=N"``: the
  in-process LRU (:class:`~dcstore.cache.lru.LruTier`), the embedded default.
* ``"redis://..."``, ``"rediss://..."``, ``"redis+cluster://h1:p1,h2:p2"``,
  ``"rediss+cluster://..."``: Redis (:class:`~dcstore.cache.redis_tier.RedisTier`).
* ``"memcached://h1:11211,h2:11211"``: Memcached servers with client-side
  consistent hashing (:class:`~dcstore.cache.memcached_tier.MemcachedTier`).

All accept the :class:`~dcstore.cache.tier.CachePolicy` options in the query
string (``chunk_bytes``, ``max_object_bytes``, ``ttl``, ``single_flight``, ...)
and ``namespace``; unknown options are a :class:`ConfigError`.
"""

from __future__ import annotations

from dcstore.backends.options import Options, parse_url
from dcstore.cache.lru import DEFAULT_MAX_BYTES, LruTier
from dcstore.cache.tier import CachePolicy, CacheTier
from dcstore.errors import ConfigError

LRU_SCHEMES = ("memory", "lru")
REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
MEMCACHED_SCHEMES = ("memcached",)


def open_cache_tier(spec: CacheTier | str) -> CacheTier:
    """Return ``spec`` if it is a tier, else open the tier its URL names."""
    if isinstance(spec, CacheTier):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"cache must be a cache tier or its URL, got {spec!r}")
    if spec in LRU_SCHEMES:
        spec += "://"
    url = parse_url(spec)
    options = Options(url.scheme, url.query, {})
    tier: CacheTier
    if url.scheme in LRU_SCHEMES:
        if url.netloc or url.path.strip("/"):
            raise ConfigError(f"the in-process cache takes no host or path: {spec!r}")
        tier = LruTier(
            max_bytes=options.size("max_bytes", DEFAULT_MAX_BYTES),
            namespace=options.text("namespace", "dcstore") or "dcstore",
            policy=CachePolicy.from_options(options),
        )
    elif url.scheme in REDIS_SCHEMES:
        from dcstore.cache.redis_tier import RedisTier

        tier = RedisTier.from_url(url, options)
    elif url.scheme in MEMCACHED_SCHEMES:
        from dcstore.cache.memcached_tier import MemcachedTier

        tier = MemcachedTier.from_url(url, options)
    else:
        schemes = (*LRU_SCHEMES, *REDIS_SCHEMES, *MEMCACHED_SCHEMES)
        accepted = ", ".join(f"{s}://" for s in schemes)
        if "://" not in spec:  # read as a path: a typo of "memory" or of a URL, say
            shown = spec if "@" not in spec else "...@" + spec.rpartition("@")[2]  # a password?
            raise ConfigError(f"unknown cache {shown!r}: give memory, or a URL: {accepted}")
        raise ConfigError(
            f"unknown cache scheme {url.scheme!r} (cache={url.safe(query={})}); "
            f"accepted: {accepted}"
        )
    options.finish()
    return tier
