"""Cost of first-touch page faults: copy into fresh anonymous pages vs pages already mapped.

Why ``dcstore/crypto/buffers.py`` avoids an extra output copy and
``dcstore/loaders/alloc.py`` keeps run buffers on the heap: a fresh ``mmap``'d
buffer (what glibc gives for sizes above its mmap threshold) pays a page fault
per 4 KiB page on first write. Results: bench/results/page-faults.md.

    .venv/bin/python bench/page_faults.py --size-mib 256 --reps 5
"""

from __future__ import annotations

import argparse
import mmap
import time
from collections.abc import Callable


def best_gb_per_s(fn: Callable[[], None], nbytes: int, reps: int) -> float:
    """Best-of-``reps`` throughput of ``fn`` moving ``nbytes``."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return nbytes / min(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mib << 20
    src = bytes(range(256)) * (size // 256)  # real pages, not the shared zero page

    def fresh() -> None:  # a new mapping each time: every page faults on first write
        with mmap.mmap(-1, size) as buf:
            buf.write(src)

    touched = mmap.mmap(-1, size)
    touched.write(src)

    def reused() -> None:  # the same mapping again: its pages are present
        touched.seek(0)
        touched.write(src)

    for name, fn in (("fresh pages:  ", fresh), ("touched pages:", reused)):
        rate = best_gb_per_s(fn, size, args.reps)
        print(f"copy {args.size_mib} MiB into {name} {rate:6.2f} GB/s")


if __name__ == "__main__":
    main()
