"""Hit path of the Memcached tier vs a raw pymemcache loop on the same servers, and vs
the Redis tier on the same data.

    .venv/bin/python bench/cache_memcached_hit.py \
        --memcached memcached://127.0.0.1:11211,127.0.0.1:11212,127.0.0.1:11213 \
        --redis redis://127.0.0.1:6379/0 --size 64KiB,512KiB,4MiB --seconds 1 --rounds 3

For each object size, alternating within each round (one thread):

* ``raw``: pymemcache ``get_many`` of the object's chunk keys, straight from the server
  that holds them (a ``Client`` per server, no dcstore code): the client's ceiling;
* ``tier``: ``MemcachedTier.get_many`` of the same keys (key names, routing, size checks);
* ``memcached``: ``CachedBackend.get`` of the object through the Memcached tier: origin
  ``head`` (an in-memory origin, ~free) + the chunks + assembly;
* ``redis``: the same ``CachedBackend.get`` through the Redis tier, same ``chunk_bytes``;
* ``pinned``: ``CachedBackend.get(key, version=...)`` through the Memcached tier, as
  ShardedDataset reads a shard its manifest pins (no origin ``head``).

Prints medians (MB/s) and the ratios tier/raw, get/raw, pinned/raw (``raw``: pymemcache's
defaults, blocking sockets) and get/raw+timeout (the raw client with the tier's socket timeout)
as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial

from pymemcache.client.base import Client

from dcstore.backends.memory import MemoryBackend
from dcstore.cache import CachedBackend
from dcstore.cache.memcached_tier import MemcachedTier
from dcstore.testing.conformance import payload
from dcstore.units import parse_size


def rate(op: Callable[[], object], nbytes: int, seconds: float) -> float:
    """MB/s of ``op`` (each call moves ``nbytes``) over about ``seconds``."""
    op()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        op()
        n += 1
    return n * nbytes / elapsed / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memcached", required=True)
    ap.add_argument("--redis")
    ap.add_argument("--size", default="64KiB,512KiB,4MiB")
    ap.add_argument("--chunk-bytes", type=int, default=512 * 1024)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ns = f"bench{uuid.uuid4().hex[:8]}"
    query = f"namespace={ns}&chunk_bytes={args.chunk_bytes}&stats_interval=60"
    origin = MemoryBackend(f"bench-{ns}")
    stacks = {"memcached": CachedBackend(origin, f"{args.memcached}?{query}")}
    if args.redis:
        sep = "&" if "?" in args.redis else "?"
        stacks["redis"] = CachedBackend(origin, f"{args.redis}{sep}{query}")
    tier = stacks["memcached"].tier
    assert isinstance(tier, MemcachedTier)
    # pymemcache's defaults (blocking sockets), and the tier's own socket settings
    raw = {f"{h}:{p}": Client((h, p), no_delay=True) for h, p in tier.hosts}
    raw_timeouts = {
        f"{h}:{p}": Client((h, p), no_delay=True, timeout=tier.socket_timeout)
        for h, p in tier.hosts
    }
    print(
        "| object | chunks | raw MB/s | raw+timeout MB/s | tier MB/s | memcached get MB/s "
        "| redis get MB/s | pinned get MB/s | tier/raw | get/raw | pinned/raw | get/raw+timeout |"
    )
    print("|---" * 12 + "|")
    try:
        for text in args.size.split(","):
            size = parse_size(text)
            key = f"obj-{size}"
            data = payload(size)
            origin.put(key, data)
            for store in stacks.values():
                assert store.get(key) == data and store.get(key) == data  # fill, then a hit
            oid = stacks["memcached"]._object_id(key, origin.head(key))
            n = -(-size // args.chunk_bytes)
            names = [f"{{{oid}}}:{i}" for i in range(n)]
            sizes = [min(args.chunk_bytes, size - i * args.chunk_bytes) for i in range(n)]
            full = [tier.key(k) for k in names]
            host, port = tier._memcached()._get_client(full[0]).server  # where the tier reads
            raw_values = raw[f"{host}:{port}"].get_many(full)
            assert b"".join(raw_values[k] for k in full) == data
            ops: dict[str, Callable[[], object]] = {
                "raw": partial(raw[f"{host}:{port}"].get_many, full),
                "raw_timeouts": partial(raw_timeouts[f"{host}:{port}"].get_many, full),
                "tier": partial(tier.get_many, names, sizes),
                **{name: partial(s.get, key) for name, s in stacks.items()},
                "pinned": partial(stacks["memcached"].get, key, version=origin.head(key).version),
            }
            figures: dict[str, list[float]] = {name: [] for name in ops}
            for _ in range(args.rounds):
                for name, op in ops.items():
                    figures[name].append(rate(op, size, args.seconds))
            med = {name: statistics.median(v) for name, v in figures.items()}
            redis = f"{med['redis']:.0f}" if "redis" in med else "-"
            print(
                f"| {text} | {n} | {med['raw']:.0f} | {med['raw_timeouts']:.0f} "
                f"| {med['tier']:.0f} | {med['memcached']:.0f} | {redis} | {med['pinned']:.0f} "
                f"| {med['tier'] / med['raw']:.2f} | {med['memcached'] / med['raw']:.2f} "
                f"| {med['pinned'] / med['raw']:.2f} "
                f"| {med['memcached'] / med['raw_timeouts']:.2f} |"
            )
    finally:
        for store in stacks.values():
            store.tier.clear()


if __name__ == "__main__":
    main()
