"""``dcstore keys``: create, list, export, rotate, inspect and retire key-encryption keys.

Key types: ``aes`` (secret), ``rsa`` and ``x25519`` (key pairs: ``keys
export-public`` writes a key file with only the public halves, for nodes that
write objects they cannot read).

Key sources on the command line: ``--keys PATH|file:///PATH``, else the
environment: ``DCSTORE_KEYS_FILE`` (a key file path) or ``DCSTORE_KEYS``
(the key file JSON itself; read-only commands only). Key material is never
printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from dcstore.cli.common import add_store_options, human_size, open_from_args, print_json
from dcstore.crypto import (
    EncryptedBackend,
    EnvKeySource,
    FileKeySource,
    Keyring,
    KeySource,
    new_key_id,
)
from dcstore.crypto.kek import DEFAULT_RSA_BITS, KEY_TYPES
from dcstore.crypto.rotation import key_usage, retire_key, rotate
from dcstore.crypto.sources import write_key_file
from dcstore.errors import ConfigError

ENV_KEYS_FILE = "DCSTORE_KEYS_FILE"
ENV_KEYS = "DCSTORE_KEYS"
DEFAULT_RETIRE_MIN_AGE = 3600.0
"""Seconds a key must have been non-primary before ``keys retire`` destroys it."""


def key_source_from(spec: str | None, environ: Any = None) -> KeySource | None:
    """The key source named on the command line, else by the environment, else ``None``."""
    from dcstore.crypto import open_key_source

    env = os.environ if environ is None else environ
    if spec:
        return open_key_source(spec)
    if env.get(ENV_KEYS_FILE):
        try:  # the checks of --keys: its contents or a raw key are refused, never shown
            return open_key_source(env[ENV_KEYS_FILE])
        except ConfigError as exc:
            raise ConfigError(f"{ENV_KEYS_FILE}: {exc}") from None
    if env.get(ENV_KEYS):
        return EnvKeySource(ENV_KEYS)
    return None


def _require_source(args: argparse.Namespace) -> KeySource:
    source = key_source_from(args.keys)
    if source is None:
        raise ConfigError(f"no keys: pass --keys PATH or set {ENV_KEYS_FILE} or {ENV_KEYS}")
    return source


def _require_file(args: argparse.Namespace) -> FileKeySource:
    source = key_source_from(args.keys)
    if not isinstance(source, FileKeySource):
        raise ConfigError(
            f"this command changes a key file: pass --keys PATH or set {ENV_KEYS_FILE}"
        )
    return source


def _encrypted_store(url: str, args: argparse.Namespace) -> EncryptedBackend:
    args.keys = _require_source(args)
    store = open_from_args(url, args)
    if not isinstance(store, EncryptedBackend):
        raise ConfigError("internal: the store opened without encryption")
    store.keyring  # noqa: B018 - load now: a key file problem fails once, up front
    return store


def _require_objects(store: EncryptedBackend, prefix: str = "") -> None:
    """A store (or prefix) without objects is a typo more often than not: saying "0
    rewrapped" or retiring a key because "no object among 0 uses it" would hide it."""
    from dcstore.cli.objects import nothing_under

    if next(iter(store.inner.list_objects(prefix or "")), None) is None:
        raise nothing_under(store, prefix or "")


def cmd_new(args: argparse.Namespace) -> int:
    source = _require_file(args)
    new_id = args.id or new_key_id()
    verb = "added"

    def add(current: Keyring | None) -> Keyring:
        nonlocal verb
        if current is None:
            verb = "created key file with"
            return Keyring.generate(new_id, args.type, args.bits)
        if current.ids and not any(current.can_unwrap(k) for k in current.ids):
            raise ConfigError(  # a key added here would be one the readers never get
                f"{source.path} holds only public halves (written by keys export-public): "
                "add the key to the full key file and export its public halves again"
            )
        return current.with_new_key(
            new_id, primary=not args.no_primary, key_type=args.type, bits=args.bits
        )

    keyring = source.update(add)
    role = "primary" if new_id == keyring.primary else "not primary"
    print(f"{verb} {args.type} key {new_id} ({role}) in {source.path}", file=sys.stderr)
    print(new_id)
    return 0


def cmd_export_public(args: argparse.Namespace) -> int:
    source = _require_source(args)
    output = os.path.abspath(args.output)
    if isinstance(source, FileKeySource) and str(source.path) == output:
        raise ConfigError("export-public would overwrite the key file itself; choose another -o")
    if os.path.lexists(output) and not args.force:
        raise ConfigError(f"{output} exists; pass --force to replace it")
    public = source.load().public_only()
    write_key_file(output, public)
    print(f"wrote the public halves of {', '.join(public.ids)} to {output}", file=sys.stderr)
    return 0


def _type_fields(keyring: Keyring, key_id: str) -> dict[str, Any]:
    """``type`` (``aes``, ``rsa``, ``x25519``; ``None`` unless active) and ``private``
    (whether the key can unwrap: false for a public half)."""
    if key_id not in keyring:
        return {"type": None, "private": False}
    return {"type": keyring.key_type(key_id), "private": keyring.can_unwrap(key_id)}


def _type_column(row: dict[str, Any]) -> str:
    if row["type"] is None:
        return "-"
    return str(row["type"]) + ("" if row["private"] else " (public)")


