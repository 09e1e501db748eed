"""Objects larger than memory: peak RSS and MB/s of ``dcstore put/get/cp`` next to the
drivers' own streaming paths, same file, same store, same run.

Every operation runs in a child process and is measured from outside: wall time and
the child's peak RSS (``RUSAGE_CHILDREN`` of a small intermediate process, so the
figure is the child's own). Rows per store:

* ``dcstore put/get/cp``: the CLI as users run it (``--keys`` for the encrypted rows).
* ``raw write/read``: the driver streaming the same file in 8 MiB pieces, no dcstore;
  reads write the output file and fsync it, as ``dcstore get -o`` does: local disk
  ``dd bs=8M conv=fsync``, hdfs-native
  ``create``/``write`` and ``read``/``read``, GridFS ``upload_from_stream`` and its chunk
  documents read in order, 32 per batch (MongoDB; see ``RAW_GRIDFS``), or with
  ``--mongodb-raw ids`` a pymongo chunk loop: 4 MiB chunk documents with ``_id`` = name.n,
  ``insert_many`` of four, read back one ``find_one`` by ``_id`` after another (what a
  server that sorts in its own memory can serve at 10 GiB: FerretDB v1 holds ~2.4x the
  object to answer GridFS's sorted chunk query), a prepared-insert
  chunk loop with 16 requests in flight, resent while the connection is busy (Cassandra,
  1 MiB chunks, as dcstore).

Before every operation the page cache's dirty pages are flushed (``sync``), so no
operation pays for the previous one's writeback. Even so, whatever runs first meets an
idle disk: odd repetitions run dcstore's rows before the driver's (use ``--reps 2`` or more).

Example::

    .venv/bin/python bench/large_objects.py --size 1GiB \\
        --store /tmp/lo-store --store hdfs://127.0.0.1:9000/lo \\
        --store cassandra://127.0.0.1:9042 --store mongodb://127.0.0.1:27017/dcstore \\
        --out bench/results/large-objects.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dcstore.units import parse_size

DCSTORE = [sys.executable, "-m", "dcstore.cli"]
MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)

RAW_HDFS = """
import os, sys, hdfs_native
url, path, src, mode = sys.argv[1:5]
client = hdfs_native.Client(url)
if mode == "write":
    with open(src, "rb") as f:
        w = client.create(path, hdfs_native.WriteOptions(overwrite=True, create_parent=True))
        while piece := f.read(8 << 20):
            w.write(piece)
        w.close()
elif mode == "delete":  # after the raw rows: a 10 GiB run must not keep a copy in HDFS
    client.delete(path)
else:
    r = client.read(path)
    with open(src, "wb") as f:
        while piece := r.read(8 << 20):
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())
"""

RAW_GRIDFS = """
import os, sys, gridfs, pymongo
url, name, src, mode = sys.argv[1:5]
client = pymongo.MongoClient(url)
bucket = gridfs.GridFSBucket(client.get_default_database(), bucket_name="rawbench",
                             chunk_size_bytes=255 * 1024)
if mode == "write":
    with open(src, "rb") as f:
        bucket.upload_from_stream(name, f)
else:
    # GridFS's download cursor sends getMores without a batch size, which FerretDB answers
    # with messages over its own 48 MB limit (pymongo raises ProtocolError): read the same
    # chunk documents, in order, 32 per batch (8 MiB).
    db = client.get_default_database()
    doc = db.rawbench.files.find_one({"filename": name}, sort=[("uploadDate", -1)])
    chunks = db.rawbench.chunks.find({"files_id": doc["_id"]}, sort=[("n", 1)], batch_size=32)
    with open(src, "wb") as f:
        for chunk in chunks:
            f.write(chunk["data"])
        f.flush()
        os.fsync(f.fileno())
"""

RAW_MONGO_IDS = """
import os, sys, pymongo
url, name, src, mode = sys.argv[1:5]
db = pymongo.MongoClient(url).get_default_database()
CHUNK, BATCH = 4 << 20, 4  # dcstore's default chunk size; chunks per insert_many (16 MiB)
if mode == "write":
    n = 0
    with open(src, "rb") as f:
        while True:
            docs = []
            while len(docs) < BATCH and (piece := f.read(CHUNK)):
                docs.append({"_id": f"{name}.{n + len(docs)}", "data": piece})
            if not docs:
                break
            db.rawids.insert_many(docs)
            n += len(docs)
    db.rawids_count.replace_one({"_id": name}, {"_id": name, "n": n}, upsert=True)
