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
workers exit at the end of each epoch). With ``--persistent`` too, one
``DataLoader(persistent_workers=True)`` serves every epoch and the workers' CPU is read
from ``/proc/<pid>/stat`` of this process's children: run it so under ``perf record -a
-D <ms>`` to see the steady state, where the workers' memory is already faulted in.

Usage: .venv/bin/python bench/epoch_cpu.py [--encrypted] [--prefetch-threads 1]
       [--zero-copy] [--workers N [--persistent]] [--epochs 3]
       [--root bench/results/tmp/loaders]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from dcstore.loaders import ShardedDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))


def in_process(ds: ShardedDataset) -> tuple[int, str]:
    cpu0, n = time.process_time(), 0
    for sample in ds:
        n += 1
        len(sample["bin"])
    return n, f"CPU {1e6 * (time.process_time() - cpu0) / n:.1f} us/sample"


def children_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process's living children, from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            user, system = user + int(fields[11]) / tick, system + int(fields[12]) / tick
    return user, system


def exited_children_cpu() -> tuple[float, float]:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime, kids.ru_stime


def through_dataloader(
    ds: ShardedDataset, loader: Iterable[tuple[int, ...]], persistent: bool
) -> tuple[int, str]:
    cpu_of_workers = children_cpu if persistent else exited_children_cpu
    user0, system0 = cpu_of_workers()
    cpu0, n = time.process_time(), 0
    for batch in loader:
        n += int(batch[0])
    main = time.process_time() - cpu0
    user1, system1 = cpu_of_workers()
    user, system = user1 - user0, system1 - system0
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
    p.add_argument("--persistent", action="store_true", help="persistent_workers=True")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    if args.persistent and not args.workers:
        p.error("--persistent needs --workers N")
    root = Path(args.root).resolve()
    ds = ShardedDataset(
        f"file://{root}/{'dcstore-enc' if args.encrypted else 'dcstore-plain'}",
        keys=f"file://{root}/kek.json" if args.encrypted else None,
        shuffle=True, seed=0, prefetch_threads=args.prefetch_threads, zero_copy=args.zero_copy,
    )  # fmt: skip
    loader = None
    if args.workers is not None:
        from loaders_compare import collate_touch
        from torch.utils.data import DataLoader

        loader = DataLoader(
            ds, batch_size=64, num_workers=args.workers, collate_fn=collate_touch,
            persistent_workers=args.persistent,
        )  # fmt: skip
    for epoch in range(args.epochs):
        ds.set_epoch(epoch)
        wall0 = time.perf_counter()
        if loader is None:
            n, cpu = in_process(ds)
        else:
            n, cpu = through_dataloader(ds, loader, args.persistent)
        wall = time.perf_counter() - wall0
        print(f"epoch {epoch}: {n} samples, {n / wall:,.0f} samples/s, {cpu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
