"""Per-operation interleaved comparison of dcstore and raw pymongo on the same objects.

On a noisy shared machine, case-by-case benchmarks drift by tens of percent between
cases. Here every operation of one stack is immediately followed by the same
operation of the other stacks on the same object (order rotating), on the same
number of threads, so drift hits all alike; the ratio of medians isolates the
cost of the dcstore layer. Stacks (see ``bench/mongodb_vs_raw.py``): ``raw-id``
(plain pymongo, same layout and queries), ``raw-gridfs`` (pymongo GridFSBucket;
4 MiB objects only on FerretDB), ``backend`` (MongoBackend) and ``dcstore``
(``open_store``: MongoBackend behind RetryingBackend). Example::

    .venv/bin/python bench/mongodb_interleaved.py mongodb://127.0.0.1:27017/bench \\
        --size 4MiB --objects 4 --rounds 20 --threads 1,4 --stacks raw-id,backend,dcstore
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mongodb_vs_raw import RawGridFS

from dcstore.backends.base import Backend
from dcstore.backends.mongodb import MongoBackend
from dcstore.backends.registry import open_backend
from dcstore.store import open_store
from dcstore.units import parse_size


def open_stacks(url: str, names: list[str]) -> dict[str, Backend]:
    like = open_backend(url)
    assert isinstance(like, MongoBackend)
    makers: dict[str, Callable[[], Backend]] = {
        "raw-id": lambda: RawGridFS(like, "id"),
        "raw-gridfs": lambda: RawGridFS(like, "gridfs"),
        "backend": lambda: open_backend(url),
        "dcstore": lambda: open_store(url),
    }
    return {name: makers[name]() for name in names}


def run(
    stacks: dict[str, Backend], op: str, keys: list[str], data: bytes, rounds: int, threads: int
):
    times: dict[str, list[float]] = {name: [] for name in stacks}
    lock = threading.Lock()
    names = list(stacks)

    def worker(tid: int) -> None:
        mine: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            key = keys[(tid + r) % len(keys)]
            shift = (tid + r) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                if op == "get":
                    assert stacks[name].get(key) == data
                else:
                    stacks[name].put(key, data)
                mine[name].append(time.perf_counter() - t0)
        with lock:
            for name in names:
                times[name].extend(mine[name])

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--size", default="4MiB")
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=20, help="operations per stack per thread")
    ap.add_argument("--threads", default="1,4")
    ap.add_argument("--ops", default="get,put")
    ap.add_argument("--stacks", default="raw-id,backend,dcstore")
    args = ap.parse_args()
    size = parse_size(args.size)
    names = args.stacks.split(",")
    stacks = open_stacks(args.url, names)
    data = os.urandom(size)
    keys = [f"interleaved/{size}/{i}" for i in range(args.objects)]
    for key in keys:
        stacks[names[-1]].put(key, data)
    base = names[0]
    print(f"{args.url}  size={args.size} objects={args.objects} rounds={args.rounds}")
    print(
        "| op | threads | stack | ops | median ms | p90 ms | MB/s (1/median) | median vs "
        + base
        + " |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for op in args.ops.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            times = run(stacks, op, keys, data, args.rounds, threads)
            ref = statistics.median(times[base])
            for name in names:
                t = sorted(times[name])
                med = statistics.median(t)
                p90 = t[min(len(t) - 1, int(0.9 * len(t)))]
                print(
                    f"| {op} | {threads} | {name} | {len(t)} | {med * 1e3:.0f} | {p90 * 1e3:.0f} | "
                    f"{size / med / 1e6 * threads:.1f} | {ref / med:.3f} |"
                )
    for key in keys:
        stacks[names[-1]].delete(key)
    for stack in stacks.values():
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
