"""Object commands: ``ls``, ``stat``, ``get``, ``put``, ``rm``, ``cp``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Any

from dcstore.backends.base import ObjectMeta
from dcstore.cli.common import (
    PROGRESS_THRESHOLD,
    add_store_options,
    human_size,
    open_from_args,
    print_json,
    transfer_progress,
)
from dcstore.crypto.format import refuse_ciphertext
from dcstore.ops import copy_prefix


def _meta_dict(meta: ObjectMeta) -> dict[str, Any]:
    return {"key": meta.key, "size": meta.size, "version": meta.version}


def cmd_ls(args: argparse.Namespace) -> int:
    with open_from_args(args.store, args) as store:
        metas = store.list(args.prefix)
        if args.json:
            print_json([_meta_dict(m) for m in metas])
            return 0
        for meta in metas:
            size = human_size(meta.size) if args.human else str(meta.size)
            print(f"{size:>12}  {meta.key}")
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    with open_from_args(args.store, args) as store:
        meta = store.head(args.key)
    if args.json:
        print_json({**_meta_dict(meta), "store": args.store})
    else:
        print(f"key:     {meta.key}\nsize:    {meta.size} ({human_size(meta.size)})")
        print(f"version: {meta.version}")
    return 0


def _write_file_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".dcstore-get-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cmd_get(args: argparse.Namespace) -> int:
    with open_from_args(args.store, args) as store:
        meta = store.head(args.key)
        with transfer_progress(meta.size > PROGRESS_THRESHOLD) as progress:
            task = progress.add_task(f"get {args.key}", total=meta.size)
            data = store.get(args.key)
            progress.update(task, completed=len(data))
        if getattr(store, "keyring", None) is None:  # read without keys: never emit ciphertext
            refuse_ciphertext(data, f"{args.store}/{args.key}")
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_file_atomically(args.output, data)
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(args.file, "rb") as f:
            data = f.read()
    with (
        open_from_args(args.store, args) as store,
        transfer_progress(len(data) > PROGRESS_THRESHOLD) as progress,
    ):
        task = progress.add_task(f"put {args.key}", total=len(data))
        meta = store.put(args.key, data)
        progress.update(task, completed=len(data))
    if args.json:
        print_json(_meta_dict(meta))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with open_from_args(args.store, args) as store:
        for key in args.keys_to_remove:
            store.delete(key)
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    src_args = argparse.Namespace(**{**vars(args), "keys": args.src_keys, "cache": None})
    dst_args = argparse.Namespace(**{**vars(args), "keys": args.dest_keys, "cache": None})
    with (
        open_from_args(args.src, src_args, env_keys=False) as src,
        open_from_args(args.dest, dst_args, env_keys=False) as dst,
    ):
        total = sum(m.size for m in src.list(args.prefix))
        with transfer_progress(total > PROGRESS_THRESHOLD) as progress:
            task = progress.add_task(f"cp {args.prefix or '*'}", total=total)
            written = copy_prefix(
                src,
                dst,
                args.prefix,
                workers=args.workers,
                on_copied=lambda m: progress.advance(task, m.size),
            )
    if args.json:
        print_json({"objects": len(written), "bytes": sum(m.size for m in written)})
    else:
        print(f"copied {len(written)} objects, {human_size(sum(m.size for m in written))}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list objects (sorted) under a prefix")
    p.add_argument("store", help="storage URL or path")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("-H", "--human", action="store_true", help="human-readable sizes")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("stat", help="size and version of one object")
    p.add_argument("store")
    p.add_argument("key")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("get", help="download one object (to stdout or a file)")
    p.add_argument("store")
    p.add_argument("key")
    p.add_argument("-o", "--output", help="file to write (atomically); default stdout")
    add_store_options(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("put", help="upload one file (or - for stdin) as an object")
    p.add_argument("store")
    p.add_argument("key")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("rm", help="delete objects (missing ones are not an error)")
    p.add_argument("store")
    p.add_argument("keys_to_remove", nargs="+", metavar="key")
    add_store_options(p)
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("cp", help="copy every object under a prefix between two stores")
    p.add_argument("src", help="source storage URL")
    p.add_argument("dest", help="destination storage URL")
    p.add_argument("prefix", nargs="?", default="", help="only keys starting with this")
    p.add_argument("--src-keys", metavar="URL", help="key source to decrypt the source")
    p.add_argument("--dest-keys", metavar="URL", help="key source to encrypt the destination")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--opt",
        dest="option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="backend option for both stores (repeatable)",
    )
    p.set_defaults(func=cmd_cp)
