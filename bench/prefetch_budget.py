"""ShardedDataset's memory against its prefetch budget: one epoch per budget, same dataset.

Reuses ``loaders_compare.py``'s plaintext dataset (run that with ``--prepare-only``
first), its ``touch`` collate and its RSS/PSS sampler; 2 workers, batch 64.

    .venv/bin/python bench/prefetch_budget.py [--mib 8,32,64,256] [--reps 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import loaders_compare as lc

from dcstore.loaders import ShardedDataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", default="8,32,64,256", help="prefetch_bytes per worker, MiB")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--root", default="bench/results/tmp/loaders")
    args = p.parse_args()
    url = f"file://{Path(args.root).resolve()}/dcstore-plain"
    run = argparse.Namespace(batch=64, workers=args.workers)
    print("| prefetch_bytes per worker | samples/s | peak RSS MiB | peak PSS MiB |")
    print("|---:|---:|---:|---:|")
    for _ in range(args.reps):
        for mib in (int(m) for m in args.mib.split(",")):
            dataset = lambda m=mib: ShardedDataset(url, prefetch_bytes=m << 20)  # noqa: E731
            r = lc.run_epoch(dataset, "touch", run)
            print(f"| {mib} MiB | {r['samples_s']:.0f} | {r['rss_mib']:.0f} | {r['pss_mib']:.0f} |")


if __name__ == "__main__":
    main()
