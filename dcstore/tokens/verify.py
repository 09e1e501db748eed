"""Checking every shard of a plaintext token corpus against its manifest.

Token shards carry no checksums (an encrypted corpus is authenticated by AES-GCM: verify
it with keys). :func:`verify_corpus` reads each shard of the current version whole, in
ranges of that object version, and checks what the manifest records: the shard is there,
is the version the pack wrote, holds exactly its token count, and every id is below the
vocabulary size. It yields one verdict per shard and never stops at the first bad one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.crypto.verify import ObjectCheck
from dcstore.errors import DcstoreError, KeyAccessError, NotFoundError, VersionChangedError
from dcstore.ops import read_chunks
from dcstore.tokens.manifest import DTYPES, TokenManifest, TokenShard


def _problem(store: Backend, manifest: TokenManifest, shard: TokenShard) -> str | None:
    """What is wrong with ``shard`` (None: nothing). Store errors pass."""
    meta = store.head(shard.key, version=shard.version)
    expected = shard.tokens * manifest.itemsize
    if meta.size != expected:
        return f"holds {meta.size} bytes, the manifest lists {shard.tokens} tokens ({expected} B)"
    dtype = DTYPES[manifest.dtype]
    top = -1
    for chunk in read_chunks(store, ObjectMeta(shard.key, meta.size, meta.version)):
        ids = np.frombuffer(chunk, dtype=dtype)
        if len(ids):
            top = max(top, int(ids.max()))
    if top >= manifest.vocab_size:
        return f"holds id {top}, outside the vocabulary of {manifest.vocab_size}"
    return None


def verify_corpus(
    store: Backend, manifest: TokenManifest, prefix: str = ""
) -> Iterator[ObjectCheck]:
    """One :class:`ObjectCheck` per shard under ``prefix``, in manifest order."""
    for shard in manifest.shards:
        if not shard.key.startswith(prefix):
            continue
        where = f"{store.url}/{shard.key}"
        size = shard.tokens * manifest.itemsize
        try:
            problem = _problem(store, manifest, shard)
        except (NotFoundError, VersionChangedError) as exc:
            yield ObjectCheck(shard.key, size, f"{where}: {exc}", "integrity")
            continue
        except KeyAccessError as exc:
            yield ObjectCheck(shard.key, size, f"{where}: {exc}", "key")
            continue
        except DcstoreError as exc:
            yield ObjectCheck(shard.key, size, f"{where}: {exc}", "error")
            continue
        if problem is None:
            yield ObjectCheck(shard.key, size)
        else:
            yield ObjectCheck(shard.key, size, f"{where}: {problem}", "integrity")
