"""Two (or more) processes read the same dataset at once through one Redis tier.

    .venv/bin/python bench/cache_single_flight.py --redis redis://127.0.0.1:6379/0 \
        --objects 32 --size 4MiB --processes 2 --latency 0.02 --bandwidth 200 [--out FILE]

The origin is a local directory behind :class:`InstrumentedBackend` (latency per request
plus a bandwidth cap), logging every origin read. Each run starts with an empty
namespace; every process reads every object once, in the same order, starting at
the same instant (the worst case for duplicate fetches). Reported: origin bytes
read / dataset size, with single-flight on and off, and each run's wall time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_vs_redis_benchmark import parse_size

from dcstore.backends.local import LocalBackend
from dcstore.cache import CachedBackend, open_cache_tier
from dcstore.testing.instrumented import InstrumentedBackend, logged_bytes


def reader(
    root: str, cache: str, log: str, start_at: float, latency: float, bw: float, keys: str
) -> None:
    """Read every object once (plain mode) or one loader epoch (``keys`` given)."""
    origin = InstrumentedBackend(LocalBackend(root), latency=latency, bandwidth=bw, log=log)
    if keys:
        from dcstore.loaders.dataset import ShardedDataset
        from dcstore.store import open_store

        store = open_store(origin, cache=cache, keys=keys)
        ds = ShardedDataset(store, shuffle=False)
        while time.time() < start_at:
            time.sleep(0.0005)
        assert sum(1 for _ in ds) == len(ds)
    else:
        store = CachedBackend(origin, cache)
        names = [m.key for m in origin.list_objects("")]
        while time.time() < start_at:
            time.sleep(0.0005)
        for name in names:
            store.get(name)
    store.close()


def run(
    args: argparse.Namespace, root: str, single_flight: bool, keys: str
) -> tuple[float, float, dict]:
    ns = f"sf{uuid.uuid4().hex[:8]}"
    cache = f"{args.redis}?namespace={ns}&single_flight={str(single_flight).lower()}"
    log = os.path.join(root, f".log-{ns}")
    start_at = time.time() + 3.0  # after every interpreter has started
    ctx = multiprocessing.get_context("spawn")
    bw = args.bandwidth * 1e6
    procs = [
        ctx.Process(target=reader, args=(root, cache, log, start_at, args.latency, bw, keys))
        for _ in range(args.processes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    wall = time.time() - start_at
    tier = open_cache_tier(cache)
    stats = tier.read_stats()
    tier.clear()
    total = logged_bytes(log)
    os.unlink(log)
    return total, wall, stats


def pack(tmp: str, root: str, total: int, shard_size: int) -> str:
    """An encrypted dataset of 100 KiB samples, ``total`` bytes; returns its key URL."""
    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import ShardWriter

    keyfile = Path(tmp) / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    blob = os.urandom(100 * 1024)
    with ShardWriter(root, keys=f"file://{keyfile}", shard_size=shard_size) as writer:
        for i in range(total // len(blob)):
            writer.write({"__key__": f"s{i:07d}", "bin": blob})
    return f"file://{keyfile}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--objects", type=int, default=32)
    ap.add_argument("--size", default="4MiB")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds per origin read")
    ap.add_argument("--bandwidth", type=float, default=200, help="origin MB/s per read")
    ap.add_argument(
        "--loader",
        action="store_true",
        help="pack the objects' bytes as an encrypted dataset (shards of --size) and read one "
        "ShardedDataset epoch per process instead of plain gets",
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="dcstore-sf-") as tmp:
        root = os.path.join(tmp, "origin")
        keys = pack(tmp, root, args.objects * size, size) if args.loader else ""
        if not args.loader:
            for i in range(args.objects):
                LocalBackend(root).put(f"ds/{i:04d}.bin", os.urandom(size))
        dataset = sum(
            m.size for m in LocalBackend(root).list_objects("ds/" if not keys else "shards/")
        )
        results = {sf: run(args, root, sf, keys) for sf in (True, False)}
    cmd = " ".join(["bench/cache_single_flight.py", *sys.argv[1:]])
    lines = [
        f"### {args.processes} processes read one {args.objects} x {args.size} dataset at once"
        + (" (one encrypted ShardedDataset epoch each)" if args.loader else ""),
        "",
        f"`{cmd}`",
        "",
        f"Origin: local dir + {args.latency * 1000:g} ms/read + {args.bandwidth:g} MB/s cap; Redis "
        f"{args.redis}; {platform.node()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| single-flight | origin bytes / dataset | wall s | hits | misses | single-flight waits |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for sf, (total, wall, stats) in results.items():
        lines.append(
            f"| {'on' if sf else 'off'} | {total / dataset:.3f} | {wall:.2f} | {stats['hits']} "
            f"| {stats['misses']} | {stats['single_flight_waits']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
