"""``dcstore cp``: copy one object, or with ``-r`` every object under a prefix.

Without ``-r``, SRC and DEST name objects as ``STORE/KEY`` (the last path
segment is the key, the rest the store), so a plain file is an object of its
directory, as with ``aws s3 cp``::

    dcstore cp ./file.bin ./store/b.bin        # a local file to a key
    dcstore cp ./store/b.bin ./copy.bin        # a key to a local file
    dcstore cp ./file.bin memory://tmp/        # DEST ending in / (or a directory): same name

With ``-r``, SRC and DEST are stores and the optional PREFIX selects keys.
Copying nothing is an error (not found), never "copied 0 objects".
"""

from __future__ import annotations

import argparse
import functools
import os
import posixpath

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.cli.common import (
    PROGRESS_THRESHOLD,
    add_opt_flag,
    head_object,
    human_size,
    open_from_args,
    print_json,
    transfer_progress,
)
from dcstore.errors import ConfigError, IntegrityError
from dcstore.ops import COPY_CHUNK_BYTES, LARGE_STREAMS, copy_object, copy_prefix


def _query_apart(location: str) -> tuple[str, str]:
    """``(location without its query, "?query" or "")``: only a URL has a query; in a
    plain path ``?`` and ``#`` are characters of the name, as ``put`` takes them."""
    if "://" not in location:
        return location, ""
    base, qmark, query = location.partition("?")
    return base, qmark + query


def split_location(location: str) -> tuple[str, str]:
    """``STORE/KEY`` -> ``(STORE, KEY)``: the key is the last path segment; a query
    string stays with the store. A bare name is a key of the current directory."""
    base, query = _query_apart(location)
    store, slash, key = base.rpartition("/")
    if not key or store.endswith(":/") or base.endswith("://"):
        raise ConfigError(f"{location!r} names a store, not an object (for a prefix use cp -r)")
    if not slash:
        store = "."
    elif not store or store.endswith("://"):
        store += "/"
    return store + query, key


def _is_directory(location: str) -> bool:
    base = _query_apart(location)[0]
    return base.endswith("/") or ("://" not in base and os.path.isdir(base))


def _without_trailing_slash(location: str) -> str:
    base, query = _query_apart(location)
    stripped = base.rstrip("/")
    if not stripped or stripped.endswith(":"):  # "/" or "scheme://"
        return location
    return stripped + query


def _open(url: str, args: argparse.Namespace, keys: str | None) -> Backend:
    return open_from_args(url, argparse.Namespace(**{**vars(args), "keys": keys}), env_keys=False)


def _refuse_copy_onto_itself(src: Backend, dst: Backend, args: argparse.Namespace) -> None:
    """The same store read and written under the same key source: each object copied
    would be rewritten onto itself (a mistyped DEST), so it is a usage error. With other
    keys (--src-keys/--dest-keys) the copy re-encrypts and is left alone. The same
    directory spelled two ways (a symbolic link) is the same store."""
    here = _store_path(src)
    same = src.url == dst.url or (here is not None and here == _store_path(dst))
    if same and args.src_keys == args.dest_keys:
        raise ConfigError(
            f"cp: source and destination are the same store ({src.url}) and keys: "
            "each object would be rewritten onto itself"
        )


_NESTED_SCHEMES = ("hdfs", "viewfs")
"""Remote stores whose keys are files under a path: one store's path may lie inside
another's (``hdfs://nn/backup/inner`` holds keys ``inner/...`` of ``hdfs://nn/backup``),
as a local directory may. The other stores' names are flat namespaces (``memory://a/b``
is not inside ``memory://a``)."""


def _store_path(store: Backend) -> tuple[str, str, str] | None:
    """``(scheme, server, directory)`` of a local store (its root, symbolic links and
    ``..`` resolved) or one of :data:`_NESTED_SCHEMES`; None for the others."""
    from dcstore.backends.base import Wrapper
    from dcstore.backends.local import LocalBackend
    from dcstore.backends.options import parse_url

    base = store
    while isinstance(base, Wrapper):
        base = base.inner
    if isinstance(base, LocalBackend):  # its root as given: no URL parsing of ? # %
        return "file", "", os.path.realpath(base.root).rstrip("/") or "/"
    url = parse_url(store.url)
    if url.scheme not in _NESTED_SCHEMES:
        return None
    path = "/" + posixpath.normpath(url.path or "/").lstrip("/")  # "" and "//x" too
    return url.scheme, url.netloc, path.rstrip("/") or "/"


