"""Streaming one large HDFS object in-process: the driver's own read beside dcstore's.

``dcstore get`` and ``cp`` read an object with :func:`dcstore.ops.read_chunks`. This
times that loop without the CLI, the output file or a child process, next to the
driver (hdfs-native) on the same object in the same run, repetitions interleaved:

* ``driver read``: ``client.read(path)`` and ``read(8 MiB)`` until the end (its
  documented streaming read, one sequential reader).
* ``driver ranges, 2 threads``: one opened file, ``read_range`` of 8 MiB ranges from two
  threads with four submitted at a time (what ``read_chunks`` does, without dcstore).
* ``dcstore read_chunks``: ``open_store(URL)`` (retries over HDFS), plaintext.
* ``dcstore read_chunks, encrypted``: the same object written through ``--keys``
  (AES-256-GCM, 4 MiB segments), decrypted as it is read.

Nothing is written out: the figures are the read paths alone. The objects are written
once, read once untimed (the page cache then holds them, as in a benchmark's second
pass) and deleted at the end.

Usage::

    .venv/bin/python bench/hdfs_stream_read.py hdfs://127.0.0.1:9000/bench --size 2GiB --reps 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hdfs_native

from dcstore import open_store
from dcstore.crypto import Keyring, write_key_file
from dcstore.ops import read_chunks
from dcstore.units import parse_size

PIECE = 8 << 20


def driver_read(client: hdfs_native.Client, path: str) -> int:
    reader, n = client.read(path), 0
    while piece := reader.read(PIECE):
        n += len(piece)
    return n


def driver_ranges(client: hdfs_native.Client, path: str, size: int) -> int:
    reader, n = client.read(path), 0
    starts = iter(range(0, size, PIECE))
    with ThreadPoolExecutor(2) as pool:

        def submit(start: int):  # type: ignore[no-untyped-def]
            return pool.submit(reader.read_range, start, min(PIECE, size - start))

        pending = deque(submit(s) for s in itertools.islice(starts, 4))
        while pending:
            n += len(pending.popleft().result())
            start = next(starts, None)
            if start is not None:
                pending.append(submit(start))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="an HDFS directory URL, e.g. hdfs://127.0.0.1:9000/bench")
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    size = parse_size(args.size)
    scheme, _, host, root = args.url.split("/", 3)
    client = hdfs_native.Client(f"{scheme}//{host}")
    path = f"/{root.strip('/')}/stream-read-raw"
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "kek.json"
        write_key_file(keys, Keyring.generate("stream-read"))
        plain = open_store(args.url)
        encrypted = open_store(args.url, keys=str(keys))
        writer = client.create(path, hdfs_native.WriteOptions(overwrite=True, create_parent=True))
        with encrypted.open_write("stream-read-enc") as enc:
            for start in range(0, size, 64 << 20):
                piece = os.urandom(min(64 << 20, size - start))
                writer.write(piece)
                enc.write(piece)
        writer.close()
        metas = {"plain": plain.head("stream-read-raw"), "enc": encrypted.head("stream-read-enc")}
        rows: dict[str, Callable[[], int]] = {
            "driver read": lambda: driver_read(client, path),
            "driver ranges, 2 threads": lambda: driver_ranges(client, path, size),
            "dcstore read_chunks": lambda: sum(
                memoryview(c).nbytes for c in read_chunks(plain, metas["plain"])
            ),
            "dcstore read_chunks, encrypted": lambda: sum(
                memoryview(c).nbytes for c in read_chunks(encrypted, metas["enc"])
            ),
        }
        for read in rows.values():  # untimed: the page cache holds both objects
            assert read() == size
        seconds: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.reps):
            for name, read in rows.items():
                start = time.perf_counter()
                assert read() == size
                seconds[name].append(time.perf_counter() - start)
        client.delete(path)
        encrypted.delete("stream-read-enc")
    print(f"{args.size} object, {args.reps} reps, load average {os.getloadavg()[0]:.1f}\n")
    print("| read path | MB/s per rep | x the driver's read, per rep |")
    print("|---|---|---|")
    for name, times in seconds.items():
        rates = " ".join(f"{size / t / 1e6:.0f}" for t in times)
        ratios = [d / t for d, t in zip(seconds["driver read"], times, strict=True)]
        listed = " ".join(f"{r:.2f}" for r in ratios)
        print(f"| {name} | {rates} | {listed} ({statistics.median(ratios):.2f}x) |")


if __name__ == "__main__":
    main()