else:
    count = db.rawids_count.find_one({"_id": name})["n"]
    with open(src, "wb") as f:
        for n in range(count):
            f.write(db.rawids.find_one({"_id": f"{name}.{n}"})["data"])
        f.flush()
        os.fsync(f.fileno())
"""

RAW_CASSANDRA = """
import os, sys
from cassandra.cluster import Cluster
from cassandra.concurrent import execute_concurrent_with_args
host, port, src, mode = sys.argv[1:5]
session = Cluster([host], port=int(port)).connect()
session.execute("CREATE KEYSPACE IF NOT EXISTS rawbench WITH replication ="
                " {'class': 'SimpleStrategy', 'replication_factor': 1}")
session.execute("CREATE TABLE IF NOT EXISTS rawbench.chunks (obj text, idx int, data blob,"
                " PRIMARY KEY ((obj, idx))) WITH compression = {'enabled': 'false'}")
CHUNK, WINDOW = 1 << 20, 16  # dcstore's chunk size and requests in flight


def run_all(statement, args):
    # every request, resent while the connection reports itself busy (as dcstore does)
    results = [None] * len(args)
    todo = list(range(len(args)))
    while todo:
        done = execute_concurrent_with_args(
            session, statement, [args[i] for i in todo], concurrency=WINDOW,
            raise_on_first_error=False)
        failed = []
        for i, (ok, result) in zip(todo, done):
            if ok:
                results[i] = result
            elif "overloaded" in str(result) or "Busy" in str(result):
                failed.append(i)
            else:
                raise result
        todo = failed
    return results


if mode == "write":
    ins = session.prepare("INSERT INTO rawbench.chunks (obj, idx, data) VALUES ('o', ?, ?)")
    with open(src, "rb") as f:
        idx = 0
        while True:
            batch = []
            for _ in range(WINDOW):
                piece = f.read(CHUNK)
                if not piece:
                    break
                batch.append((idx, piece))
                idx += 1
            if not batch:
                break
            run_all(ins, batch)
    open(src + ".chunks", "w").write(str(idx))
else:
    sel = session.prepare("SELECT data FROM rawbench.chunks WHERE obj = 'o' AND idx = ?")
    count = int(open(sys.argv[5]).read())
    with open(src, "wb") as f:
        for start in range(0, count, WINDOW):
            args = [(i,) for i in range(start, min(count, start + WINDOW))]
            for rows in run_all(sel, args):
                f.write(rows.one().data)
        f.flush()
        os.fsync(f.fileno())
"""

DROP_KEYSPACE = """
import sys
from cassandra.cluster import Cluster
host, port, keyspace = sys.argv[1:4]
Cluster([host], port=int(port)).connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
"""

DROP_MONGO_DATABASE = """
import sys, pymongo
client = pymongo.MongoClient(sys.argv[1])
client.drop_database(client.get_default_database())
"""


@dataclass
class Row:
    store: str
    what: str
    seconds: list[float]
    peak_mib: list[float]
    size: int

    def add(self, seconds: float, peak_mib: float) -> None:
        self.seconds.append(seconds)
        self.peak_mib.append(peak_mib)

    def cells(self) -> str:
        rates = sorted(self.size / s / 1e6 for s in self.seconds)
        mb_s = f"{statistics.median(rates):,.0f}"
        if len(rates) > 1:
            mb_s += f" ({rates[0]:,.0f}-{rates[-1]:,.0f})"
        return f"{statistics.median(self.seconds):.1f} | {mb_s} | {max(self.peak_mib):,.0f}"


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of ``cmd`` in its own child process."""
    os.sync()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{done.stderr[-3000:]}")
    seconds, kib = done.stdout.split()
    return float(seconds), int(kib) / 1024


