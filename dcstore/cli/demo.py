"""``dcstore demo``: pack a synthetic image dataset encrypted, train one epoch through it.

No server needed: the dataset lives in a local store under a work folder with
a freshly generated key file (``--workdir``: a key file already there is used, never
replaced, and the dataset there gets a new version). Batches reach the training loop through
``RingLoader`` (reused shared-memory slots; ``--loader dataloader`` for torch's
``DataLoader`` with the same samples). Prints samples/s, MB/s and data-wait %.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dcstore.cli.common import int_at_least, positive_size_arg

CLASSES = 10
MIN_IMAGE_SIZE = 8
"""Below this the blobs that carry the class vanish (``synthetic_images``)."""


def synthetic_images(n: int, size: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Image-like samples whose class is recoverable from a coloured blob."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        label = int(rng.integers(CLASSES))
        img = rng.integers(0, 64, (3, size, size), dtype=np.uint8)
        cy, cx = (label // 5) * size // 2 + size // 4, (label % 5) * size // 5 + size // 10
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2
        img[label % 3][blob] = 255
        yield {"__key__": f"img{i:07d}", "rgb": img.tobytes(), "cls": label}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _model(size: int) -> Any:
    import torch
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, CLASSES),
    ).to(memory_format=torch.contiguous_format)  # fmt: skip


def _image_and_label(size: int) -> Callable[[dict[str, Any]], tuple[Any, int]]:
    import numpy as np

    def image_and_label(sample: dict[str, Any]) -> tuple[Any, int]:
        image = np.frombuffer(sample["rgb"], dtype=np.uint8).reshape(3, size, size)
        return image, int(bytes(sample["cls"]))

    return image_and_label


def _loader(ds: Any, args: argparse.Namespace) -> Any:
    """The batches: RingLoader, or torch's DataLoader collating the same samples."""
    from torch.utils.data import DataLoader, default_collate

    from dcstore.loaders import RingLoader

    ds = ds.map(_image_and_label(args.image_size))
    if args.loader == "ring":
        return RingLoader(ds, args.batch_size, num_workers=args.workers)
    return DataLoader(
        ds.batched(args.batch_size, default_collate), batch_size=None, num_workers=args.workers
    )


WARMUP_STEPS = 5


def run(args: argparse.Namespace) -> int:
    import torch

    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import DeviceLoader, ShardedDataset, ShardWriter

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dcstore-demo-")).resolve()
    key_file = work / "kek.json"
    keys = f"file://{key_file}"
    url = f"file://{work / 'dataset'}"
    try:
        t0 = time.perf_counter()
        if key_file.exists():
            print(f"using the key file already at {key_file} (the demo never replaces one)")
        else:
            write_key_file(key_file, Keyring.generate())
        with ShardWriter(url, keys=keys, shard_size=args.shard_size) as writer:
            for sample in synthetic_images(args.samples, args.image_size):
                writer.write(sample)
        print(
            f"packed {args.samples} encrypted samples ({args.image_size}x{args.image_size} RGB) "
            f"into {len(writer.shards)} shards at {url} in {time.perf_counter() - t0:.1f} s"
        )
        ds = ShardedDataset(url, keys=keys, shuffle=True, seed=0)
        # warm-up as in bench/loaders_compare.py: worker start-up and the model's first steps
        loader = DeviceLoader(_loader(ds, args), warmup=WARMUP_STEPS)
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
            f"trained 1 epoch on {loader.device} through {type(loader.loader).__name__}: "
            f"{seen} samples in {elapsed:.1f} s = "
            f"{seen / elapsed:,.0f} samples/s, {mb / elapsed:,.1f} MB/s; "
            f"loss {_mean(losses[:5]):.2f} -> {_mean(losses[-5:]):.2f}, "
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
        "ShardedDataset + RingLoader (or DataLoader), and prints samples/s, MB/s and "
        "data-wait %.",
    )
    p.add_argument("--samples", type=int_at_least(1), default=20_000)
    p.add_argument(
        "--image-size", type=int_at_least(MIN_IMAGE_SIZE), default=32, help="pixels a side"
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=256)
    p.add_argument("--workers", type=int_at_least(0), default=2)
    p.add_argument(
        "--loader", choices=("ring", "dataloader"), default="ring",
        help="RingLoader (default) or torch's DataLoader (batches collated in the worker)",
    )  # fmt: skip
    p.add_argument("--shard-size", type=positive_size_arg, default=16 * 1024**2, help="e.g. 16MiB")
    p.add_argument(
        "--workdir",
        help="keep the dataset and key file here (default: a temp dir); a key file there "
        "is used, never replaced",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.set_defaults(func=run)
