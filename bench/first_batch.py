"""Time to the first batch: ShardedDataset through DataLoader and RingLoader against LitData.

Each run builds the dataset and its loader (``num_workers=2``, ``batch_size=64``, shuffling
on, the count-only ``touch`` collate of ``loaders_compare.py``; ``RingLoader`` hands the payload
to the main process, so it is compared with LitData handing over the payload too, its
``tensor`` collate: ``litdata-tensor``) in a warm process and times
until the first batch is in the main process (dataset construction, worker start, the
first batch's reads). Loaders are interleaved (order rotated each repetition); the ratio to
LitData is taken within each repetition. Uses the datasets ``loaders_compare.py`` writes
(run it once, or with ``--prepare-only``).

Usage: .venv/bin/python bench/first_batch.py [--reps 7] [--root bench/results/tmp/loaders]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def first_batch_s(name: str, root: Path, batch: int, workers: int) -> float:
    from loaders_compare import collate_tensor, collate_touch, ring_fields
    from torch.utils.data import DataLoader

    from dcstore.loaders import RingLoader, ShardedDataset

    t0 = time.perf_counter()
    loader: Any
    if name == "dcstore":
        ds = ShardedDataset(f"file://{root}/dcstore-plain", shuffle=True, seed=0)
        loader = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate_touch)
    elif name == "dcstore-ring":
        ds = ShardedDataset(f"file://{root}/dcstore-plain", shuffle=True, seed=0, zero_copy=True)
        loader = RingLoader(ds.map(ring_fields), batch, num_workers=workers)
    else:
        import litdata
        from litdata import StreamingDataLoader

        lit = litdata.StreamingDataset(input_dir=str(root / "litdata"), shuffle=True)
        collate = collate_tensor if name == "litdata-tensor" else collate_touch
        loader = StreamingDataLoader(lit, batch_size=batch, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    first = next(it)
    elapsed = time.perf_counter() - t0
    del first
    for i, _ in enumerate(it):  # a few more batches, then the workers are stopped
        if i == 20:
            break
    del it
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--root", default="bench/results/tmp/loaders")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    root = Path(args.root).resolve()
    names = ["dcstore", "dcstore-ring", "litdata", "litdata-tensor"]
    got: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            got[name].append(first_batch_s(name, root, args.batch, args.workers))
    for name, times in got.items():
        reps = " ".join(f"{t:.3f}" for t in times)
        print(f"{name:13s} median {statistics.median(times):.3f} s; reps {reps}")
    for name, peer in (("dcstore", "litdata"), ("dcstore-ring", "litdata-tensor")):
        ratios = [a / b for a, b in zip(got[name], got[peer], strict=True)]
        listed = " ".join(f"{r:.2f}" for r in ratios)
        print(f"{name} / {peer} per rep {listed}; median {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
