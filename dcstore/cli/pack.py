"""``dcstore pack SRC DEST``: a folder of files or webdataset .tar shards -> a dataset."""

from __future__ import annotations

import argparse
import sys
import time

from dcstore.cli.common import add_store_options, human_size, open_from_args, transfer_progress
from dcstore.errors import ConfigError


def parse_size(text: str) -> int:
    """``64MiB``, ``1GB``, ``500k``, ``123`` -> bytes."""
    units = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 1024, "mi": 1024**2, "gi": 1024**3}
    raw = text.strip().lower().removesuffix("b")
    number = raw.rstrip("kmgi")
    unit = raw[len(number) :]
    try:
        return int(float(number) * units[unit])
    except (ValueError, KeyError):
        raise ConfigError(f"bad size {text!r}; use e.g. 64MiB, 1GB, 500k") from None


def run(args: argparse.Namespace) -> int:
    from dcstore.loaders.ingest import source_samples
    from dcstore.loaders.writer import ShardWriter

    samples, total = source_samples(args.src)
    store = open_from_args(args.dest, args)
    start = time.perf_counter()
    done = 0
    with transfer_progress(not args.quiet) as progress:
        task = progress.add_task(f"packing {args.src}", total=total)
        writer = ShardWriter(store, shard_size=args.shard_size)
        try:
            for sample in samples:
                writer.write(sample)
                done += sum(len(v) for k, v in sample.items() if k[:2] != "__")  # type: ignore[arg-type]
                progress.update(task, completed=done)
            manifest = writer.close()
        except BaseException:
            writer.abort()
            raise
    rate = human_size(done / max(time.perf_counter() - start, 1e-9))
    print(
        f"packed {manifest.num_samples} samples into {len(manifest.shards)} shards "
        f"({human_size(manifest.total_bytes)}) at {store.url}, version {manifest.version}, "
        f"{'encrypted' if args.keys else 'plaintext'}, {rate}/s",
        file=sys.stdout,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pack",
        help="pack a folder of files or .tar shards into a dataset",
        description="Pack SRC (a folder whose files a/key.ext group into samples by key, or "
        "webdataset .tar shards) into WebDataset-compatible tar shards plus a manifest at "
        "DEST; the manifest is committed last. With --keys the shards are encrypted.",
    )
    p.add_argument("src", metavar="SRC", help="folder of files, a .tar, or a folder of .tar")
    p.add_argument("dest", metavar="DEST", help="storage URL of the dataset")
    p.add_argument(
        "--shard-size", type=parse_size, default=64 * 1024**2, metavar="SIZE",
        help="target shard size (default 64MiB)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_store_options(p)
    p.set_defaults(func=run)
