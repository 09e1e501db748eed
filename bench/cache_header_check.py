"""What the cached-header check costs a first read: cached encrypted objects read through
a fresh stack (nothing remembered), median milliseconds per object.

    python bench/cache_header_check.py mongodb://127.0.0.1:27017/dcstore?bucket=hc \
        redis://127.0.0.1:6379/0?namespace=hc prepare
    PYTHONPATH=<checkout> python -P bench/cache_header_check.py ORIGIN CACHE <label>

``prepare`` writes ``--objects`` random objects of ``--mib`` MiB, encrypted, and reads them
once (the tier holds them); any other third argument times ``get``, a 200 kB
``get_range`` and ``head`` of each, ``--reps`` rounds, each through a new
``open_store`` (so every version's header is read again, as in a new process). Run it
alternately with two checkouts on ``PYTHONPATH`` to compare them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from dcstore.crypto.keyring import Keyring
from dcstore.crypto.sources import write_key_file
from dcstore.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("origin")
    parser.add_argument("cache")
    parser.add_argument("label", help="'prepare', or the name the timings are printed under")
    parser.add_argument("--objects", type=int, default=6)
    parser.add_argument("--mib", type=int, default=9)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--keys", default="/tmp/cache-header-check/kek.json")
    args = parser.parse_args()
    if not os.path.exists(args.keys):
        os.makedirs(os.path.dirname(args.keys), mode=0o700, exist_ok=True)
        write_key_file(args.keys, Keyring.generate("bench"))
    names = [f"header-check/o{i}" for i in range(args.objects)]
    if args.label == "prepare":
        store = open_store(args.origin, keys=args.keys, cache=args.cache)
        for name in names:
            store.put(name, os.urandom(args.mib << 20))
        for name in names:
            store.get(name)
        return
    reads = {
        "get": lambda s, k: s.get(k),
        "get_range": lambda s, k: s.get_range(k, 100, 200_000),
        "head": lambda s, k: s.head(k),
    }
    times: dict[str, list[float]] = {what: [] for what in reads}
    for _ in range(args.reps):
        for what, read in reads.items():
            store = open_store(args.origin, keys=args.keys, cache=args.cache)
            start = time.perf_counter()
            for name in names:
                read(store, name)
            times[what].append((time.perf_counter() - start) * 1000 / len(names))
    medians = {what: round(statistics.median(t), 1) for what, t in times.items()}
    print(args.label, medians)


if __name__ == "__main__":
    main()
