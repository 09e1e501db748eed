"""Hit path of the Redis tier vs ``redis-benchmark`` GET of the same size, same server, same run.

    .venv/bin/python bench/cache_vs_redis_benchmark.py --redis redis://127.0.0.1:6379/0 \
        --size 4MiB --seconds 5 --clients 1,2 --rounds 3 [--out bench/results/cache.md]

For each client count C it runs, alternating, ``rounds`` times:

* ``redis-benchmark -t set,get -d SIZE -c C`` (GET MB/s = rps x size),
* raw redis-py (+hiredis) GET of a SIZE value from C threads (the client's ceiling),
* ``CachedBackend.get`` of SIZE objects already in the tier from C threads: origin
  ``head`` (an in-memory origin, so it costs ~nothing) + MGET of the chunks +
  assembly; verified once per object.

and prints the medians as a Markdown table (dcstore / redis-benchmark ratio).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

import redis

from dcstore.backends.memory import MemoryBackend
from dcstore.cache import CachedBackend, open_cache_tier
from dcstore.units import parse_size


def redis_benchmark(host: str, port: int, size: int, clients: int, seconds: float) -> float:
    """GET MB/s measured by redis-benchmark (about ``seconds`` long)."""
    probe = _rb(host, port, size, clients, 20)
    n = max(50, int(probe * seconds))
    return _rb(host, port, size, clients, n) * size / 1e6


def _rb(host: str, port: int, size: int, clients: int, n: int) -> float:
    out = subprocess.run(
        [
            "redis-benchmark",
            "-h",
            host,
            "-p",
            str(port),
            "-t",
            "set,get",
            "-d",
            str(size),
            "-n",
            str(n),
            "-c",
            str(clients),
            "--csv",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for row in csv.DictReader(io.StringIO(out)):
        if row["test"] == "GET":
            return float(row["rps"])
    raise RuntimeError(f"no GET row in redis-benchmark output: {out!r}")


def threaded_rate(fn, threads: int, seconds: float, size: int) -> float:  # type: ignore[no-untyped-def]
    """MB/s of ``fn(i)`` (returning bytes of ``size``) called from ``threads`` threads."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        barrier.wait()
        i = t
        while time.perf_counter() < stop:
            fn(i)
            counts[t] += 1
            i += threads

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for p in pool:
        p.start()
    started = time.perf_counter()
    barrier.wait()
    for p in pool:
        p.join()
    return sum(counts) * size / (time.perf_counter() - started) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--size", default="4MiB")
    ap.add_argument("--chunk", default="", help="chunk_bytes (default: the tier default)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--out", help="append the Markdown table to this file")
    args = ap.parse_args()
    size = parse_size(args.size)
    parts = urlsplit(args.redis)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379

    ns = f"bench{uuid.uuid4().hex[:8]}"
    query = f"namespace={ns}" + (f"&chunk_bytes={parse_size(args.chunk)}" if args.chunk else "")
    tier_url = f"{args.redis}{'&' if '?' in args.redis else '?'}{query}"
    origin = MemoryBackend(f"bench-{ns}")
    store = CachedBackend(origin, tier_url)
    keys = [f"bench/{i:04d}.bin" for i in range(args.objects)]
    blobs = {}
    for i, key in enumerate(keys):
        blobs[key] = (bytes([i % 251]) * 4096) * (size // 4096) + b"x" * (size % 4096)
        store.put(key, blobs[key])
        assert store.get(key) == blobs[key]  # fill
        assert store.get(key) == blobs[key]  # verified hit
    raw = redis.Redis(host=host, port=port, db=int(parts.path.strip("/") or 0))
    raw_key = f"{ns}:raw"
    raw.set(raw_key, blobs[keys[0]])

    rows = []
    for clients in [int(c) for c in args.clients.split(",")]:
        rb, py, dc = [], [], []
        for _ in range(args.rounds):
            rb.append(redis_benchmark(host, port, size, clients, args.seconds))
            py.append(threaded_rate(lambda i: raw.get(raw_key), clients, args.seconds, size))
            dc.append(
                threaded_rate(lambda i: store.get(keys[i % len(keys)]), clients, args.seconds, size)
            )
        rows.append((clients, rb, py, dc))
    stats = store.stats()
    assert stats["misses"] == len(keys), stats  # every measured read was a hit
    store.flush_stats()
    open_cache_tier(tier_url).clear()
    raw.delete(raw_key)

    chunk = store.policy.chunk_bytes
    lines = [
        f"### Hit path, {args.size} objects, chunk_bytes={chunk} ({size // chunk or 1} chunk(s))",
        "",
        f"`{' '.join(['bench/cache_vs_redis_benchmark.py', *sys.argv[1:]])}`",
        "",
        f"Server {args.redis} (redis-server {raw.info()['redis_version']}), "
        f"{platform.node()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"median (min-max) of {args.rounds} alternating rounds of {args.seconds:g} s; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| clients/threads | redis-benchmark GET MB/s | redis-py GET MB/s "
        "| dcstore hit MB/s | dcstore / redis-benchmark |",
        "|---:|---:|---:|---:|---:|",
    ]
    for clients, rb, py, dc in rows:
        cells = [f"{statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})" for v in (rb, py, dc)]
        ratio = statistics.median(dc) / statistics.median(rb)
        lines.append(f"| {clients} | {' | '.join(cells)} | {ratio:.0%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
