"""``dcstore maintenance``: storage housekeeping that no read or write path does by itself.

``dcstore maintenance sweep URL [--older-than DURATION]`` reclaims the chunks of puts
whose writer died before committing (Cassandra: intent rows older than the limit;
MongoDB: orphaned GridFS chunks and superseded revisions; local disk and HDFS: the
temporary files of killed writers, by default once untouched for a day). A backend
that never leaves such garbage (memory) reports that there is nothing to sweep.

``dcstore gc STORE [--dry-run]`` deletes the shards and archived manifests a pack
wrote (known by name: :data:`dcstore.loaders.versions.PACK_OBJECTS`) that the dataset's
current manifest and the versions it keeps no longer reference (versions dropped by
hand, packs that failed or were interrupted); in a store holding a token corpus, the
token shards no kept version references; in one holding both (a corpus packed beside a
dataset), both. An object no pack wrote is never removed.

``dcstore versions STORE`` lists the versions a dataset (or token corpus, or both, each
under its heading) keeps, the current one first: the names ``ShardedDataset(...,
version=)`` (``TokenDataset``) accepts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.backends.registry import open_backend
from dcstore.cli.common import (
    add_opt_flag,
    add_store_options,
    human_size,
    open_from_args,
    parse_options,
)
from dcstore.errors import NotFoundError
from dcstore.units import parse_duration

if TYPE_CHECKING:
    from dcstore.loaders.versions import KeptVersion


def cmd_sweep(args: argparse.Namespace) -> int:
    older_than = None if args.older_than is None else parse_duration(args.older_than)
    with open_backend(args.url, **parse_options(args.option)) as backend:
        reclaimed = backend.sweep(older_than=older_than)
    if args.json:
        json.dump({"url": str(backend), "reclaimed": reclaimed}, sys.stdout)
        sys.stdout.write("\n")
    elif reclaimed is None:
        print(f"{backend}: nothing to sweep (puts on this backend leave no partial data)")
    else:
        print(f"{backend}: reclaimed {reclaimed} abandoned version(s)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with open_from_args(args.store, args) as store:
        manifests = _datasets(store, args.manifest)
        garbage = [m for key in manifests for m in _garbage(store, key, args)]
    total = sum(meta.size for meta in garbage)
    verb = "would remove" if args.dry_run else "removed"
    if args.json:
        json.dump(
            {
                "url": store.url,
                "dry_run": args.dry_run,
                "objects": [{"key": m.key, "size": m.size} for m in garbage],
                "bytes": total,
            },
            sys.stdout,
        )
        sys.stdout.write("\n")
        return 0
    for meta in garbage:
        print(f"{verb} {meta.key} ({human_size(meta.size)})")
    print(f"{store.url}: {verb} {len(garbage)} object(s), {human_size(total)}")
    return 0


def _garbage(store: Backend, manifest_key: str, args: argparse.Namespace) -> list[ObjectMeta]:
    """gc of the dataset (or token corpus) whose manifest is at ``manifest_key``."""
    from dcstore.loaders.versions import collect_garbage
    from dcstore.tokens.manifest import TOKENS_KEY, collect_token_garbage

    if manifest_key == TOKENS_KEY:
        return collect_token_garbage(store, dry_run=args.dry_run)
    try:
        return collect_garbage(store, manifest_key, dry_run=args.dry_run)
    except NotFoundError as exc:  # a failed first pack, or a manifest lost: unknowable
        raise NotFoundError(
            f"{exc}; gc removes nothing without one (it cannot tell the shards of a "
            "failed first pack from those of a dataset whose manifest is elsewhere "
            "or lost): remove a failed pack's shards with `dcstore rm -r "
            f"{args.store} shards/VERSION/` (a token pack's: tokens/VERSION/), "
            f"VERSION as its error named it or `dcstore ls {args.store}` shows"
        ) from None


def _datasets(store: Backend, manifest_key: str) -> list[str]:
    """The manifests of the datasets at STORE: under the default manifest key, the sample
    dataset's, the token corpus's, or both (one packed beside the other); none there, the
    dataset's (whose absence its command reports). Another key: that dataset alone."""
    from dcstore.loaders.manifest import MANIFEST_KEY  # pyarrow: imported only when run
    from dcstore.tokens.manifest import dataset_manifests

    if manifest_key != MANIFEST_KEY:
        return [manifest_key]
    return dataset_manifests(store) or [MANIFEST_KEY]


def _kept_versions(store: Backend, manifest_key: str) -> list[KeptVersion[Any]]:
    """The kept versions of the dataset (or token corpus) whose manifest is at ``manifest_key``."""
    from dcstore.loaders.versions import list_versions
    from dcstore.tokens.manifest import TOKENS_KEY, list_token_versions

    if manifest_key == TOKENS_KEY:
        return list_token_versions(store)
    return list_versions(store, manifest_key)


