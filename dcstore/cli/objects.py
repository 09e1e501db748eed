"""Object commands: ``ls``, ``stat``, ``get``, ``put``, ``rm`` (``cp``: :mod:`dcstore.cli.copy`).

Nothing matched is an error: ``ls`` of a missing store or an empty prefix and
``rm`` of a missing key exit with the not-found code; ``rm`` of a prefix needs ``-r``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from dcstore.backends.base import Backend, Buffer, ObjectMeta
from dcstore.cli.common import (
    PROGRESS_THRESHOLD,
    add_store_options,
    head_object,
    human_size,
    open_from_args,
    print_json,
    transfer_progress,
)
from dcstore.cli.exits import describe, exit_code_for
from dcstore.crypto import EncryptedBackend
from dcstore.crypto.format import MAX_HEADER_SIZE, is_encrypted_object, refuse_ciphertext
from dcstore.errors import ConfigError, IntegrityError, NotFoundError
from dcstore.localfile import write_all, write_file_atomically
from dcstore.ops import COPY_CHUNK_BYTES, read_chunks


def _meta_dict(meta: ObjectMeta) -> dict[str, Any]:
    return {"key": meta.key, "size": meta.size, "version": meta.version}


def nothing_under(store: Backend, prefix: str) -> NotFoundError:
    """The not-found error of a listing that matched nothing."""
    where = f" under prefix {prefix!r}" if prefix else " (no such store, or it is empty)"
    return NotFoundError(f"{store.url}: no objects{where}")


def cmd_ls(args: argparse.Namespace) -> int:
    """List every readable object; each damaged encrypted object is one stderr line,
    and the exit code is then that of its error (after the whole listing)."""
    damaged: list[IntegrityError] = []

    def report(exc: IntegrityError) -> None:
        damaged.append(exc)
        print(f"dcstore: error: {describe(exc)}", file=sys.stderr)

    with open_from_args(args.store, args) as store:
        if isinstance(store, EncryptedBackend):
            listing = iter(store.list_objects(args.prefix, on_damaged=report))
        else:
            listing = iter(store.list_objects(args.prefix))
        first = next(listing, None)
        if first is None and not damaged:
            raise nothing_under(store, args.prefix)
        metas = listing if first is None else itertools.chain([first], listing)
        if args.json:
            print_json([_meta_dict(m) for m in metas])
        else:
            for meta in metas:
                size = human_size(meta.size) if args.human else str(meta.size)
                print(f"{size:>12}  {meta.key}")
    return exit_code_for(damaged[0]) if damaged else 0


def cmd_stat(args: argparse.Namespace) -> int:
    """Size and version; without keys, an encrypted object is said to be one (its size is
    the stored ciphertext's)."""
    with open_from_args(args.store, args) as store:
        meta = head_object(store, args.key)
        sealed = not args.json and store.encryption_key_id is None and _is_ciphertext(store, meta)
    if args.json:
        print_json({**_meta_dict(meta), "store": args.store})
    else:
        print(f"key:     {meta.key}\nsize:    {meta.size} ({human_size(meta.size)})")
        print(f"version: {meta.version}")
        if sealed:
            print("note:    encrypted; this is its stored size (with --keys: the plaintext's)")
    return 0


def _is_ciphertext(store: Backend, meta: ObjectMeta) -> bool:
    """Whether ``meta``'s version, read without keys, starts with an encrypted header."""
    head = store.get_range(meta.key, 0, min(meta.size, MAX_HEADER_SIZE), version=meta.version)
    return is_encrypted_object(memoryview(head))


GET_CHUNK_BYTES = COPY_CHUNK_BYTES
"""``get`` reads objects larger than this in ranges of this size (rounded up to segments)."""


def _output_file(output: str, key: str) -> str:
    """``output``, or inside it under the key's last segment when it is a directory (one
    that exists, or any path ending in a slash), as ``cp`` does."""
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        return os.path.join(output, key.rsplit("/", 1)[-1])
    return output


def _ranges(store: Backend, meta: ObjectMeta, advance: Callable[[int], None]) -> Iterator[Buffer]:
    """The object ``meta`` names, in ranges of that version (memory: about three ranges;
    local files: views of the page cache). An object of one range or less (an empty one
    too) is read whole, with every check a whole-object read makes."""
    chunks: Iterable[Buffer] = (
        read_chunks(store, meta, GET_CHUNK_BYTES)
        if meta.size > GET_CHUNK_BYTES
        else [store.get(meta.key, version=meta.version)]
    )
    for data in chunks:
        advance(memoryview(data).nbytes)
        yield data


def _refusing_ciphertext(chunks: Iterator[Buffer], what: str) -> Iterator[Buffer]:
    """``chunks``, unless the first one starts an encrypted object (read without keys)."""
    first = next(chunks, None)
    if first is None:
        return
    refuse_ciphertext(memoryview(first), what)
    yield first
    yield from chunks


def cmd_get(args: argparse.Namespace) -> int:
    """Stream the object in ranges of one version (a file is written whole or not at all)."""
    with open_from_args(args.store, args) as store:
        meta = head_object(store, args.key)
        with transfer_progress(meta.size > PROGRESS_THRESHOLD) as progress:
            task = progress.add_task(f"get {args.key}", total=meta.size)
            chunks = _ranges(store, meta, functools.partial(progress.advance, task))
            if store.encryption_key_id is None:  # read without keys: never emit ciphertext
                chunks = _refusing_ciphertext(chunks, f"{args.store}/{args.key}")
            if args.output in (None, "-"):
                for chunk in chunks:
                    write_all(sys.stdout.buffer, chunk)
                sys.stdout.buffer.flush()
            else:
                write_file_atomically(_output_file(args.output, args.key), chunks)
    return 0


READ_CHUNK_BYTES = COPY_CHUNK_BYTES
"""``put`` reads its file in blocks of this size, into one reused buffer."""


def _read_chunks(f: BinaryIO, advance: Callable[[int], None]) -> Iterator[memoryview]:
    """``f`` in blocks read into one buffer: each view is valid until the next is asked
    for (writers copy or send what they are given before ``write`` returns)."""
    buffer = memoryview(bytearray(READ_CHUNK_BYTES))
    while n := f.readinto(buffer):  # type: ignore[attr-defined]
        advance(n)
        yield buffer[:n]


def _open_input(path: str) -> contextlib.AbstractContextManager[BinaryIO]:
    """The file to upload (``-``: stdin); a directory is a :class:`ConfigError`."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a directory: put uploads one file (cp -r copies stores)")
    return open(path, "rb")


def cmd_put(args: argparse.Namespace) -> int:
    """Stream a file or a pipe into ``open_write`` (bounded memory); a regular file must
    keep its size while it is read, so a file that changes is refused, not stored."""
    with _open_input(args.file) as f, open_from_args(args.store, args) as store:
        st = os.fstat(f.fileno())
        size = st.st_size - f.tell() if stat.S_ISREG(st.st_mode) else None
        with transfer_progress(size is None or size > PROGRESS_THRESHOLD) as progress:
            task = progress.add_task(f"put {args.key}", total=size)
            chunks = _read_chunks(f, functools.partial(progress.advance, task))
            if size is None:
                with store.open_write(args.key) as writer:
                    for chunk in chunks:
                        writer.write(chunk)
                assert writer.meta is not None
                meta = writer.meta
            else:
                try:
                    meta = store.put_stream(args.key, chunks, size)
                except IntegrityError as exc:
                    now = os.fstat(f.fileno()).st_size
                    if now == st.st_size:
                        raise
                    raise IntegrityError(
                        f"{args.file} changed size while it was read ({st.st_size} bytes when "
                        f"the put began, {now} now); nothing was stored"
                    ) from exc
    if args.json:
        print_json(_meta_dict(meta))
    return 0


def _keys_to_remove(store: Backend, key: str, recursive: bool) -> list[str]:
    if recursive:
        keys = [m.key for m in store.list_objects(key)]
        if not keys:
            raise nothing_under(store, key)
        return keys
    return [head_object(store, key, "rm").key]


def cmd_rm(args: argparse.Namespace) -> int:
    """Every argument is resolved before anything is deleted; an empty prefix (every
    object: an unset shell variable, say) only with ``--all``."""
    if args.all and args.keys_to_remove:
        raise ConfigError("rm --all deletes every object: give no keys with it")
    if not (args.all or args.keys_to_remove):
        raise ConfigError("rm needs the keys to delete (or --all, to delete every object)")
    if args.recursive and "" in args.keys_to_remove:
        raise ConfigError(
            "rm -r of an empty prefix would delete every object in the store: "
            "to mean that, say rm --all STORE"
        )
    if args.all:
        args.keys_to_remove, args.recursive = [""], True
    with open_from_args(args.store, args) as store:
        doomed = [
            k for key in args.keys_to_remove for k in _keys_to_remove(store, key, args.recursive)
        ]
        for key in dict.fromkeys(doomed):
            store.delete(key)
    return 0


STORE_HELP = "storage URL or path"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ls", help="list objects (sorted) under a prefix")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("prefix", nargs="?", default="", help="list only keys starting with this")
    p.add_argument("-H", "--human", action="store_true", help="human-readable sizes")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("stat", help="size and version of one object")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("key", help="the object's key")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser(
        "get",
        help="download one object (to stdout or a file), streamed in ranges of one version",
    )
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("key", help="the object's key")
    p.add_argument(
        "-o",
        "--output",
        help="file to write (atomically), or a directory to write KEY's last segment into;"
        " default stdout",
    )
    add_store_options(p)
    p.set_defaults(func=cmd_get, streams=True)

    p = sub.add_parser("put", help="upload one file (or - for stdin) as an object")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("key", help="the key to write")
    p.add_argument("file", help="the file to upload, or - for stdin")
    p.add_argument("--json", action="store_true")
    add_store_options(p)
    p.set_defaults(func=cmd_put, streams=True)

    p = sub.add_parser(
        "rm",
        help="delete objects (-r: every key starting with a prefix)",
        description="Delete objects. A missing key is an error (not-found exit code); "
        "a prefix needs -r, which deletes every key that starts with it (as ls shows). "
        "An empty prefix is refused: deleting every object takes --all.",
    )
    p.add_argument("store", help=STORE_HELP)
    p.add_argument(
        "keys_to_remove", nargs="*", metavar="key", help="keys to delete (with -r: prefixes)"
    )
    p.add_argument(
        "-r", "--recursive", action="store_true", help="delete every key starting with each KEY"
    )
    p.add_argument("--all", action="store_true", help="delete every object in the store")
    add_store_options(p)
    p.set_defaults(func=cmd_rm)
