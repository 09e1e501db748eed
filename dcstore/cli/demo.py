"""``dcstore demo``: pack a synthetic image dataset encrypted, train one epoch through it.

No server needed: the dataset lives in a local store under a work folder with
a freshly generated key file. Prints samples/s, MB/s and data-wait %.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = 10


def synthetic_images(n: int, size: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Image-like samples whose class is recoverable from a coloured blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        label = int(rng.integers(CLASSES))
        img = rng.integers(0, 64, (3, size, size), dtype=np.uint8)
        cy, cx = (label // 5) * size // 2 + size // 4, (label % 5) * size // 5 + size // 10
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2
        img[label % 3][blob] = 255
        yield {"__key__": f"img{i:07d}", "rgb": img.tobytes(), "cls": label}


def _model(size: int) -> Any:
    import torch
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, CLASSES),
    ).to(memory_format=torch.contiguous_format)  # fmt: skip


def _collate(size: int) -> Callable[[list[dict[str, Any]]], tuple[Any, Any]]:
    def collate(samples: list[dict[str, Any]]) -> tuple[Any, Any]:
        import torch

        data = np.empty((len(samples), 3 * size * size), dtype=np.uint8)
        labels = np.empty(len(samples), dtype=np.int64)
        for i, s in enumerate(samples):
            data[i] = np.frombuffer(s["rgb"], dtype=np.uint8)
            labels[i] = int(bytes(s["cls"]))
        return torch.from_numpy(data).view(-1, 3, size, size), torch.from_numpy(labels)

    return collate


WARMUP_STEPS = 5


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import DeviceLoader, ShardedDataset, ShardWriter

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dcstore-demo-"))
    keys = f"file://{work / 'kek.json'}"
    url = f"file://{work / 'dataset'}"
    try:
        t0 = time.perf_counter()
        write_key_file(work / "kek.json", Keyring.generate())
        with ShardWriter(url, keys=keys, shard_size=args.shard_size) as writer:
            for sample in synthetic_images(args.samples, args.image_size):
                writer.write(sample)
        print(
            f"packed {args.samples} encrypted samples ({args.image_size}x{args.image_size} RGB) "
            f"into {len(writer.shards)} shards at {url} in {time.perf_counter() - t0:.1f} s"
        )
        ds = ShardedDataset(url, keys=keys, shuffle=True, seed=0)
        ds.batched(args.batch_size, _collate(args.image_size))
        # warm-up as in bench/loaders_compare.py: worker start-up and the model's first steps
        loader = DeviceLoader(
            DataLoader(ds, batch_size=None, num_workers=args.workers), warmup=WARMUP_STEPS
        )
        model = _model(args.image_size).to(loader.device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        torch.manual_seed(0)
        seen = correct = 0
        losses: list[float] = []
        start = time.perf_counter()
        for images, labels in loader:
            x = images.float().div_(255)
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, labels)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            losses.append(loss.item())
            seen += len(labels)
            correct += int((out.argmax(1) == labels).sum())
        elapsed = time.perf_counter() - start
        mb = seen * 3 * args.image_size**2 / 1e6
        print(
            f"trained 1 epoch on {loader.device}: {seen} samples in {elapsed:.1f} s = "
            f"{seen / elapsed:,.0f} samples/s, {mb / elapsed:,.1f} MB/s; "
            f"loss {np.mean(losses[:5]):.2f} -> {np.mean(losses[-5:]):.2f}, "
            f"train accuracy {100 * correct / max(seen, 1):.1f}%"
        )
        print(loader.meter.format())
        print(
            f"the whole epoch, start-up included: {sum(loader.meter.waits):.2f} s of "
            f"{elapsed:.2f} s waiting for data ({100 * sum(loader.meter.waits) / elapsed:.1f}%)"
        )
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="pack a synthetic dataset encrypted and train one epoch through it",
        description="Builds a synthetic image-like dataset, packs it encrypted into a local "
        "store with a new key file, trains a small model for one epoch through "
        "ShardedDataset + DataLoader, and prints samples/s, MB/s and data-wait %.",
    )
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=16 * 1024**2)
    p.add_argument("--workdir", help="keep the dataset and key file here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.set_defaults(func=run)