def raw_commands(
    store: str, src: Path, out: Path, work: Path, mongodb_raw: str = "gridfs"
) -> list[tuple[str, list[str]]]:
    """The driver's own streaming write and read of ``src`` for ``store``."""
    py = [sys.executable, "-c"]
    if store.startswith("hdfs://"):
        url = "/".join(store.split("/", 3)[:3])
        path = "/" + store.split("/", 3)[3].strip("/") + "/raw-bench.bin"
        return [
            ("raw write (hdfs-native)", [*py, RAW_HDFS, url, path, str(src), "write"]),
            ("raw read (hdfs-native)", [*py, RAW_HDFS, url, path, str(out), "read"]),
        ]
    if store.startswith("mongodb://") and mongodb_raw == "ids":
        return [
            (
                "raw write (chunk loop by _id)",
                [*py, RAW_MONGO_IDS, store, "raw", str(src), "write"],
            ),
            ("raw read (chunk loop by _id)", [*py, RAW_MONGO_IDS, store, "raw", str(out), "read"]),
        ]
    if store.startswith("mongodb://"):
        return [
            ("raw write (GridFS)", [*py, RAW_GRIDFS, store, "raw.bin", str(src), "write"]),
            ("raw read (GridFS)", [*py, RAW_GRIDFS, store, "raw.bin", str(out), "read"]),
        ]
    if store.startswith("cassandra://"):
        host, port = store.split("//", 1)[1].split("/")[0].split(":")
        count = str(src) + ".chunks"
        return [
            ("raw write (chunk loop)", [*py, RAW_CASSANDRA, host, port, str(src), "write"]),
            ("raw read (chunk loop)", [*py, RAW_CASSANDRA, host, port, str(out), "read", count]),
        ]
    dst = work / "dd-copy.bin"
    return [
        ("raw write (dd conv=fsync)", ["dd", f"if={src}", f"of={dst}", "bs=8M", "conv=fsync"]),
        ("raw read (dd conv=fsync)", ["dd", f"if={dst}", f"of={out}", "bs=8M", "conv=fsync"]),
    ]


def run_store(
    store: str,
    src: Path,
    size: int,
    keys: Path,
    work: Path,
    rows: dict[str, Row],
    rep: int = 0,
    ops: tuple[str, ...] = ("put", "get", "cp"),
    mongodb_raw: str = "gridfs",
) -> None:
    """One repetition of every operation on ``store``, added to ``rows``. Odd repetitions
    run dcstore's rows before the driver's: whatever runs first meets a disk with no
    dirty pages behind it (measured: ``dd`` first 1,096 MB/s, alternated 306-683)."""
    out = work / "out.bin"

    def record(what: str, cmd: list[str]) -> None:
        row = rows.setdefault(f"{store} {what}", Row(store, what, [], [], size))
        row.add(*measure(cmd))

    def reclaim(keyspace: str | None = None) -> None:
        """Give the next rows the server state the first ones had. Cassandra keeps deleted
        data for ``gc_grace_seconds`` (10 days): drop the keyspace instead (no snapshot,
        ``auto_snapshot: false``), so a 10 GiB run holds one or two objects on disk, not
        six. FerretDB writes 8x slower right after a 1 GiB removal (measured: a 1 GiB put
        42 s on a fresh database, 335 s after ``rm``), so the database is dropped after
        every group of rows, the driver's included. dcstore's schema is made again
        untimed."""
        ours = keyspace is None  # else the driver's keyspace
        if store.startswith("cassandra://"):
            where = store.split("//", 1)[1]
            host, port = where.split("/")[0].split(":")
            if keyspace is None:  # dcstore's own: the URL's, else the default
                keyspace = where.split("/")[1] if "/" in where else "dcstore"
            drop = [sys.executable, "-c", DROP_KEYSPACE, host, port, keyspace]
        elif store.startswith("mongodb://"):
            drop = [sys.executable, "-c", DROP_MONGO_DATABASE, store]
        else:
            return
        subprocess.run(drop, check=True)
        if ours:
            subprocess.run([*DCSTORE, "ls", store], check=False, capture_output=True)

    def driver() -> None:
        raw = raw_commands(store, src, out, work, mongodb_raw)
        for what, cmd in raw if "get" in ops else raw[:1]:
            record(what, cmd)
            out.unlink(missing_ok=True)
        if store.startswith("hdfs://"):
            subprocess.run([*raw[0][1][:-1], "delete"], check=True)
        (work / "dd-copy.bin").unlink(missing_ok=True)
        reclaim("rawbench")

    def ours() -> None:
        for label, extra, cp_extra in (
            ("plaintext", [], []),
            (
                "encrypted",
                ["--keys", str(keys)],
                ["--src-keys", str(keys), "--dest-keys", str(keys)],
            ),
        ):
            base = f"{store.rstrip('/')}"
            steps = [
                ("put", [*DCSTORE, "put", base, "lo-big", str(src), *extra]),
                ("get", [*DCSTORE, "get", base, "lo-big", "-o", str(out), *extra]),
                ("cp", [*DCSTORE, "cp", f"{base}/lo-big", f"{base}/lo-copy", *cp_extra]),
            ]
            for op, cmd in (step for step in steps if step[0] in ops):
                record(f"dcstore {op}, {label}", cmd)
                out.unlink(missing_ok=True)  # before cp: a 10 GiB run fits in 3x its size
            # One key at a time: rm deletes nothing when one of its keys is missing (--no-cp).
            # (MongoDB: the dropped database takes them; FerretDB removes 1 GiB in ~120 s.)
            for key in ("lo-big", "lo-copy") if not store.startswith("mongodb://") else ():
                subprocess.run([*DCSTORE, "rm", base, key], check=False, capture_output=True)
            reclaim()

    for step in (driver, ours) if rep % 2 == 0 else (ours, driver):
        step()