def _refuse_dest_inside_src(src: Backend, dst: Backend, prefix: str) -> None:
    """DEST a directory inside SRC whose keys (``inner/...`` of SRC) start with ``prefix``:
    each object would be copied into the source itself, and each copy again nest a level
    deeper. Other servers, other directories and a prefix the copies are not under are
    left alone."""
    outer, inner = _store_path(src), _store_path(dst)
    if outer is None or inner is None or outer[:2] != inner[:2] or outer[2] == inner[2]:
        return  # the same directory: _refuse_copy_onto_itself's case
    base = outer[2].rstrip("/") + "/"
    if not inner[2].startswith(base):
        return
    under = inner[2][len(base) :]  # the copies' keys are under + "/" + key
    if f"{under}/{prefix}".startswith(prefix):
        shown = f"keys starting with {prefix!r}" if prefix else "every key"
        raise ConfigError(
            f"cp: the destination {dst.url} is inside the source {src.url} (the source's "
            f"keys under {under + '/'!r}), and {shown} would be copied into the source itself, "
            "nesting deeper on each run: copy to a store outside the source"
        )


def _copy_one(args: argparse.Namespace) -> list[ObjectMeta]:
    src_url, src_key = split_location(args.src)
    if _is_directory(args.dest):
        dst_url, dst_key = _without_trailing_slash(args.dest), src_key
    else:
        dst_url, dst_key = split_location(args.dest)
    try:
        with (
            _open(src_url, args, args.src_keys) as src,
            _open(dst_url, args, args.dest_keys) as dst,
        ):
            if src_key == dst_key:
                _refuse_copy_onto_itself(src, dst, args)
            meta = head_object(src, src_key, "cp")
            with transfer_progress(meta.size > PROGRESS_THRESHOLD) as progress:
                task = progress.add_task(f"cp {src_key}", total=meta.size)
                advance = functools.partial(progress.advance, task)
                copy_object(src, dst, src_key, dst_key, on_bytes=advance)
    except IntegrityError as exc:
        if args.src_keys is None:
            raise
        # An object named by its path (a file in a store's directory, or a URL such as
        # hdfs://nn/base/dir/obj): the key cp reads it under is the last segment, not the
        # key it was put under, which its encryption is bound to.
        raise IntegrityError(
            f"{exc}. cp read {args.src!r} as key {src_key!r} of store {src_url!r}; if it was put "
            "under a longer key of a store further up, copy it from that store: "
            "dcstore cp -r STORE DEST KEY"
        ) from None
    return [meta]


def _copy_prefix(args: argparse.Namespace) -> list[ObjectMeta]:
    with (
        _open(args.src, args, args.src_keys) as src,
        _open(args.dest, args, args.dest_keys) as dst,
    ):
        _refuse_copy_onto_itself(src, dst, args)  # keys are copied under their own names
        _refuse_dest_inside_src(src, dst, args.prefix)
        total = sum(m.size for m in src.list_objects(args.prefix))
        with transfer_progress(total > PROGRESS_THRESHOLD) as progress:
            task = progress.add_task(f"cp {args.prefix or '*'}", total=total)
            return copy_prefix(
                src,
                dst,
                args.prefix,
                workers=args.workers,
                on_bytes=functools.partial(progress.advance, task),
            )


def cmd_cp(args: argparse.Namespace) -> int:
    if args.prefix is not None and not args.recursive:
        raise ConfigError("a PREFIX argument copies many objects: add -r")
    if args.both_keys is not None:
        if args.src_keys is not None or args.dest_keys is not None:
            raise ConfigError("--keys is the key source of both sides: give it alone, or "
                              "--src-keys and --dest-keys")  # fmt: skip
        args.src_keys = args.dest_keys = args.both_keys
    if args.recursive:
        args.prefix = args.prefix or ""
        copied = _copy_prefix(args)
    else:
        copied = _copy_one(args)
    size = sum(m.size for m in copied)
    if args.json:
        print_json({"objects": len(copied), "bytes": size})
    else:
        print(f"copied {len(copied)} object(s), {human_size(size)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cp",
        help="copy an object (a local file is one), or with -r a prefix, between stores",
        description="Copy one object, SRC and DEST as STORE/KEY (a local file is an object of "
        "its directory; a DEST ending in / or naming a directory keeps the name), or with -r "
        "every object under PREFIX from store SRC to store DEST. Copying nothing is an error.",
    )
    p.add_argument("src", help="STORE/KEY, a local file, or with -r a store")
    p.add_argument("dest", help="STORE/KEY, a local file or directory, or with -r a store")
    p.add_argument("prefix", nargs="?", default=None, help="with -r: keys starting with this")
    p.add_argument(
        "-r", "--recursive", action="store_true", help="copy every object (under PREFIX)"
    )
    p.add_argument("--src-keys", metavar="URL", help="key source to decrypt the source")
    p.add_argument("--dest-keys", metavar="URL", help="key source to encrypt the destination")
    p.add_argument(
        "--keys", dest="both_keys", metavar="URL",
        help="the key source of both sides (--src-keys URL --dest-keys URL)",
    )  # fmt: skip
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        help=f"parallel copies with -r; of them at most {LARGE_STREAMS} stream objects "
        f"over {COPY_CHUNK_BYTES >> 20} MiB at a time (bounded memory)",
    )
    p.add_argument("--json", action="store_true")
    add_opt_flag(p)
    p.set_defaults(func=cmd_cp, cache=None, streams=True)
