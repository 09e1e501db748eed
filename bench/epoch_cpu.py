"""CPU per sample of ShardedDataset epochs, in one process or through a DataLoader, for profiling.

Reads the datasets ``loaders_compare.py`` writes (plaintext, or encrypted with
``--encrypted``), shuffled, and prints the CPU and wall time per sample of each epoch.
Without ``--workers`` the dataset is iterated in this process, touching each payload's
length. Run it so under a sampling profiler to see where a sample's CPU goes, e.g. with
Linux ``perf`` (native frames: the cipher, checksums, copies, page faults, the
interpreter), skipping the start-up and the first epoch::

    perf record -g -D 3000 -o /tmp/enc.data \
        .venv/bin/python bench/epoch_cpu.py --encrypted --epochs 6 --root /tmp/loaders-data
    perf report -i /tmp/enc.data --no-children --sort sym -g none -F sample,sym | sort -rn

With ``--workers N`` the epochs go through ``DataLoader(num_workers=N, batch_size=64)``
with ``loaders_compare.py``'s count-only collate (one byte read per page of each payload,
in the worker), as that benchmark's ``touch`` variant runs it, and the CPU is split:
the main process's, and the workers' user and system time (``RUSAGE_CHILDREN``; the
workers exit at the end of each epoch).

Usage: .venv/bin/python bench/epoch_cpu.py [--encrypted] [--prefetch-threads 1]
       [--zero-copy] [--workers N] [--epochs 3] [--root bench/results/tmp/loaders]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from dcstore.loaders import ShardedDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))


def in_process(ds: ShardedDataset) -> tuple[int, str]:
    cpu0, n = time.process_time(), 0
    for sample in ds:
        n += 1
        len(sample["bin"])
    return n, f"CPU {1e6 * (time.process_time() - cpu0) / n:.1f} us/sample"


def through_dataloader(ds: ShardedDataset, workers: int) -> tuple[int, str]:
    from loaders_compare import collate_touch
    from torch.utils.data import DataLoader

    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, n = time.process_time(), 0
    for batch in DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=collate_touch):
        n += int(batch[0])
    main = time.process_time() - cpu0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = kids1.ru_utime - kids0.ru_utime, kids1.ru_stime - kids0.ru_stime
    per = 1e6 / n
    return n, (
        f"CPU {per * (main + user + system):.1f} us/sample: main {per * main:.1f}, "
        f"workers {per * user:.1f} user + {per * system:.1f} system"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="bench/results/tmp/loaders")
    p.add_argument("--encrypted", action="store_true")
    p.add_argument("--prefetch-threads", type=int, default=None)
    p.add_argument("--zero-copy", action="store_true")
    p.add_argument("--workers", type=int, default=None, help="through a DataLoader")
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
        wall0 = time.perf_counter()
        if args.workers is None:
            n, cpu = in_process(ds)
        else:
            n, cpu = through_dataloader(ds, args.workers)
        wall = time.perf_counter() - wall0
        print(f"epoch {epoch}: {n} samples, {n / wall:,.0f} samples/s, {cpu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
