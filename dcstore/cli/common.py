"""Shared CLI plumbing: opening stores from arguments, JSON output, progress bars."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dcstore import units
from dcstore.backends.base import Backend, ObjectMeta
from dcstore.errors import (
    ConfigError,
    DcstoreError,
    InvalidKeyError,
    NotFoundError,
    StorageFullError,
)
from dcstore.store import open_store

STACK_OPTIONS = frozenset({"cache", "keys", "retries", "segment_size"})
"""Names of :func:`open_store`'s own parameters, refused as ``--opt`` (backend options)."""
PROGRESS_THRESHOLD = 4 << 20
"""Transfers larger than this (bytes) show a progress bar on a terminal."""


def size_arg(text: str) -> int:
    """``parse_size`` for argparse: its message ("use e.g. 64KiB ..."), not argparse's
    "invalid parse_size value"."""
    try:
        return units.parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_size_arg(text: str) -> int:
    """:func:`size_arg` of a size that must hold something: 0 is refused here, with the
    option's name (not the Python parameter's, from deep inside a pack)."""
    size = size_arg(text)
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return size


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``, with a message saying so."""

    def parse(text: str) -> int:
        try:
            return units.whole_number("value", int(text), minimum)
        except ValueError:  # not a number, or below minimum (ConfigError)
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}"
            ) from None

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def add_opt_flag(parser: argparse.ArgumentParser) -> None:
    """``--opt NAME=VALUE`` (repeatable) into ``args.option``; read with :func:`parse_options`."""
    parser.add_argument(
        "--opt",
        dest="option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="backend option (repeatable), same as a URL query parameter",
    )


class _RefusedCache(argparse.Action):
    """``--cache`` of a command that must read the storage itself: refused, saying why."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        raise argparse.ArgumentError(
            self,
            "refused: this command reads the storage itself (a cache tier could hand it "
            "damaged or forged copies); drop --cache",
        )


def add_store_options(parser: argparse.ArgumentParser, *, cache: bool = True) -> None:
    """Options that select the stack above the storage URL; without ``cache``, for a
    command that checks or rewrites the storage, ``--cache`` is refused."""
    parser.add_argument(
        "--keys", metavar="URL", help="key source, e.g. file:///etc/dcstore/kek.json"
    )
    if cache:
        parser.add_argument(
            "--cache", metavar="URL", help="hot tier, e.g. memory or redis://host:6379/0"
        )
    else:
        parser.add_argument("--cache", action=_RefusedCache, help=argparse.SUPPRESS)
    add_opt_flag(parser)


