"""pyarrow reading Parquet through ``dcstore://`` (fsspec) vs the same stack's own ranged gets.

Writes one Parquet file (default ~200 MB: 20 float64 columns, 8 row groups) into a
local store, plaintext and encrypted, then per repetition, alternating:

* ``fsspec``: ``pyarrow.parquet.read_table(path, filesystem=DcstoreFileSystem(...),
  columns=...)`` — what a pandas / pyarrow user runs; every ``get_range`` the read
  makes is recorded;
* ``ranged gets``: the same ``get_range`` calls replayed on the same stack directly
  (the bytes that read needs, with nothing on top);
* ``pyarrow native``: ``read_table`` of the plaintext file straight from local disk
  (pyarrow's own file system): the same decode work with no dcstore at all.

Reports MB/s of stack bytes for both and their ratio (goal: fsspec >= 0.8x).

    .venv/bin/python bench/fsspec_parquet.py [--mb 200] [--columns 5] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dcstore.backends.base import Backend
from dcstore.crypto import Keyring, write_key_file
from dcstore.fsspec import DcstoreFile, DcstoreFileSystem
from dcstore.store import open_store


class RecordingFile(DcstoreFile):
    """Reads as DcstoreFile does, remembering every ranged get it makes."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start < end:
            self.fs.calls.append((self.key, start, end))
        return super()._fetch_range(start, end)


class RecordingFS(DcstoreFileSystem):
    file_class = RecordingFile

    def __init__(self, store: Backend):
        super().__init__(store)
        self.calls: list[tuple[str, int, int]] = []


def write_file(store: Backend, key: str, mb: int) -> int:
    cols = 20
    rows = mb * (1 << 20) // (8 * cols)
    rng = np.random.default_rng(0)
    table = pa.table({f"c{i}": rng.random(rows) for i in range(cols)})
    fs = DcstoreFileSystem(store)
    with fs.open(key, "wb") as f:
        pq.write_table(table, f, row_group_size=max(1, rows // 8), compression="none")
    return int(store.head(key).size)


def one_round(store: Backend, key: str, columns: list[str]) -> tuple[float, float, int]:
    """(fsspec s, replay s, bytes fetched) of one read of ``columns``."""
    fs = RecordingFS(store)
    t0 = time.perf_counter()
    table = pq.read_table(key, filesystem=fs, columns=columns)
    fs_s = time.perf_counter() - t0
    assert table.num_columns == len(columns)
    fetched = sum(end - start for _, start, end in fs.calls)
    t0 = time.perf_counter()
    for k, start, end in fs.calls:
        store.get_range(k, start, end)
    return fs_s, time.perf_counter() - t0, fetched


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--columns", type=int, default=5, help="columns read of 20")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    columns = [f"c{i}" for i in range(0, 20, 20 // args.columns)][: args.columns]
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dcstore-fsspec-bench-") as tmp:
        write_key_file(Path(tmp) / "kek.json", Keyring.generate())
        stacks: dict[str, Any] = {
            "plaintext": open_store(f"file://{tmp}/plain"),
            "encrypted": open_store(f"file://{tmp}/enc", keys=f"file://{tmp}/kek.json"),
        }
        sizes = {name: write_file(s, "t.parquet", args.mb) for name, s in stacks.items()}
        native = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            pq.read_table(f"{tmp}/plain/t.parquet", columns=columns)
            native.append(time.perf_counter() - t0)
        for name, store in stacks.items():
            results = [one_round(store, "t.parquet", columns) for _ in range(args.reps)]
            fetched = results[0][2]
            fs_mb = [fetched / 1e6 / r[0] for r in results]
            raw_mb = [fetched / 1e6 / r[1] for r in results]
            ratios = [r[1] / r[0] for r in results]
            rows.append(
                f"| {name} | {sizes[name] / 1e6:.0f} | {fetched / 1e6:.0f} | "
                f"{1e3 * statistics.median(r[0] for r in results):.0f} | "
                f"{statistics.median(fs_mb):,.0f} | {statistics.median(raw_mb):,.0f} | "
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
            )
    print(
        f"pyarrow {pa.__version__}, {len(columns)} of 20 columns, {args.reps} reps (median, "
        f"min-max), {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"`{' '.join(sys.argv)}`\n"
    )
    print(
        "| stack | file MB | MB fetched | read_table ms | fsspec + pyarrow MB/s | "
        "ranged gets MB/s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\npyarrow native read of the plaintext file: {1e3 * statistics.median(native):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
