"""The data-wait floor of torch's DataLoader hand-off on this machine.

A dataset that does no work yields ready uint8 batches (64 x 100 KiB by default)
from 2 workers; the main loop "steps" by sleeping. Whatever time ``next()`` still
takes is the inter-process hand-off itself, which no dataset can remove. The
second line receives the batches in a background thread instead
(:class:`dcstore.loaders.receive.Received`, what ``DeviceLoader`` does), to show
how much of it can be hidden. As in a training loop, the previous batch is
freed in the step (unmapping 6.4 MB of shared memory takes about a millisecond).

    .venv/bin/python bench/dataloader_floor.py [--batch 64] [--sample 102400] [--step 0.02]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from dcstore.loaders.receive import Received


class ReadyBatches(IterableDataset):
    def __init__(self, batches: int, batch: int, sample: int):
        self.batches, self.batch, self.sample = batches, batch, sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.batches):
            data = torch.empty(self.batch * self.sample, dtype=torch.uint8)
            data[::4096] = 1
            yield {"data": data, "__key__": [f"k{i}"] * self.batch}


def measure(batches: Iterable[Any], step: float, steps: int) -> str:
    it = iter(batches)
    held = [next(it)]  # warm-up: worker start
    waits = []
    for _ in range(steps):
        held.clear()  # the step frees the previous batch, then runs
        time.sleep(step)
        start = time.perf_counter()
        try:
            held.append(next(it))
        except StopIteration:
            break
        waits.append(time.perf_counter() - start)
    for _ in it:  # drain, so workers and the receiving thread end cleanly
        pass
    waits.sort()
    pct = 100 * sum(waits) / (sum(waits) + step * len(waits))
    return (
        f"{len(waits)} steps, p50 wait {waits[len(waits) // 2] * 1e3:.2f} ms, data-wait {pct:.1f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sample", type=int, default=100 * 1024)
    parser.add_argument("--step", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    def loader() -> DataLoader:
        ds = ReadyBatches(args.steps // 2 + 2, args.batch, args.sample)
        return DataLoader(ds, batch_size=None, num_workers=2)

    print("DataLoader hand-off in next():  ", measure(loader(), args.step, args.steps))
    print("received in a background thread:", measure(Received(loader()), args.step, args.steps))


if __name__ == "__main__":
    main()
