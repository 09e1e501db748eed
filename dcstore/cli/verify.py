"""``dcstore verify URL``: check every object or sample, report all failures.

With keys: authenticate every segment of every encrypted object and, where the store
holds a dataset or token corpus, check that every shard its manifest lists is there at
the version packed (a shard deleted, or replaced by another valid object, reads as
damaged). Without keys: check every sample of the plaintext dataset at URL against the
checksums in its manifest, or every shard of the plaintext token corpus there against
its manifest (size, version, ids inside the vocabulary); an encrypted one says it needs
keys. A store (or prefix) without objects is an error, never "0 failed".
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
from collections.abc import Iterator

from dcstore.backends.base import Backend
from dcstore.cli.common import add_store_options, human_size, open_from_args, print_json
from dcstore.cli.keys import ENV_KEYS, ENV_KEYS_FILE, _encrypted_store, key_source_from
from dcstore.cli.main import EXIT_ACCESS, EXIT_FAILURE, EXIT_INTEGRITY
from dcstore.cli.objects import nothing_under
from dcstore.crypto.verify import ObjectCheck, verify
from dcstore.errors import ConfigError, DcstoreError, NotFoundError, VersionChangedError


@contextlib.contextmanager
def _checks(args: argparse.Namespace) -> Iterator[Iterator[ObjectCheck]]:
    """Encrypted objects when keys are given, else the plaintext dataset's samples."""
    if key_source_from(args.keys) is not None:
        with _encrypted_store(args.store, args) as store:
            yield itertools.chain(verify(store, args.prefix), _missing_shards(store, args.prefix))
        return
    from dcstore.loaders.manifest import MANIFEST_KEY, load_manifest  # pyarrow: only here
    from dcstore.loaders.verify import verify_dataset
    from dcstore.tokens.manifest import TOKENS_KEY, holds_token_corpus, load_token_manifest
    from dcstore.tokens.verify import verify_corpus

    with open_from_args(args.store, args) as store:
        if holds_token_corpus(store):
            yield verify_corpus(store, load_token_manifest(store), args.prefix)
            return
        try:
            manifest = load_manifest(store)
        except NotFoundError:
            if next(iter(store.list_objects()), None) is None:
                raise nothing_under(store, "") from None
            raise ConfigError(
                f"no keys and no {MANIFEST_KEY} or {TOKENS_KEY} in {args.store}: pass "
                f"--keys PATH or set {ENV_KEYS_FILE} or {ENV_KEYS} to verify encrypted objects"
            ) from None
        yield verify_dataset(store, manifest, args.prefix)


def _listed_shards(store: Backend) -> list[tuple[str, str | None]]:
    """(key, version) of every shard the dataset or token corpus in ``store`` lists."""
    from dcstore.loaders.manifest import load_manifest
    from dcstore.tokens.manifest import holds_token_corpus, load_token_manifest

    if holds_token_corpus(store):
        return [(s.key, s.version) for s in load_token_manifest(store).shards]
    try:
        return [(s.key, s.version) for s in load_manifest(store).shards]
    except NotFoundError:
        return []


def _manifest_key(store: Backend) -> str:
    """The key of the manifest that is there (a token corpus's, else a dataset's)."""
    from dcstore.loaders.manifest import MANIFEST_KEY
    from dcstore.tokens.manifest import TOKENS_KEY

    inner = getattr(store, "inner", store)  # the stored object, whatever it holds
    try:
        inner.head(TOKENS_KEY)
    except DcstoreError:
        return MANIFEST_KEY
    return TOKENS_KEY


def _missing_shards(store: Backend, prefix: str) -> Iterator[ObjectCheck]:
    """A failed check for each listed shard that is gone or not the version packed
    (objects that are there were authenticated one by one already)."""
    try:
        listed = _listed_shards(store)
    except DcstoreError as exc:  # the manifest itself: reported once (see cmd_verify)
        yield ObjectCheck(exc.key or _manifest_key(store), 0, str(exc), "integrity")
        return
    for key, version in listed:
        if not key.startswith(prefix):
            continue
        try:
            store.head(key, version=version)
        except (NotFoundError, VersionChangedError) as exc:
            problem = f"{exc} (the manifest lists this shard)"
            yield ObjectCheck(key, 0, problem, "integrity")


def cmd_verify(args: argparse.Namespace) -> int:
    total = 0
    failures: list[ObjectCheck] = []
    failed: set[str] = set()
    seen: set[str] = set()  # an object checked twice (authenticated, then its version) counts once
    with _checks(args) as checks:
        for check in checks:
            if not check.ok and check.key in failed:
                continue  # the manifest's own failure, found again loading it
            if check.key not in seen:
                seen.add(check.key)
                total += check.size
            if check.ok:
                if args.verbose:
                    print(f"ok      {check.key}")
                continue
            failures.append(check)
            failed.add(check.key)
            if not args.json:
                print(f"FAILED  {check.key}: [{check.kind}] {check.problem}", flush=True)
    checked = len(seen)
    if not checked:  # nothing to check; an error if nothing is there at all
        with open_from_args(args.store, args) as store:
            if next(iter(store.list_objects(args.prefix)), None) is None:
                raise nothing_under(store, args.prefix)
    if args.json:
        print_json(
            {
                "checked": checked,
                "bytes": total,
                "failed": [
                    {"key": f.key, "kind": f.kind, "problem": f.problem, "segments": f.bad_segments}
                    for f in failures
                ],
            }
        )
    else:
        print(
            f"checked {checked} object(s), {human_size(total)}: {len(failures)} failed",
            file=sys.stderr,
        )
    kinds = {f.kind for f in failures}
    if "integrity" in kinds:
        return EXIT_INTEGRITY
    if "key" in kinds:
        return EXIT_ACCESS
    return EXIT_FAILURE if failures else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check every segment of every encrypted object (with keys), or every sample "
        "of a plaintext dataset (every shard of a token corpus); report all failures",
    )
    p.add_argument("store", metavar="URL", help="storage URL (encrypted objects or a dataset)")
    p.add_argument("--prefix", default="", help="only objects under this prefix")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("-v", "--verbose", action="store_true", help="also list intact objects")
    add_store_options(p, cache=False)
    p.set_defaults(func=cmd_verify)
