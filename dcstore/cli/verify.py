"""``dcstore verify URL``: check every object or sample, report all failures.

With keys: authenticate every segment of every encrypted object and, where the store
holds a dataset or token corpus (or both), check that every shard each manifest lists
is there at the version packed (a shard deleted, or replaced by another valid object,
reads as damaged). Without keys: check every sample of the plaintext dataset at URL against the
checksums in its manifest, and every shard of the plaintext token corpus there against
its manifest (size, version, ids inside the vocabulary): both, where a corpus is packed
beside a dataset; an encrypted one says it needs keys. A store (or prefix) without
objects is an error, never "0 failed".
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
    """Encrypted objects when keys are given, else the samples of the plaintext dataset
    and the shards of the token corpus there (both, where one is packed beside the other)."""
    if key_source_from(args.keys) is not None:
        with _encrypted_store(args.store, args) as store:
            yield itertools.chain(verify(store, args.prefix), _missing_shards(store, args.prefix))
        return
    from dcstore.loaders.manifest import MANIFEST_KEY
    from dcstore.tokens.manifest import TOKENS_KEY, dataset_manifests

    with open_from_args(args.store, args) as store:
        present = dataset_manifests(store)
        if not present:
            if next(iter(store.list_objects()), None) is None:
                raise nothing_under(store, "")
            raise ConfigError(
                f"no keys and no {MANIFEST_KEY} or {TOKENS_KEY} in {args.store}: pass "
                f"--keys PATH or set {ENV_KEYS_FILE} or {ENV_KEYS} to verify encrypted objects"
            )
        checks = [_plaintext_checks(store, key, args.prefix) for key in present]
        yield itertools.chain.from_iterable(checks)


def _plaintext_checks(store: Backend, manifest_key: str, prefix: str) -> Iterator[ObjectCheck]:
    """The checks of the dataset (or token corpus) whose manifest is at ``manifest_key``;
    the manifest is loaded now."""
    from dcstore.loaders.manifest import load_manifest  # pyarrow: only here
    from dcstore.loaders.verify import verify_dataset
    from dcstore.tokens.manifest import TOKENS_KEY, load_token_manifest
    from dcstore.tokens.verify import verify_corpus

    if manifest_key == TOKENS_KEY:
        return verify_corpus(store, load_token_manifest(store), prefix)
    return verify_dataset(store, load_manifest(store), prefix)


def _listed_shards(store: Backend, manifest_key: str) -> list[tuple[str, str | None]]:
    """(key, version) of every shard the manifest at ``manifest_key`` lists."""
    from dcstore.loaders.manifest import load_manifest
    from dcstore.tokens.manifest import TOKENS_KEY, load_token_manifest

    if manifest_key == TOKENS_KEY:
        return [(s.key, s.version) for s in load_token_manifest(store).shards]
    return [(s.key, s.version) for s in load_manifest(store).shards]


def _missing_shards(store: Backend, prefix: str) -> Iterator[ObjectCheck]:
    """A failed check for each shard a manifest there lists (the dataset's, the token
    corpus's, or both) that is gone or not the version packed (objects that are there
    were authenticated one by one already)."""
    from dcstore.tokens.manifest import dataset_manifests

    for manifest_key in dataset_manifests(store):
        try:
            listed = _listed_shards(store, manifest_key)
        except NotFoundError:
            continue  # deleted meanwhile
        except DcstoreError as exc:  # the manifest itself: reported once (see cmd_verify)
            yield ObjectCheck(exc.key or manifest_key, 0, str(exc), "integrity")
            continue
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