def parse_options(items: list[str]) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` from ``--opt`` flags as a dict; anything else is a ConfigError."""
    options: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"option {item!r} must look like NAME=VALUE")
        options[name] = value
    return options


def open_from_args(url: str, args: argparse.Namespace, *, env_keys: bool = True) -> Backend:
    """Open ``url`` with the stack options given on the command line.

    Keys come from ``--keys``, else (when ``env_keys``) from ``DCSTORE_KEYS_FILE``
    or ``DCSTORE_KEYS``; without any, the store is opened unencrypted. The keys
    are loaded now, so a bad key file is the error reported, not a later symptom.
    """
    from dcstore.cli.keys import key_source_from

    options: dict[str, Any] = parse_options(getattr(args, "option", []) or [])
    for name in sorted(STACK_OPTIONS & options.keys()):  # open_store's own: a TypeError
        flag = "--" + name.replace("_", "-")
        raise ConfigError(
            f"--opt {name}=...: {name} is not a storage option (commands that take it have {flag})"
        )
    spec = getattr(args, "keys", None)
    keys = key_source_from(spec) if env_keys else (spec or None)
    segment_size = getattr(args, "segment_size", None)
    if segment_size is not None and keys is None:
        raise ConfigError("--segment-size sets the size of encrypted segments: it needs --keys")
    store = open_store(
        url, cache=getattr(args, "cache", None), keys=keys, segment_size=segment_size, **options
    )
    if keys is not None:
        from dcstore.crypto import EncryptedBackend

        if isinstance(store, EncryptedBackend):
            store.keyring  # noqa: B018 - load now: a key file problem is reported first
    return store


def protection(store: Backend) -> str:
    """How ``store`` writes new objects, for summaries: ``encrypted`` when it has a key
    (``--keys`` or the environment), else ``plaintext``."""
    return "encrypted" if store.encryption_key_id is not None else "plaintext"


def head_object(store: Backend, key: str, command: str | None = None) -> ObjectMeta:
    """``store.head(key)``; when there is no such object but keys start with ``key``
    (``dir`` or ``dir/``, as ``ls`` lists it), a :class:`ConfigError` saying that
    ``command -r`` handles a prefix (without ``command``: that ``ls`` lists it)."""
    folder = key.rstrip("/") + "/"  # "ckpt-1" is no prefix of "ckpt-10", as ls shows it
    try:
        return store.head(key)
    except NotFoundError:
        if next(iter(store.list_objects(folder)), None) is None:
            raise
    except InvalidKeyError:  # "dir/": no object key ends with a slash
        if not key.endswith("/") or next(iter(store.list_objects(folder)), None) is None:
            raise
    use = f"use {command} -r for every key starting with it" if command else "ls lists them"
    raise ConfigError(f"{store.url}: {key!r} is not an object but a prefix of objects: {use}")


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def transfer_progress(enabled: bool) -> Progress:
    """A byte-counting progress bar on stderr; invisible when ``enabled`` is false."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not (enabled and sys.stderr.isatty()),
        transient=True,
    )


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def note_foreign_objects(store: Backend, manifest_key: str) -> None:
    """Before the first pack into ``store`` of the dataset kind whose manifest is at
    ``manifest_key``: a note on stderr naming the other kind's dataset there (a token
    corpus is packed beside a sample dataset, and the other way round), and one naming an
    object there that no pack of either wrote. ``dcstore gc`` never removes such objects."""
    from dcstore.loaders.versions import first_foreign_key, has_manifest
    from dcstore.tokens.manifest import DATASET_KINDS, PACKED_OBJECTS

    if has_manifest(store, manifest_key):
        return
    kind = DATASET_KINDS[manifest_key]
    others = [key for key in DATASET_KINDS if key != manifest_key and has_manifest(store, key)]
    for other in others:
        _note(
            f"{store.url} holds a {DATASET_KINDS[other]} ({other!r}); the {kind} is packed "
            "beside it, each with its own manifest and versions"
        )
    packed = [PACKED_OBJECTS[manifest_key].pattern]
    packed += [p for other in others for p in (PACKED_OBJECTS[other].pattern, re.escape(other))]
    first = first_foreign_key(store, manifest_key, re.compile("|".join(f"(?:{p})" for p in packed)))
    if first is not None:
        _note(
            f"{store.url} already holds objects that are not a dataset's ({first!r} first); "
            f"the {kind} is packed beside them, and `dcstore gc` never removes them"
        )


def _note(text: str) -> None:
    print(f"dcstore: note: {text}", file=sys.stderr)


@contextlib.contextmanager
def naming_what_a_failed_pack_left(
    store: Backend, dest: str, version: str, *, shards_prefix: str, manifest_key: str,
    current: Callable[[Backend], str],
) -> Iterator[None]:  # fmt: skip
    """Around a pack of ``version`` into ``store`` (its shards under
    ``<shards_prefix><version>/``, its manifest at ``manifest_key``, whose version
    ``current`` reads): if it fails, any way (^C too), say on stderr what it left and how
    to remove it (a full store: in the error itself), then re-raise."""
    try:
        yield
    except BaseException as exc:  # the shards written so far stay: say which, and how
        shards = f"{shards_prefix}{version}/"
        left = _left_behind(store, dest, version, shards, manifest_key, current)
        if left is None:
            raise
        if isinstance(exc, StorageFullError):
            raise StorageFullError(f"{exc}; {left}") from exc
        with contextlib.suppress(OSError):  # stderr gone (a pipe ^C closed): exit as is
            print(f"dcstore: note: the pack failed; {left}", file=sys.stderr)
        raise


def _left_behind(
    store: Backend, dest: str, version: str, shards: str, manifest_key: str,
    current: Callable[[Backend], str],
) -> str | None:  # fmt: skip
    """What a failed pack of ``version`` left under ``shards`` in ``store`` and how to
    remove it (None: it wrote no shard). With a dataset there, gc finds the shards no
    version references; before the first commit gc cannot tell them from a lost
    manifest's, so the pack names them; after its own commit, only older versions were
    left to drop. Never raises: it runs while another error is on its way out."""
    from dcstore.loaders.versions import has_manifest, has_objects

    remove = f"`dcstore rm -r {dest} {shards}` removes them"
    try:
        if not has_objects(store, shards):
            return None
        if has_manifest(store, manifest_key):
            if current(store) == version:
                return (
                    f"version {version} was committed and is current; it was stopped while "
                    "dropping older versions, which the next pack drops"
                )
            return (
                "the dataset's current version is unchanged, and the shards this pack wrote "
                f"stay until `dcstore gc {dest}` removes them"
            )
    except (DcstoreError, OSError):  # the store is failing too: name them all the same
        return f"the shards this pack wrote stay under {shards} until gc (or {remove}) does"
    return f"no dataset was committed, and the shards this pack wrote stay until {remove}"
