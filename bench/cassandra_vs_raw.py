"""dcstore's Cassandra backend next to a minimal raw cassandra-driver loop, in the same run.

For each object size and thread count, interleaved over repetitions:

* ``dcstore`` - ``open_store(URL)`` (CassandraBackend behind RetryingBackend): ``get``
  reads the metadata row, then the chunks; ``put`` writes an intent row, the chunks, the
  LWT commit and deletes the replaced version.
* ``raw`` - the least a driver user must do to move the same bytes: ``get`` fetches the
  same chunk rows of the same committed versions (version ids known in advance, no
  metadata read); ``put`` inserts the chunks under a fresh id (no metadata, no commit, no
  cleanup). Same prepared statements, token-aware routing, consistency, protocol version,
  ``execute_async`` window and chunk size.

Prints a Markdown table (MB/s = 10^6 bytes/s; latency percentiles per operation) and
the overhead of dcstore relative to raw. Example::

    .venv/bin/python bench/cassandra_vs_raw.py cassandra://127.0.0.1:9042/dcstore_bench \\
        --size 4MiB,64MiB --threads 1,4,16 --duration 5 --reps 3 --out bench/results/x.md
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.connection import ConnectionBusy
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import tuple_factory

from dcstore.backends.cassandra import CassandraBackend
from dcstore.backends.cassandra.schema import CHUNKS, Layout
from dcstore.store import open_store
from dcstore.units import parse_size


class Raw:
    """A minimal cassandra-driver client for the dcstore chunk table."""

    def __init__(self, backend: CassandraBackend):
        s = backend.settings
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=s.read_cl,
            request_timeout=s.request_timeout,
            row_factory=tuple_factory,
        )
        self.cluster = Cluster(
            list(s.hosts),
            port=s.port,
            protocol_version=s.protocol_version,
            compression=False,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        )
        self.session: Session = self.cluster.connect()
        ks = s.keyspace
        self.get_stmt = self.session.prepare(
            f"SELECT data FROM {ks}.{CHUNKS} WHERE version = ? AND part = ? AND idx = ?"
        )
        self.put_stmt = self.session.prepare(
            f"INSERT INTO {ks}.{CHUNKS} (version, part, idx, data) VALUES (?, ?, ?, ?)"
        )
        self.put_stmt.consistency_level = s.write_cl
        self.drop_stmt = self.session.prepare(
            f"DELETE FROM {ks}.{CHUNKS} WHERE version = ? AND part = ?"
        )
        self.window = s.max_in_flight

    def _pipeline(self, stmt, params) -> list:
        pending: deque = deque()
        out = []
        for p in params:
            if len(pending) >= self.window:
                out.append(self._result(stmt, *pending.popleft()))
            pending.append((p, self.session.execute_async(stmt, p)))
        out.extend(self._result(stmt, p, f) for p, f in pending)
        return out

    def _result(self, stmt, params, future):
        """The driver refuses requests while the socket buffer is full: resend them."""
        while True:
            try:
                return future.result()
            except NoHostAvailable as exc:
                if not all(isinstance(e, ConnectionBusy) for e in exc.errors.values()):
                    raise
            time.sleep(0.002)
            future = self.session.execute_async(stmt, params)

    def get(self, version: uuid.UUID, lay: Layout) -> bytes:
        params = ((version, i // lay.part_chunks, i) for i in range(lay.chunks))
        return b"".join(rs.one()[0] for rs in self._pipeline(self.get_stmt, params))

    def put(self, data: memoryview, lay: Layout) -> uuid.UUID:
        version, cs = uuid.uuid4(), lay.chunk_size
        params = (
            (version, i // lay.part_chunks, i, data[i * cs : (i + 1) * cs])
            for i in range(lay.chunks)
        )
        self._pipeline(self.put_stmt, params)
        return version

    def drop(self, version: uuid.UUID, lay: Layout) -> None:
        self._pipeline(self.drop_stmt, ((version, p) for p in range(lay.parts)))


def run_case(op: Callable[[int], int], threads: int, duration: float) -> dict[str, float]:
    """Run ``op(i)`` (returns bytes moved) on ``threads`` threads for ``duration`` s."""
    lat: list[float] = []
    moved = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration
    errors: list[BaseException] = []

    def worker(tid: int) -> None:
        i = tid
        mine, nbytes = [], 0
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                nbytes += op(i)
                mine.append(time.perf_counter() - t0)
                i += threads
        except BaseException as exc:
            errors.append(exc)
        with lock:
            lat.extend(mine)
            moved[0] += nbytes

    start = time.monotonic()
    cpu0 = _cpu()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    cpu = _cpu() - cpu0
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "mbps": moved[0] / elapsed / 1e6,
        "cpu_s_per_gb": cpu / (moved[0] / 1e9) if moved[0] else float("nan"),
        "ops": len(lat),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "failed": float(bool(errors)),
        "error": f"{type(errors[0]).__name__}: {errors[0]}"[:200] if errors else "",
    }


def _median(reps: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the repetitions that completed without errors (NaN if none did)."""
    ok = [r for r in reps if not r["failed"]] or [reps[0]]
    out = {k: statistics.median(r[k] for r in ok) for k in ok[0] if k != "error"}
    out["failed_reps"] = sum(1 for r in reps if r["failed"])
    if len(ok) == 1 and ok[0]["failed"]:
        out = {k: float("nan") for k in out} | {"failed_reps": len(reps)}
    for r in reps:
        if r["error"]:
            print(f"  error: {r['error']}", flush=True)
    return out


