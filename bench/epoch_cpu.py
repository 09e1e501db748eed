"""CPU per sample of ShardedDataset epochs in one process (no DataLoader), for profiling.

Reads the datasets ``loaders_compare.py`` writes (plaintext, or encrypted with
``--encrypted``), shuffled, touching each payload's length, and prints the CPU and wall
time per sample of each epoch. Run it under a sampling profiler to see where a sample's
CPU goes, e.g. with Linux ``perf`` (native frames: the cipher, checksums, copies, page
faults, the interpreter), skipping the start-up and the first epoch::

    perf record -g -D 3000 -o /tmp/enc.data \
        .venv/bin/python bench/epoch_cpu.py --encrypted --epochs 6 --root /tmp/loaders-data
    perf report -i /tmp/enc.data --no-children --sort sym -g none -F sample,sym | sort -rn

Usage: .venv/bin/python bench/epoch_cpu.py [--encrypted] [--prefetch-threads 1]
       [--zero-copy] [--epochs 3] [--root bench/results/tmp/loaders]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dcstore.loaders import ShardedDataset


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="bench/results/tmp/loaders")
    p.add_argument("--encrypted", action="store_true")
    p.add_argument("--prefetch-threads", type=int, default=None)
    p.add_argument("--zero-copy", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    root = Path(args.root).resolve()
    ds = ShardedDataset(
        f"file://{root}/{'dcstore-enc' if args.encrypted else 'dcstore-plain'}",
        keys=f"file://{root}/kek.json" if args.encrypted else None,
        shuffle=True, seed=0, prefetch_threads=args.prefetch_threads, zero_copy=args.zero_copy,
    )  # fmt: skip
    for epoch in range(args.epochs):
        ds.set_epoch(epoch)
        cpu0, wall0, n, size = time.process_time(), time.perf_counter(), 0, 0
        for sample in ds:
            n += 1
            size += len(sample["bin"])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        per = f"CPU {1e6 * cpu / n:.1f} us/sample, wall {1e6 * wall / n:.1f} us/sample"
        print(f"epoch {epoch}: {n} samples, {size / 2**20:.0f} MiB, {per}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
