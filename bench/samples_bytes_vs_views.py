"""Samples per CPU-second reading a local dataset of 100 KiB samples in one process:
``bytes`` fields (the default) vs ``zero_copy=True`` memoryviews, with the per-sample
checksum checked (the default) or not; and the cost of one xxh3_64 per 100 KiB sample.

CPU time (all threads of the process), not wall time, so that other load on the machine
does not decide the comparison. Run: ``python bench/samples_bytes_vs_views.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import timeit

from dcstore.loaders import ShardedDataset, ShardWriter
from dcstore.loaders.checksum import sample_checksum

N, SIZE, RUNS = 1500, 100 * 1024, 9
CONFIGS = {
    "bytes + checksum (default)": {},
    "zero_copy + checksum": {"zero_copy": True},
    "bytes, verify_checksums=False": {"verify_checksums": False},
    "zero_copy, verify_checksums=False": {"zero_copy": True, "verify_checksums": False},
}


def per_cpu_second(url: str, **kw: bool) -> float:
    start = time.process_time()
    total = sum(len(s["bin"]) for s in ShardedDataset(url, **kw))
    assert total == N * SIZE
    return N / (time.process_time() - start)


def main() -> None:
    blob = os.urandom(SIZE)
    n = 20000
    each = timeit.timeit(lambda: sample_checksum(blob), number=n) / n
    print(f"xxh3_64 of one 100 KiB sample: {each * 1e6:.1f} us ({SIZE / each / 1e9:.1f} GB/s)")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"file://{tmp}"
        with ShardWriter(url) as writer:
            for i in range(N):
                writer.write({"__key__": f"s{i:06d}", "bin": os.urandom(SIZE)})
        for kw in CONFIGS.values():
            per_cpu_second(url, **kw)  # page cache warm
        runs: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for _ in range(RUNS):  # interleaved, so drifting load hits every configuration
            for name, kw in CONFIGS.items():
                runs[name].append(per_cpu_second(url, **kw))
    for name, rates in runs.items():
        print(f"{name:34s} median {statistics.median(rates):8,.0f} samples/CPU-s")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    main()