def _contents(manifest: Any) -> dict[str, int]:
    """What a version holds: samples (or tokens), shards and bytes."""
    if hasattr(manifest, "num_samples"):
        count = {"samples": manifest.num_samples}
        size = manifest.total_bytes
    else:
        count = {"tokens": manifest.num_tokens}
        size = manifest.num_tokens * manifest.itemsize
    return {**count, "shards": len(manifest.shards), "bytes": size}


def _version_rows(store: Backend, manifest_key: str) -> list[dict[str, Any]]:
    """One row per kept version of the dataset whose manifest is at ``manifest_key``."""
    from dcstore.tokens.manifest import TOKENS_KEY

    dataset = "tokens" if manifest_key == TOKENS_KEY else "samples"
    return [
        {"dataset": dataset, "version": v.version, "current": v.current, "key": v.key}
        | {"missing": v.manifest is None}
        | ({} if v.manifest is None else _contents(v.manifest))
        for v in _kept_versions(store, manifest_key)
    ]


def cmd_versions(args: argparse.Namespace) -> int:
    from dcstore.tokens.manifest import DATASET_KINDS

    with open_from_args(args.store, args) as store:
        manifests = _datasets(store, args.manifest)
        tables = {key: _version_rows(store, key) for key in manifests}
    if args.json:
        rows = [row for key in manifests for row in tables[key]]
        json.dump({"url": store.url, "versions": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for key, rows in tables.items():
        if len(tables) > 1:  # a corpus beside a dataset: say which versions are whose
            print(f"{DATASET_KINDS[key]} ({key}):")
        for row in rows:
            print(("  " if len(tables) > 1 else "") + _version_line(row))
    return 0


def _version_line(row: dict[str, Any]) -> str:
    """A kept version, as ``dcstore versions`` prints it."""
    role = "current" if row["current"] else "kept"
    if row["missing"]:
        return f"{row['version']}  {role:7}  archive {row['key']} missing"
    unit = row["dataset"]
    return (
        f"{row['version']}  {role:7}  {row[unit]} {unit} in {row['shards']} shard(s), "
        f"{human_size(row['bytes'])}"
    )


def _dataset_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str,
    description: str,
) -> argparse.ArgumentParser:  # fmt: skip
    """A subcommand on the dataset at STORE: STORE, --manifest, --json and store options."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("store", metavar="STORE", help="storage URL of the dataset")
    p.add_argument(
        "--manifest", default="manifest.parquet", metavar="KEY",
        help="the dataset's manifest key (default manifest.parquet)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable result")
    add_store_options(p)
    return p


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    g = _dataset_command(
        subparsers,
        "gc",
        help="delete dataset objects no kept version references",
        description="Delete the shards and archived manifests a pack wrote to STORE "
        "(shards/VERSION/NNNNNN.tar, versions/VERSION.parquet; a token corpus: "
        "tokens/VERSION/NNNNNN.bin, VERSION named as a pack names it) that neither the "
        "current manifest nor the earlier versions it keeps reference (in a store holding "
        "both, of the dataset and of the corpus), and print each one; other objects are "
        "never touched. Do not run it while a pack into STORE is "
        "in progress (its shards are not referenced until it commits).",
    )
    g.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, remove nothing"
    )
    g.set_defaults(func=cmd_gc)
    _dataset_command(
        subparsers,
        "versions",
        help="list the versions a dataset keeps (the names version= accepts)",
        description="List the current version of the dataset at STORE and the earlier "
        "versions it keeps, newest first, with their samples, shards and size (a token "
        "corpus's: tokens; a store holding both lists each under its heading). Any of them "
        "can be read with ShardedDataset(STORE, version=NAME) (TokenDataset).",
    ).set_defaults(func=cmd_versions)

    p = subparsers.add_parser("maintenance", help="storage housekeeping (sweep abandoned puts)")
    sub = p.add_subparsers(dest="maintenance_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser(
        "sweep",
        help="delete chunks of puts whose writer died before committing",
        description="Delete the chunks or temporary files of puts abandoned more than "
        "--older-than ago (a duration: 90s, 30m, 2h, 0s; a bare number is seconds; "
        "default: the backend's own: 1 hour on Cassandra and "
        "MongoDB, a day on local disk and HDFS). Puts still in flight are younger than "
        "that and are left alone; on local disk an open writer is never swept, whatever "
        "--older-than says.",
    )
    s.add_argument("url", metavar="URL", help="storage URL, e.g. cassandra://host:9042/ks")
    s.add_argument("--older-than", default=None, metavar="DURATION")
    add_opt_flag(s)
    s.add_argument("--json", action="store_true", help="machine-readable result")
    s.set_defaults(func=cmd_sweep)
