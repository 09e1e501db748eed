"""``dcstore maintenance``: storage housekeeping that no read or write path does by itself.

``dcstore maintenance sweep URL [--older-than SECONDS]`` reclaims the chunks of puts
whose writer died before committing (Cassandra: intent rows older than the limit;
MongoDB: orphaned GridFS chunks and superseded revisions; local disk and HDFS: the
temporary files of killed writers, by default once untouched for a day). A backend
that never leaves such garbage (memory) reports that there is nothing to sweep.

``dcstore gc STORE [--dry-run]`` deletes the shards and archived manifests a pack
wrote (known by name: :data:`dcstore.loaders.versions.PACK_OBJECTS`) that the dataset's
current manifest and the versions it keeps no longer reference (versions dropped by
hand, packs that failed or were interrupted); in a store holding a token corpus, the
token shards no kept version references. An object no pack wrote is never removed.

``dcstore versions STORE`` lists the versions a dataset (or token corpus) keeps, the
current one first: the names ``ShardedDataset(..., version=)`` (``TokenDataset``) accepts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from dcstore.backends.base import Backend
from dcstore.backends.registry import open_backend
from dcstore.cli.common import (
    add_opt_flag,
    add_store_options,
    human_size,
    open_from_args,
    parse_options,
)
from dcstore.errors import NotFoundError

if TYPE_CHECKING:
    from dcstore.loaders.versions import KeptVersion


def cmd_sweep(args: argparse.Namespace) -> int:
    with open_backend(args.url, **parse_options(args.option)) as backend:
        reclaimed = backend.sweep(older_than=args.older_than)
    if args.json:
        json.dump({"url": str(backend), "reclaimed": reclaimed}, sys.stdout)
        sys.stdout.write("\n")
    elif reclaimed is None:
        print(f"{backend}: nothing to sweep (puts on this backend leave no partial data)")
    else:
        print(f"{backend}: reclaimed {reclaimed} abandoned version(s)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from dcstore.loaders.versions import collect_garbage
    from dcstore.tokens.manifest import collect_token_garbage

    with open_from_args(args.store, args) as store:
        if _token_corpus(store, args.manifest):
            garbage = collect_token_garbage(store, dry_run=args.dry_run)
        else:
            try:
                garbage = collect_garbage(store, args.manifest, dry_run=args.dry_run)
            except NotFoundError as exc:  # a failed first pack, or a manifest lost: unknowable
                raise NotFoundError(
                    f"{exc}; gc removes nothing without one (it cannot tell the shards of a "
                    "failed first pack from those of a dataset whose manifest is elsewhere "
                    "or lost): remove a failed pack's shards with `dcstore rm -r "
                    f"{args.store} shards/VERSION/` (a token pack's: tokens/VERSION/), "
                    f"VERSION as its error named it or `dcstore ls {args.store}` shows"
                ) from None
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


def _token_corpus(store: Backend, manifest_key: str) -> bool:
    """Whether STORE holds a token corpus and no dataset (under the default manifest key)."""
    from dcstore.loaders.manifest import MANIFEST_KEY  # pyarrow: imported only when run
    from dcstore.tokens.manifest import holds_token_corpus

    return manifest_key == MANIFEST_KEY and holds_token_corpus(store)


def _kept_versions(store: Backend, manifest_key: str) -> list[KeptVersion[Any]]:
    """The dataset's kept versions; a store holding a token corpus instead, the corpus's."""
    from dcstore.loaders.versions import list_versions
    from dcstore.tokens.manifest import list_token_versions

    if _token_corpus(store, manifest_key):
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


def cmd_versions(args: argparse.Namespace) -> int:
    with open_from_args(args.store, args) as store:
        kept = _kept_versions(store, args.manifest)
    rows: list[dict[str, Any]] = [
        {"version": v.version, "current": v.current, "key": v.key, "missing": v.manifest is None}
        | ({} if v.manifest is None else _contents(v.manifest))
        for v in kept
    ]
    if args.json:
        json.dump({"url": store.url, "versions": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for row in rows:
        role = "current" if row["current"] else "kept"
        if row["missing"]:
            print(f"{row['version']}  {role:7}  archive {row['key']} missing")
            continue
        unit = "samples" if "samples" in row else "tokens"
        print(
            f"{row['version']}  {role:7}  {row[unit]} {unit} in {row['shards']} shard(s), "
            f"{human_size(row['bytes'])}"
        )
    return 0


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
        "current manifest nor the earlier versions it keeps reference, and print each "
        "one; other objects are never touched. Do not run it while a pack into STORE is "
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
        "versions it keeps, newest first, with their samples, shards and size. Any of them "
        "can be read with ShardedDataset(STORE, version=NAME).",
    ).set_defaults(func=cmd_versions)

    p = subparsers.add_parser("maintenance", help="storage housekeeping (sweep abandoned puts)")
    sub = p.add_subparsers(dest="maintenance_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser(
        "sweep",
        help="delete chunks of puts whose writer died before committing",
        description="Delete the chunks or temporary files of puts abandoned more than "
        "--older-than seconds ago (default: the backend's own: 1 hour on Cassandra and "
        "MongoDB, a day on local disk and HDFS). Puts still in flight are younger than "
        "that and are left alone; on local disk an open writer is never swept, whatever "
        "--older-than says.",
    )
    s.add_argument("url", metavar="URL", help="storage URL, e.g. cassandra://host:9042/ks")
    s.add_argument("--older-than", type=float, default=None, metavar="SECONDS")
    add_opt_flag(s)
    s.add_argument("--json", action="store_true", help="machine-readable result")
    s.set_defaults(func=cmd_sweep)