def per_rep_ratios(row: Row, rows: list[Row]) -> str:
    """``row``'s speed over the driver's in each repetition (put against the raw write,
    get against the raw read, same store, same repetition) and their median."""
    op = row.what.split()[1] if row.what.startswith("dcstore ") else ""
    raw_kind = {"put": "raw write", "get": "raw read"}.get(op.rstrip(","))
    raw = next(
        (r for r in rows if r.store == row.store and r.what.startswith(f"{raw_kind} ")), None
    )
    if raw_kind is None or raw is None:
        return ""
    ratios = [theirs / ours for ours, theirs in zip(row.seconds, raw.seconds, strict=False)]
    listed = " ".join(f"{r:.2f}" for r in ratios)
    return f"{listed} (**{statistics.median(ratios):.2f}x**)" if ratios else ""


def table(rows: list[Row]) -> str:
    lines = [
        "| store | operation | s (median) | MB/s median (min-max) | peak RSS MiB (max) "
        "| x the driver, per rep (median) |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [f"| {r.store} | {r.what} | {r.cells()} | {per_rep_ratios(r, rows)} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB", help="object size (e.g. 1GiB, 10GiB)")
    ap.add_argument("--store", action="append", required=True, help="store URL or path")
    ap.add_argument("--work", help="directory for the source and output files")
    ap.add_argument("--reps", type=int, default=1, help="repetitions, interleaved per store")
    ap.add_argument("--out", help="append the table to this Markdown file")
    ap.add_argument(
        "--no-cp",
        action="store_true",
        help="leave out the cp rows (no driver row to compare them with; on a slow store "
        "each stream of a large object takes minutes)",
    )
    ap.add_argument(
        "--ops",
        default="put,get,cp",
        help="dcstore operations to run, e.g. put (the driver's read then runs only with get)",
    )
    ap.add_argument(
        "--mongodb-raw",
        choices=("gridfs", "ids"),
        default="gridfs",
        help="the driver rows for MongoDB: GridFS, or a pymongo chunk loop by _id",
    )
    args = ap.parse_args()
    size = parse_size(args.size)
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        src, keys = work / "src.bin", work / "kek.json"
        with open(src, "wb") as f:  # incompressible, written once
            for _ in range(0, size, 64 << 20):
                f.write(os.urandom(min(64 << 20, size - f.tell())))
        subprocess.run([*DCSTORE, "keys", "new", "--keys", str(keys)], check=True)
        rows: dict[str, Row] = {}
        for store in args.store:
            for rep in range(args.reps):
                ops = tuple(op for op in args.ops.split(",") if not (args.no_cp and op == "cp"))
                run_store(store, src, size, keys, work, rows, rep, ops, args.mongodb_raw)
                print(table(list(rows.values())), flush=True)
    load = os.getloadavg()[0]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = (
        f"\n`{shlex.join(['python', 'bench/large_objects.py', *sys.argv[1:]])}`\n\n"
        f"{args.size} object, {args.reps} repetition(s), {stamp}, load average {load:.1f} on "
        f"{os.cpu_count()} CPUs.\n\n"
        f"{table(list(rows.values()))}\n"
    )
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
