"""Origin requests per epoch: an encrypted dataset behind a cache, counted at the origin.

    python bench/origin_requests.py file:///tmp/origin-bench --cache redis://127.0.0.1:6379/0
    python bench/origin_requests.py cassandra://127.0.0.1:9042/dcstore_bench --cache memory

Packs a small dataset (``--samples`` of ``--sample-kib``) through
Encrypted -> Cached -> Counting(origin), then reads ``--epochs`` shuffled epochs with
``ShardedDataset`` (one process) and prints, per epoch, the origin's ``head``, ``get``
and ``get_range`` requests. The counting wrapper forwards any keyword, so the script
runs unchanged against versions of dcstore before ``version=`` existed.
"""

from __future__ import annotations

import argparse
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from dcstore import ShardedDataset, ShardWriter
from dcstore.backends.base import Backend, Buffer, ObjectMeta
from dcstore.cache.backend import CachedBackend
from dcstore.crypto import Keyring
from dcstore.crypto.backend import EncryptedBackend
from dcstore.store import open_backend


class Counting(Backend):
    """Counts the requests that reach ``inner``."""

    def __init__(self, inner: Backend):
        self.inner, self.counts, self._lock = inner, Counter[str](), threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    @property
    def url(self) -> str:
        return self.inner.url

    def get(self, key: str, **kw: Any) -> bytes:
        self._count("get")
        return self.inner.get(key, **kw)

    def get_range(self, key: str, start: int, end: int, **kw: Any) -> bytes:
        self._count("get_range")
        return self.inner.get_range(key, start, end, **kw)

    def head(self, key: str, **kw: Any) -> ObjectMeta:
        self._count("head")
        return self.inner.head(key, **kw)

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        return self.inner.put(key, data)

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self.inner.list_objects(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("origin", help="store URL (a fresh prefix is used under it)")
    parser.add_argument("--cache", default="memory", help="cache tier URL (default: memory)")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--sample-kib", type=int, default=64)
    parser.add_argument("--shard-mib", type=float, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    fresh = uuid.uuid4().hex[:8]
    if args.origin.startswith("mongodb://"):  # a fresh database (names hold no "/")
        root = f"{args.origin.rstrip('/')}_{fresh}"
    else:
        root = f"{args.origin.rstrip('/')}/bench-{fresh}"
    origin = Counting(open_backend(root))
    store = EncryptedBackend(CachedBackend(origin, args.cache), Keyring.generate())
    with ShardWriter(store, shard_size=int(args.shard_mib * 2**20)) as writer:
        for i in range(args.samples):
            writer.write({"__key__": f"s{i:06d}", "bin": bytes([i % 251]) * args.sample_kib * 1024})
    ds = ShardedDataset(store, shuffle=True, seed=0)
    print(f"{root}  cache={args.cache}  shards={len(ds.manifest.shards)}  samples={args.samples}")
    print(f"{'epoch':>5} {'head':>6} {'get':>6} {'get_range':>10}")
    for epoch in range(args.epochs):
        origin.counts.clear()
        ds.set_epoch(epoch)
        assert sum(1 for _ in ds) == args.samples
        c = origin.counts
        print(f"{epoch:>5} {c['head']:>6} {c['get']:>6} {c['get_range']:>10}")
    for meta in list(origin.list_objects()):
        origin.delete(meta.key)


if __name__ == "__main__":
    main()
