"""pyarrow reading Parquet through ``dcstore://`` (fsspec) vs the same stack's own ranged gets.

Writes one uncompressed Parquet file (``--mb``, 20 float64 columns, 8 row groups) into
each stack (``--stores``: a local store, and the servers of ``DCSTORE_TEST_*_URL``;
plaintext, encrypted with 4 MiB segments, encrypted with ``--segment-size`` segments,
and each remote one again behind the Redis tier ``cache=``), then, per repetition and
stack, interleaved (one untimed warm-up round first):

* ``fsspec``: ``pyarrow.parquet.read_table(key, filesystem=DcstoreFileSystem(store),
  columns=...)``, what a pandas / pyarrow user runs; the ranges pyarrow reads from the
  file are recorded;
* ``gets``: one ``head`` and a ``get_range`` (pinned to that version, as the file's
  reads are) of each range pyarrow read, on the same stack directly;
* ``decode``: ``read_table`` of the same columns from the file held in memory
  (``pyarrow.BufferReader``): pyarrow's own work, no I/O;
* ``fsspec I/O``: the recorded ranges read through a ``dcstore://`` file
  (``seek`` + ``read_buffer``, as pyarrow's ``PythonFile`` does), without pyarrow.

``end to end = (gets + decode) / fsspec`` and ``I/O = gets / fsspec I/O`` are the
per-repetition ratios (goal of issue 13: >= 0.8x), median (min-max).

    python bench/fsspec_parquet.py [--mb 64] [--columns 5] [--reps 5]
        [--stores local,hdfs,cassandra,mongodb] [--segment-size 65536]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dcstore.backends.base import Backend
from dcstore.crypto import Keyring, write_key_file
from dcstore.fsspec import DcstoreFile, DcstoreFileSystem
from dcstore.store import open_store

KEY = "bench/t.parquet"
SERVERS = {
    "hdfs": "DCSTORE_TEST_HDFS_URL",
    "cassandra": "DCSTORE_TEST_CASSANDRA_URL",
    "mongodb": "DCSTORE_TEST_MONGODB_URL",
}


class RecordingFile(DcstoreFile):
    """Reads as DcstoreFile does, remembering the ranges pyarrow reads and the
    bytes fetched from the store."""

    def read_buffer(self, length: int = -1) -> Any:
        start = self.loc
        out = super().read_buffer(length)
        self.fs.asked.append((start, start + len(out)))
        return out

    def _fetch_range(self, start: int, end: int) -> bytes:
        self.fs.fetched += max(0, min(end, self.size) - start)
        return super()._fetch_range(start, end)


class RecordingFS(DcstoreFileSystem):
    file_class = RecordingFile

    def __init__(self, store: Backend):
        super().__init__(store)
        self.asked: list[tuple[int, int]] = []
        self.fetched = 0


def parquet_bytes(mb: int) -> bytes:
    cols = 20
    rows = mb * (1 << 20) // (8 * cols)
    rng = np.random.default_rng(0)
    table = pa.table({f"c{i}": rng.random(rows) for i in range(cols)})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=max(1, rows // 8), compression="none")
    return sink.getvalue()


def stacks(tmp: str, names: list[str], segment_size: int) -> dict[str, Backend]:
    keys = f"file://{tmp}/kek.json"
    write_key_file(Path(tmp) / "kek.json", Keyring.generate())
    small = f"encrypted {segment_size >> 10} KiB"
    out: dict[str, Backend] = {}
    for name in names:
        tag = uuid.uuid4().hex[:8]
        if name == "local":
            urls = {v: f"file://{tmp}/{v}" for v in ("plain", "enc", "small")}
        else:
            base = os.environ.get(SERVERS[name])
            if not base:
                raise SystemExit(f"--stores {name}: {SERVERS[name]} is not set")
            if name == "hdfs":
                root = f"{base.rstrip('/')}/dcstore-bench-{tag}"
                urls = {v: f"{root}/{v}" for v in ("plain", "enc", "small")}
            elif name == "cassandra":
                urls = {v: f"{base}/fsb{tag}{v}" for v in ("plain", "enc", "small")}
            else:
                urls = {v: f"{base}?bucket=fsb{tag}{v}" for v in ("plain", "enc", "small")}
        out[f"{name} plaintext"] = open_store(urls["plain"])
        out[f"{name} encrypted"] = open_store(urls["enc"], keys=keys)
        out[f"{name} {small}"] = open_store(urls["small"], keys=keys, segment_size=segment_size)
        redis = os.environ.get("DCSTORE_TEST_REDIS_URL")
        if name != "local" and redis:
            cache = f"{redis}{'&' if '?' in redis else '?'}namespace=fsb{tag}"
            out[f"{name} plaintext + redis"] = open_store(urls["plain"], cache=cache)
            out[f"{name} encrypted + redis"] = open_store(urls["enc"], cache=cache, keys=keys)
    return out


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Stack:
    def __init__(self, name: str, store: Backend, blob: bytes, columns: list[str]):
        self.name, self.store, self.blob, self.columns = name, store, blob, columns
        store.put(KEY, blob)
        fs = RecordingFS(store)
        pq.read_table(KEY, filesystem=fs, columns=columns)
        self.asked, self.fetched = fs.asked, fs.fetched
        self.times: dict[str, list[float]] = {m: [] for m in ("fs", "gets", "decode", "io")}

    def fsspec(self) -> None:
        table = pq.read_table(KEY, filesystem=DcstoreFileSystem(self.store), columns=self.columns)
        assert table.num_columns == len(self.columns)

    def gets(self) -> None:
        version = self.store.head(KEY).version
        for start, end in self.asked:
            self.store.get_range(KEY, start, end, version=version)

    def decode(self) -> None:
        pq.read_table(pa.BufferReader(self.blob), columns=self.columns)

    def io(self) -> None:
        with DcstoreFileSystem(self.store).open(KEY, "rb") as f:
            for start, end in self.asked:
                f.seek(start)
                f.read_buffer(end - start)

    def round(self, rep: int, record: bool) -> None:
        order = ["fs", "gets", "decode", "io"]
        if rep % 2:
            order.reverse()
        for m in order:
            t = timed(getattr(self, {"fs": "fsspec"}.get(m, m)))
            if record:
                self.times[m].append(t)

    def row(self) -> str:
        t = self.times
        e2e = [(g + d) / f for f, g, d in zip(t["fs"], t["gets"], t["decode"], strict=True)]
        ior = [g / i for g, i in zip(t["gets"], t["io"], strict=True)]

        def ms(xs: list[float]) -> str:
            return f"{1e3 * statistics.median(xs):.0f}"

        def ratio(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"

        asked = sum(e - s for s, e in self.asked)
        return (
            f"| {self.name} | {asked / 1e6:.0f} | {self.fetched / 1e6:.0f} | {ms(t['fs'])} | "
            f"{ms(t['gets'])} + {ms(t['decode'])} | **{ratio(e2e)}** | {ms(t['io'])} | "
            f"**{ratio(ior)}** |"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=64)
    p.add_argument("--columns", type=int, default=5, help="columns read of 20")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--stores", default="local", help="local,hdfs,cassandra,mongodb")
    p.add_argument("--segment-size", type=int, default=64 << 10)
    args = p.parse_args()
    columns = [f"c{i}" for i in range(0, 20, 20 // args.columns)][: args.columns]
    blob = parquet_bytes(args.mb)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dcstore-fsspec-bench-") as tmp:
        all_stacks = stacks(tmp, args.stores.split(","), args.segment_size)
        runs = [Stack(name, store, blob, columns) for name, store in all_stacks.items()]
        for rep in range(-1, args.reps):  # rep -1: warm-up, not recorded
            for s in runs:
                s.round(rep, record=rep >= 0)
        native = []
        Path(tmp, "t.parquet").write_bytes(blob)
        for _ in range(args.reps):
            native.append(timed(lambda: pq.read_table(f"{tmp}/t.parquet", columns=columns)))
        for s in runs:
            s.store.delete(KEY)
            s.store.close()
    load1 = os.getloadavg()
    print(
        f"{started}, pyarrow {pa.__version__}, {len(blob) / 1e6:.0f} MB file, {len(columns)} of "
        f"20 columns, {args.reps} reps interleaved (median, min-max), {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; "
        f"`{' '.join(sys.argv)}`\n"
    )
    print(
        "| stack | MB pyarrow reads | MB fetched | fsspec read_table ms | gets + decode ms "
        "| end to end | fsspec I/O ms | I/O |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(s.row() for s in runs))
    native_ms = 1e3 * statistics.median(native)
    print(f"\npyarrow's own read of the file from local disk: {native_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
