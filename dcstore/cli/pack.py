"""``dcstore pack SRC DEST``: image folders, files, .tar shards or an index -> a dataset
(``--text``: a corpus -> token shards, see :mod:`dcstore.cli.pack_text`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dcstore.cli.common import (
    add_store_options,
    human_size,
    int_at_least,
    naming_what_a_failed_pack_left,
    note_foreign_objects,
    open_from_args,
    positive_size_arg,
    protection,
    size_arg,
    transfer_progress,
)
from dcstore.cli.pack_text import add_text_options
from dcstore.errors import ConfigError

SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})
"""Folder names that are dataset splits, not classes (ImageFolder's usual mistake)."""


def _note_skipped(files: tuple[str, ...], what: str, advice: str) -> None:
    """A note on stderr naming the first of ``files`` a layout left out, and ``advice``."""
    if not files:
        return
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    print(
        f"dcstore: note: skipped {len(files)} file(s) {what} ({files[0]}{more}); {advice}",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    _refuse_dest_inside_src(args.src, args.dest)
    if args.text:
        from dcstore.cli import pack_text

        return pack_text.run(args)
    from dcstore.loaders.ingest import plan_source
    from dcstore.loaders.manifest import MANIFEST_KEY, load_manifest
    from dcstore.loaders.packing import default_workers, pack_plan
    from dcstore.loaders.versions import DEFAULT_KEEP, SHARDS_PREFIX
    from dcstore.loaders.writer import new_version

    plan = plan_source(
        args.src, layout=args.layout, index=args.index, group=args.group, names=args.names
    )
    _note_skipped(
        plan.outside,
        "beside the class folders",
        "only files in a class folder are samples, as in torchvision's ImageFolder: move "
        "them into one, or pass --layout flat to pack every file",
    )
    _note_skipped(
        plan.skipped,
        "that are not images in class folders",
        "pass --group to pack files beside their images, or --layout flat to pack every file",
    )
    splits = sorted(set(plan.classes) & SPLIT_NAMES)
    if plan.layout == "imagefolder" and splits:
        print(
            f"dcstore: note: class folders {', '.join(splits)} look like dataset splits; "
            f"to pack one split, pass its folder (e.g. {Path(args.src) / splits[0]})",
            file=sys.stderr,
        )
    if args.shuffle:
        plan = plan.shuffled(args.seed)
    store = open_from_args(args.dest, args)
    note_foreign_objects(store, MANIFEST_KEY)
    start = time.perf_counter()
    version = new_version()
    with transfer_progress(not args.quiet) as progress:
        task = progress.add_task(f"packing {args.src}", total=plan.total_bytes)
        with naming_what_a_failed_pack_left(
            store,
            args.dest,
            version,
            shards_prefix=SHARDS_PREFIX,
            manifest_key=MANIFEST_KEY,
            current=lambda s: load_manifest(s).version,
        ):
            manifest = pack_plan(
                store,
                plan,
                shard_size=args.shard_size,
                workers=args.workers or default_workers(),
                keep=args.keep or DEFAULT_KEEP,
                progress=lambda nbytes: progress.advance(task, nbytes),
                version=version,
            )
    rate = human_size(plan.total_bytes / max(time.perf_counter() - start, 1e-9))
    classes = f", {len(manifest.classes)} classes" if manifest.classes else ""
    print(
        f"packed {manifest.num_samples} samples ({plan.layout}{classes}) into "
        f"{len(manifest.shards)} shards ({human_size(manifest.total_bytes)}) at {store.url}, "
        f"version {manifest.version}, {protection(store)}, {rate}/s; "
        f"keeping {1 + len(manifest.previous)} version(s)",
        file=sys.stdout,
    )
    return 0


def _refuse_dest_inside_src(src: str, dest: str) -> None:
    """A local destination inside SRC (``pack . ds``) would be walked by the next pack
    into it, its own shards taken for samples (or ``ds`` for a class folder); a hidden
    folder (``.packed``) is not walked, so it may be there."""
    from dcstore.backends.options import parse_url

    url = parse_url(dest)
    if url.scheme != "file" or url.netloc:  # file://host/...: the store itself refuses it
        return
    source, target = Path(src).resolve(), Path(url.path).resolve()
    inside = source.is_dir() and target.is_relative_to(source)
    if inside and not any(part.startswith(".") for part in target.relative_to(source).parts):
        raise ConfigError(
            f"the destination {dest} is inside SRC {src}: packing again would take the "
            "dataset's own files for samples; pack into a folder outside SRC"
        )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "pack",
        help="pack image folders, files, .tar shards or an index into a dataset",
        description="Pack SRC into WebDataset-compatible tar shards plus a manifest at DEST "
        "(committed last; with --keys the shards are encrypted). One file is one sample "
        "(key: its path without the extension; field: the extension, lower-cased); class "
        "folders (ImageFolder) add field cls and a class table. Samples are shuffled at "
        "pack time. Each pack is a new version; the last --keep versions stay readable "
        "and older ones are deleted after the commit. With --text, SRC is a text corpus "
        "packed into token shards for TokenDataset / DocumentDataset (keeping the "
        "previous version, whatever --keep says).",
    )
    p.add_argument(
        "src", metavar="SRC", help="folder of class folders or files, a .tar, or a folder of .tar"
    )
    p.add_argument("dest", metavar="DEST", help="storage URL of the dataset")
    p.add_argument(
        "--layout",
        default="auto",
        metavar="LAYOUT",
        help="how SRC is organised: auto (default: detect), imagefolder, flat, webdataset, index",
    )
    p.add_argument(
        "--index",
        metavar="FILE",
        help="JSONL/CSV/Parquet table of files: column path (relative to SRC), optional "
        "label, other columns become fields",
    )
    p.add_argument(
        "--group",
        action="store_true",
        help="group files webdataset-style: x.jpg + x.json (same name up to the first dot) "
        "make one sample",
    )
    p.add_argument(
        "--no-names",
        dest="names",
        action="store_false",
        help="do not store the original file names (field path.txt)",
    )
    p.add_argument(
        "--seed", type=int_at_least(0), default=0, help="pack-time shuffle seed (default 0)"
    )
    p.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="keep the sorted source order (class by class for an ImageFolder)",
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1),
        metavar="N",
        help="processes that pack shards (default: one per core, at most 8; at most one "
        "per 128 MiB of input)",
    )
    p.add_argument(
        "--keep",
        type=int_at_least(1),
        metavar="N",
        help="versions to keep, the new one included (default 2; with --text a token "
        "corpus keeps the new version and the previous one)",
    )
    p.add_argument(
        "--shard-size",
        type=positive_size_arg,
        default=64 * 1024**2,
        metavar="SIZE",
        help="target shard size (default 64MiB)",
    )
    p.add_argument(
        "--segment-size",
        type=size_arg,
        metavar="SIZE",
        help="with --keys: encrypted segment size (default 4MiB); smaller makes random reads "
        "of single samples or token blocks cheaper (docs/tokens.md)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_text_options(p)
    add_store_options(p)
    p.set_defaults(func=run)
