"""Token blocks into a GPU: ``TokenDataset`` through ``DataLoader`` and ``RingLoader``,
each behind ``DeviceLoader``, with a fixed synthetic step, at several worker counts.

One synthetic token corpus (``--tokens``, default 64M uint16 ids in 64 MiB shards, written
once under ``--root`` with ``TokenWriter``, plaintext and encrypted) is read for one epoch
per (loader, workers, encryption): blocks of ``--block-size`` tokens, ``--batch`` per
batch, shuffle on, page cache warm. Each batch is moved to the device (pinned, side
stream) and converted to ``int64`` there; the "step" is a ``--step-ms`` sleep after it.
Reported per row: blocks/s, M tokens/s, data-wait % of step time and p99 wait
(``DataWaitMeter``), first batch. Without CUDA the same runs on the CPU device.

Usage: python bench/tokens_device.py [--workers 2 8] [--out tokens-device.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dcstore import DeviceLoader, RingLoader
from dcstore.crypto import Keyring, write_key_file
from dcstore.tokens import TokenWriter
from dcstore.tokens.dataset import TokenDataset


def write_corpus(root: Path, tokens: int, keys: str | None) -> str:
    """A corpus of ``tokens`` random ids in documents of 100-4000 tokens (made once)."""
    name = f"tokens-{tokens}-{'enc' if keys else 'plain'}"
    url = str(root / name)
    if (root / name / "tokens.parquet").exists():
        return url
    rng = np.random.default_rng(0)
    with TokenWriter(url, vocab_size=50_257, eod=50_256, keys=keys) as writer:
        written = 0
        while written < tokens:
            n = min(int(rng.integers(100, 4000)), tokens - written)
            writer.write(rng.integers(0, 50_256, n, dtype=np.uint16))
            written += n + 1
    return url


def one_epoch(loader_kind: str, ds: TokenDataset, args: argparse.Namespace, workers: int,
              device: str) -> dict[str, float]:  # fmt: skip
    if loader_kind == "ring":
        loader = RingLoader(ds, batch_size=args.batch, num_workers=workers)
    else:
        loader = DataLoader(ds, batch_size=args.batch, num_workers=workers,
                            pin_memory=device == "cuda")  # fmt: skip
    feed = DeviceLoader(loader, device)
    start = time.perf_counter()
    blocks = 0
    for batch in feed:
        x = batch.to(torch.int64)  # on the device: 4x less to copy than int64 on the host
        blocks += x.shape[0]
        if device == "cuda":
            torch.cuda.synchronize()
        time.sleep(args.step_ms / 1000)
    seconds = time.perf_counter() - start
    summary = feed.meter.summary()
    return {
        "blocks": blocks,
        "blocks_s": blocks / seconds,
        "mtok_s": blocks * args.block_size / seconds / 1e6,
        "wait_pct": summary["data_wait_pct"],
        "wait_p99_ms": summary["wait_p99_ms"],
        "first_s": summary["first_batch_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=64_000_000)
    p.add_argument("--block-size", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    p.add_argument("--step-ms", type=float, default=0.0)
    p.add_argument("--root", default="/tmp/dcstore-tokens-device")
    p.add_argument("--out", help="write the markdown table here")
    args = p.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    keys = str(root / "kek.json")
    if not os.path.exists(keys):
        write_key_file(keys, Keyring.generate())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    urls = {"plain": write_corpus(root, args.tokens, None),
            "encrypted": write_corpus(root, args.tokens, keys)}  # fmt: skip
    gpu = torch.cuda.get_device_name() if device == "cuda" else "no GPU"
    lines = [
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{gpu}, torch {torch.__version__}. Command: `python bench/tokens_device.py "
        f"--tokens {args.tokens} --workers {' '.join(map(str, args.workers))} "
        f"--step-ms {args.step_ms}`",
        "",
        "| loader | data | workers | blocks | blocks/s | M tokens/s | data-wait % | p99 wait ms "
        "| first batch s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workers in args.workers:
        for data, url in urls.items():
            for kind in ("dataloader", "ring"):
                ds = TokenDataset(url, block_size=args.block_size, shuffle=True, seed=0,
                                  keys=keys if data == "encrypted" else None)  # fmt: skip
                r = one_epoch(kind, ds, args, workers, device)
                lines.append(
                    f"| {kind} | {data} | {workers} | {r['blocks']:,.0f} | {r['blocks_s']:,.0f} "
                    f"| {r['mtok_s']:.1f} | {r['wait_pct']:.2f} | {r['wait_p99_ms']:.2f} "
                    f"| {r['first_s']:.2f} |"
                )
                print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