def cmd_list(args: argparse.Namespace) -> int:
    keyring = _require_source(args).load()
    rows = [
        {"id": k, "state": "primary" if k == keyring.primary else "active"} for k in keyring.ids
    ]
    rows += [{"id": k, "state": "retired"} for k in sorted(keyring.retired)]
    rows = [{**row, **_type_fields(keyring, row["id"])} for row in rows]
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['state']:<8} {_type_column(row):<17} {row['id']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _encrypted_store(args.store, args) as store:
        _require_objects(store, args.prefix)
        keyring = store.keyring
        usage = key_usage(store, args.prefix)

    def state(key_id: str) -> str:
        if key_id == keyring.primary:
            return "primary"
        if key_id in keyring:
            return "active"
        return "retired" if key_id in keyring.retired else "unknown"

    ids = sorted(set(usage.objects) | set(keyring.ids) | keyring.retired)
    rows = [
        {
            "id": k,
            "state": state(k),
            **_type_fields(keyring, k),
            "objects": usage.objects.get(k, 0),
            "bytes": usage.bytes.get(k, 0),
        }
        for k in ids
    ]
    if args.json:
        print_json(
            {"keys": rows, "unreadable": [dict(key=k, error=e) for k, e in usage.unreadable]}
        )
    else:
        print(f"{'KEY ID':<28} {'STATE':<8} {'TYPE':<17} {'OBJECTS':>8} {'BYTES':>12}")
        for r in rows:
            size = human_size(r["bytes"])
            print(
                f"{r['id']:<28} {r['state']:<8} {_type_column(r):<17} {r['objects']:>8} {size:>12}"
            )
        for key, error in usage.unreadable:
            print(f"unreadable: {key}: {error}", file=sys.stderr)
    stale = sum(n for k, n in usage.objects.items() if k != keyring.primary)
    if stale and not args.json:
        print(f"{stale} object(s) not under the primary key: run 'dcstore keys rotate'")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    counts = {"rewrapped": 0, "current": 0, "failed": 0}
    new_versions: dict[str, str] = {}
    with _encrypted_store(args.store, args) as store:
        from dcstore.loaders.versions import repin  # the loaders, only when asked
        from dcstore.tokens.manifest import repin_token_shards

        _require_objects(store, args.prefix)
        try:
            for result in rotate(store, args.prefix):
                counts[result.status] += 1
                if result.status == "failed":
                    print(f"FAILED {result.key}: {result.error}", file=sys.stderr)
                elif result.status == "rewrapped":
                    new_versions[result.key] = result.version or ""
                    if args.verbose:
                        print(f"rewrapped {result.key}: {result.old_key_id} -> {result.new_key_id}")
        finally:  # even when stopped: manifests must pin the versions rewrapped so far
            manifests = (
                repin(store, new_versions) + repin_token_shards(store, new_versions)
                if new_versions
                else 0
            )
        primary = store.keyring.primary
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    print(f"rotation to {primary}: {summary}")
    if manifests:
        print(f"recorded the new shard versions in {manifests} dataset manifest(s)")
    return 1 if counts["failed"] else 0


def cmd_retire(args: argparse.Namespace) -> int:
    if args.prefix is not None:
        raise ConfigError("keys retire checks every object of each store; drop --prefix")
    source = _require_file(args)
    with contextlib.ExitStack() as stack:
        stores = [stack.enter_context(_encrypted_store(url, args)) for url in args.stores]
        for store in stores:  # a mistyped store would vouch that nothing uses the key
            _require_objects(store)
        checked = retire_key(source, stores, args.key_id, args.min_age)
    print(
        f"retired {args.key_id}: no object among {checked} in {len(args.stores)} store(s) uses it"
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="manage key-encryption keys and rotation")
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True

    def parser(name: str, help: str, store: bool) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if store:
            p.add_argument("store", metavar="URL", help="storage URL of encrypted objects")
            p.add_argument("--prefix", default="", help="only objects under this prefix")
            add_store_options(p, cache=False)
        else:
            p.add_argument("--keys", metavar="PATH", help=f"key file (default: ${ENV_KEYS_FILE})")
        return p

    p = parser("new", "add a fresh random key (primary unless --no-primary)", store=False)
    p.add_argument("--id", help="key id (default: kek-YYYYMMDD-xxxxxx)")
    p.add_argument(
        "--type",
        choices=KEY_TYPES,
        default="aes",
        help="aes: secret key (default); rsa, x25519: key pair whose public half "
        "(keys export-public) writes objects only the private half reads",
    )
    p.add_argument(
        "--bits", type=int, help=f"rsa modulus size, 3072..8192 (default {DEFAULT_RSA_BITS})"
    )
    p.add_argument("--no-primary", action="store_true", help="add without making it primary")
    p.set_defaults(func=cmd_new)

    p = parser("export-public", "write a key file with only the public halves", store=False)
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the public key file")
    p.add_argument("--force", action="store_true", help="replace PATH if it exists")
    p.set_defaults(func=cmd_export_public)

    p = parser("list", "list key ids, their state and type", store=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = parser("status", "which objects depend on which key", store=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = parser("rotate", "rewrap data keys under the primary key (payload untouched)", store=True)
    p.add_argument("-v", "--verbose", action="store_true", help="print every rewrapped object")
    p.set_defaults(func=cmd_rotate)

    p = sub.add_parser(
        "retire", help="destroy a non-primary key that no object in the given stores uses"
    )
    p.add_argument("key_id", metavar="KEY_ID", help="id of the key to destroy")
    p.add_argument("stores", metavar="URL", nargs="+", help="every store that may use the key")
    p.add_argument("--prefix", help=argparse.SUPPRESS)  # refused: retire checks whole stores
    p.add_argument(
        "--min-age",
        type=float,
        default=DEFAULT_RETIRE_MIN_AGE,
        metavar="SECONDS",
        help="refuse unless the key stopped being primary at least this long ago "
        f"(default {DEFAULT_RETIRE_MIN_AGE:.0f}; 0 after a compromise, once writers stopped)",
    )
    add_store_options(p, cache=False)
    p.set_defaults(func=cmd_retire)