def _cpu() -> float:
    """CPU seconds of this process (all threads, including the driver's event loop)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--size", default="4MiB,64MiB")
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--op", default="get,put")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()

    store = open_store(args.url, retries=3)
    backend = store.inner
    assert isinstance(backend, CassandraBackend)
    backend._connection()  # creates the keyspace and tables on first use
    raw = Raw(backend)
    s = backend.settings
    sizes = [parse_size(x) for x in args.size.split(",")]
    threads_list = [int(x) for x in args.threads.split(",")]
    ops = args.op.split(",")
    prefix = f"bench-vs-raw/{uuid.uuid4().hex[:8]}/"
    rows: list[str] = []
    summary: list[tuple[str, int, int, float, float]] = []

    for size in sizes:
        nobj = max(4, min(32, (256 << 20) // size))
        data = memoryview(bytes(range(256)) * (size // 256) + b"\x07" * (size % 256))
        lay = Layout(size, s.chunk_size, s.part_chunks)
        keys = [f"{prefix}{size}/{i}" for i in range(nobj)]
        versions = {}
        for key in keys:
            store.put(key, data)
            versions[key] = uuid.UUID(store.head(key).version)
        assert store.get(keys[0]) == data and raw.get(versions[keys[0]], lay) == data
        raw_written: list[uuid.UUID] = []

        impls: dict[str, dict[str, Callable[[int], int]]] = {
            "dcstore": {
                "get": lambda i, keys=keys: len(store.get(keys[i % len(keys)])),
                "put": lambda i, keys=keys, data=data: store.put(keys[i % len(keys)], data).size,
            },
            "raw": {
                "get": lambda i, keys=keys, v=versions, lay=lay: len(
                    raw.get(v[keys[i % len(keys)]], lay)
                ),
                "put": lambda i, data=data, lay=lay, out=raw_written: (
                    out.append(raw.put(data, lay)) or lay.size
                ),
            },
        }
        for op in ops:
            for threads in threads_list:
                results: dict[str, list[dict[str, float]]] = {"dcstore": [], "raw": []}
                for rep in range(args.reps):
                    order = ["dcstore", "raw"] if rep % 2 == 0 else ["raw", "dcstore"]
                    for name in order:
                        results[name].append(run_case(impls[name][op], threads, args.duration))
                        for v in raw_written:
                            raw.drop(v, lay)
                        raw_written.clear()
                med = {name: _median(res) for name, res in results.items()}
                overhead = 1 - med["dcstore"]["mbps"] / med["raw"]["mbps"]  # NaN if raw failed
                cpu_overhead = med["dcstore"]["cpu_s_per_gb"] / med["raw"]["cpu_s_per_gb"] - 1
                for name in ("raw", "dcstore"):
                    m = med[name]
                    spread = ["fail" if r["failed"] else round(r["mbps"]) for r in results[name]]
                    rows.append(
                        f"| {op} | {size >> 20} MiB | {threads} | {name} | {m['mbps']:.0f} "
                        f"| {spread} | {m['p50']:.1f} | {m['p90']:.1f} | {m['p99']:.1f} "
                        f"| {m['ops']:.0f} | {m['cpu_s_per_gb']:.2f} "
                        f"| {'' if name == 'raw' else f'{overhead:+.1%}'} "
                        f"| {'' if name == 'raw' else f'{cpu_overhead:+.1%}'} |"
                    )
                summary.append((op, size, threads, med["dcstore"]["mbps"], med["raw"]["mbps"]))
                print(rows[-2], rows[-1], sep="\n", flush=True)
        for key in keys:
            store.delete(key)

    header = (
        "| op | size | threads | impl | MB/s (median) | MB/s per rep | p50 ms | p90 ms "
        "| p99 ms | ops (median) | client CPU s/GB | overhead (MB/s) | overhead (CPU/GB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(rows)
    print()
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    raw.cluster.shutdown()
    store.close()


if __name__ == "__main__":
    main()
