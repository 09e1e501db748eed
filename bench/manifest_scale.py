"""What opening a dataset costs as its sample count grows: manifest open time, heap,
pickled size (what each DataLoader worker receives) and time to the first sample.

``build`` writes a synthetic N-sample manifest straight with pyarrow, in the
manifest's row-group layout (shards of ``--per-shard`` samples, random checksums,
10-character keys), onto a local store; only shard 0 is a real tar, so the first
sample can be read. Each measurement runs in a fresh process (RSS from
/proc/self/status), optionally against another checkout's ``dcstore`` (``--code``,
e.g. an export of an older commit) to compare before and after.

    .venv/bin/python bench/manifest_scale.py --samples 1000000 10000000 --root /tmp/ms
    .venv/bin/python bench/manifest_scale.py --samples 1000000 --root /tmp/ms --code /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dcstore.backends.local import LocalBackend
from dcstore.loaders.checksum import sample_checksum
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest
from dcstore.loaders.shardindex import SCHEMA, row_groups, write_manifest
from dcstore.loaders.tario import END_OF_ARCHIVE, member_bytes

KEY_CHARS = 10
RECORD = 1024  # one 8-byte "txt" member: header block + padded payload block


def _keys(first: int, n: int) -> pa.Array:
    """Keys ``s%09d`` of samples ``first .. first + n`` as one Arrow string array."""
    ids = np.arange(first, first + n, dtype=np.int64)
    digits = (ids[:, None] // 10 ** np.arange(KEY_CHARS - 2, -1, -1)) % 10 + ord("0")
    chars = np.hstack([np.full((n, 1), ord("s")), digits]).astype(np.uint8)
    offsets = np.arange(0, (n + 1) * KEY_CHARS, KEY_CHARS, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _lists(counts: np.ndarray, values: pa.Array) -> pa.Array:
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(bounds), values)


def _shard0(per_shard: int) -> tuple[bytes, np.ndarray]:
    """A real tar of ``per_shard`` samples and their checksums."""
    records = [
        b"".join(bytes(p) for p in member_bytes(f"s{i:09d}.txt", i.to_bytes(8, "big")))
        for i in range(per_shard)
    ]
    checksums = np.asarray([sample_checksum(r) for r in records], dtype=np.uint64)
    return b"".join(records) + END_OF_ARCHIVE, checksums


def build(root: Path, samples: int, per_shard: int) -> dict[str, float]:
    """Write shard 0 and an N-sample manifest under ``root``; return its size and time."""
    t0 = time.perf_counter()
    store = LocalBackend(str(root))
    data, checksums0 = _shard0(per_shard)
    written = store.put("shards/bench/000000.tar", data)
    shards = -(-samples // per_shard)
    counts = np.full(shards, per_shard, dtype=np.int64)
    counts[-1] = samples - per_shard * (shards - 1)
    rng = np.random.default_rng(0)
    starts = np.concatenate([[0], np.cumsum(counts)])

    def group(a: int, b: int) -> pa.Table:
        c, n = counts[a:b], int(starts[b] - starts[a])
        local = np.arange(n, dtype=np.int64) - np.repeat(starts[a:b] - starts[a], c)
        sums = rng.integers(0, 2**63, n, dtype=np.uint64)
        if a == 0:
            sums[: len(checksums0)] = checksums0
        return pa.table(
            {
                "shard": [f"shards/bench/{i:06d}.tar" for i in range(a, b)],
                "size": pa.array(c * RECORD + len(END_OF_ARCHIVE)),
                "samples": pa.array(c),
                "key_id": pa.nulls(b - a, pa.string()),
                "keys": _lists(c, _keys(int(starts[a]), n)),
                "offsets": _lists(c, pa.array(local * RECORD)),
                "lengths": _lists(c, pa.array(np.full(n, RECORD, dtype=np.int64))),
                "checksums": _lists(c, pa.array(sums)),
                "version": [written.version] * (b - a),
            },
            schema=SCHEMA,
        )

    meta = Manifest("bench", (), versions_of=store.url).file_metadata()
    with open(root / MANIFEST_KEY, "wb") as sink:
        write_manifest(sink, (group(a, b) for a, b in row_groups(counts)), meta)
    return {
        "build_s": time.perf_counter() - t0,
        "manifest_mb": (root / MANIFEST_KEY).stat().st_size / 2**20,
        "shards": shards,
    }


MEASURE = r"""
import json, pickle, sys, time

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

from dcstore.loaders import ShardedDataset
import torch  # noqa: F401 - imported before the baseline, as in a training process
url, iterate, shuffle = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
base = rss_mb()
t = time.perf_counter()
ds = ShardedDataset(url, shuffle=shuffle)
n = ds.manifest.num_samples
out = {"samples": n, "open_s": time.perf_counter() - t, "open_rss_mb": rss_mb() - base}
blob = pickle.dumps(ds)
out["pickle_bytes"] = len(blob)
t = time.perf_counter()
ds.read(0)
out["read0_s"] = time.perf_counter() - t
if iterate and shuffle:  # only shard 0 is real: time the plan and its first block instead
    t = time.perf_counter()
    ds.plan().blocks[0]
    out["plan_first_s"] = time.perf_counter() - t
elif iterate:
    t = time.perf_counter()
    next(iter(ds))
    out["iter_first_s"] = time.perf_counter() - t
out["rss_mb"] = rss_mb() - base
del ds
base = rss_mb()
t = time.perf_counter()
worker = pickle.loads(blob)
worker.read(0)
out["worker_first_s"] = time.perf_counter() - t
out["worker_rss_mb"] = rss_mb() - base
print(json.dumps(out))
"""


def measure(root: Path, code: str | None, iterate: bool, shuffle: bool) -> dict[str, float]:
    """The measurements of :data:`MEASURE` in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = code = code or str(Path(__file__).resolve().parents[1])
    done = subprocess.run(  # run in ``code``: ``-c`` puts the working directory first on the path
        [sys.executable, "-c", MEASURE, f"file://{root}", "1" if iterate else "0",
         "1" if shuffle else "0"],
        capture_output=True, text=True, env=env, cwd=code, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"measuring {root} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--root", type=Path, required=True, help="where datasets are built")
    parser.add_argument("--code", help="PYTHONPATH of the dcstore to measure (default: this one)")
    parser.add_argument("--no-iter", action="store_true", help="skip next(iter(ds)) (plans N)")
    parser.add_argument(
        "--shuffle", action="store_true", help="time the shuffled plan and its first block instead"
    )
    args = parser.parse_args()
    for samples in args.samples:
        root = args.root / f"n{samples}"
        built = {}
        if not (root / MANIFEST_KEY).exists():
            built = build(root, samples, args.per_shard)
        size = (root / MANIFEST_KEY).stat().st_size / 2**20
        got = measure(root, args.code, not args.no_iter, args.shuffle)
        print(json.dumps({"N": samples, "manifest_mb": round(size, 1), **built, **got}), flush=True)


if __name__ == "__main__":
    main()
