"""Loader epochs: epoch 1 from a slow origin, epoch 2 served by the Redis tier.

    .venv/bin/python bench/cache_loader.py --redis redis://127.0.0.1:6379/0 \
        --samples 4000 --sample-size 100KiB --shard-size 16MiB --workers 2 \
        --latency 0.02 --bandwidth 200 [--out FILE]

Packs an encrypted dataset into a local directory, then runs
``ShardedDataset(open_store(InstrumentedBackend(dir), cache=redis, keys=kek), shuffle=True)``
batched in the worker (256 samples, a cheap collate) under a ``DataLoader``.
Epoch 1 starts with an empty namespace (every shard comes from the slow origin
and is cached); epochs 2.. are served by Redis. A third column runs the same
epochs with no cache at all for reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_vs_redis_benchmark import parse_size

from dcstore.backends.local import LocalBackend
from dcstore.cache import open_cache_tier
from dcstore.store import open_store
from dcstore.testing.instrumented import InstrumentedBackend, logged_bytes


def count_batch(samples: list[dict[str, Any]]) -> int:
    """A collate that touches every sample and sends back only a count."""
    return sum(len(s["bin"]) for s in samples) and len(samples)


def epochs(root: str, keys: str, cache: str | None, args: argparse.Namespace, log: str) -> list:
    from torch.utils.data import DataLoader

    from dcstore.loaders.dataset import ShardedDataset

    origin = InstrumentedBackend(
        LocalBackend(root), latency=args.latency, bandwidth=args.bandwidth * 1e6, log=log
    )
    store = open_store(origin, cache=cache, keys=keys)
    ds = ShardedDataset(store, shuffle=True, seed=0, prefetch_threads=args.prefetch_threads)
    ds = ds.batched(256, count_batch)
    loader = DataLoader(ds, batch_size=None, num_workers=args.workers)
    rows = []
    for epoch in range(args.epochs):
        ds.set_epoch(epoch)
        before = logged_bytes(log)
        started = time.perf_counter()
        n = sum(loader)
        took = time.perf_counter() - started
        assert n == args.samples, n
        rows.append((epoch + 1, n / took, took, logged_bytes(log) - before))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--sample-size", default="100KiB")
    ap.add_argument("--shard-size", default="16MiB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch-threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds per origin read")
    ap.add_argument("--bandwidth", type=float, default=200, help="origin MB/s per read")
    ap.add_argument("--chunk", default="", help="chunk_bytes of the tier (default: its default)")
    ap.add_argument("--out")
    args = ap.parse_args()

    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import ShardWriter

    size = parse_size(args.sample_size)
    with tempfile.TemporaryDirectory(prefix="dcstore-loader-bench-") as tmp:
        keyfile = Path(tmp) / "kek.json"
        write_key_file(keyfile, Keyring.generate())
        keys = f"file://{keyfile}"
        root = os.path.join(tmp, "origin")
        blob = os.urandom(size)
        with ShardWriter(root, keys=keys, shard_size=parse_size(args.shard_size)) as w:
            for i in range(args.samples):
                w.write({"__key__": f"s{i:07d}", "bin": blob, "cls": i % 1000})
        dataset_bytes = sum(m.size for m in LocalBackend(root).list_objects("shards/"))
        ns = f"loader{uuid.uuid4().hex[:8]}"
        cache = f"{args.redis}{'&' if '?' in args.redis else '?'}namespace={ns}"
        if args.chunk:
            cache += f"&chunk_bytes={parse_size(args.chunk)}"
        log = os.path.join(tmp, "origin.log")
        cached = epochs(root, keys, cache, args, log)
        stats = open_cache_tier(cache).read_stats()
        open_cache_tier(cache).clear()
        plain = epochs(root, keys, None, args, log + ".nocache")

    cmd = " ".join(["bench/cache_loader.py", *sys.argv[1:]])
    lines = [
        f"### Loader epochs: {args.samples} x {args.sample_size} samples, encrypted, "
        f"{args.workers} workers, batch 256 in the worker",
        "",
        f"`{cmd}`",
        "",
        f"Origin: local dir + {args.latency * 1000:g} ms/read + {args.bandwidth:g} MB/s cap "
        f"(dataset {dataset_bytes / 1e6:.0f} MB of shards); Redis {args.redis}; "
        f"{platform.node()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| epoch | with Redis tier: samples/s | origin MB read | no cache: samples/s "
        "| origin MB read |",
        "|---:|---:|---:|---:|---:|",
    ]
    for (e, rate, _, ob), (_, prate, _, pob) in zip(cached, plain, strict=True):
        lines.append(f"| {e} | {rate:,.0f} | {ob / 1e6:.0f} | {prate:,.0f} | {pob / 1e6:.0f} |")
    lines.append("")
    lines.append(
        f"Tier counters after the cached run: hits {stats['hits']}, misses {stats['misses']}, "
        f"errors {stats['errors']}."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
