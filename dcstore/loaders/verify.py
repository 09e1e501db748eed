"""Checking every sample of a plaintext dataset against its manifest checksum.

:func:`verify_dataset` reads each shard listed in the manifest in runs of
whole samples (at most ``READ_BYTES`` each, one larger sample alone), checks
the tar structure, the sample count and every sample's checksum, and yields
one verdict per shard: it never stops at the first bad shard or sample.
Shards of a manifest written before checksums existed get the structure
checks only.
"""

from __future__ import annotations

from collections.abc import Iterator

from dcstore.backends.base import Backend
from dcstore.crypto.verify import ObjectCheck
from dcstore.errors import (
    DcstoreError,
    IntegrityError,
    KeyAccessError,
    NotFoundError,
    ShardChangedError,
)
from dcstore.loaders.checksum import sample_checksum
from dcstore.loaders.manifest import Manifest, ShardInfo
from dcstore.loaders.shardinfo import read_as_packed
from dcstore.loaders.tario import group_samples, parse_members

READ_BYTES = 64 << 20


def _runs(info: ShardInfo, read_bytes: int) -> Iterator[tuple[int, int]]:
    """``[first, stop)`` sample ranges of at most ``read_bytes`` (or one sample)."""
    first = 0
    while first < info.num_samples:
        stop, size = first + 1, int(info.lengths[first])
        while stop < info.num_samples and size + int(info.lengths[stop]) <= read_bytes:
            size += int(info.lengths[stop])
            stop += 1
        yield first, stop
        first = stop


def _bad_samples(store: Backend, info: ShardInfo, read_bytes: int) -> list[str]:
    """Keys of the samples of ``info`` whose bytes do not match their checksum."""
    bad = []
    for first, stop in _runs(info, read_bytes):
        lo = int(info.offsets[first])
        hi = int(info.offsets[stop - 1] + info.lengths[stop - 1])
        data = memoryview(read_as_packed(store, info.key, info.version, lo, hi, mapped=False))
        spans = group_samples(parse_members(data, base=lo))
        if len(spans) != stop - first:
            raise IntegrityError(
                f"found {len(spans)} samples in bytes [{lo}, {hi}), "
                f"the manifest lists {stop - first}"
            )
        if info.checksums is None:
            continue
        for j, span in zip(range(first, stop), spans, strict=True):
            if sample_checksum(data[span.start - lo : span.end - lo]) != int(info.checksums[j]):
                bad.append(span.key)
    return bad


def verify_shard(store: Backend, info: ShardInfo, read_bytes: int = READ_BYTES) -> ObjectCheck:
    """The verdict on one shard of a plaintext dataset."""
    where = f"{store.url}/{info.key}"
    try:
        bad = _bad_samples(store, info, read_bytes)
    except ShardChangedError as exc:  # names the store and the shard itself
        return ObjectCheck(info.key, info.size, str(exc), "integrity")
    except IntegrityError as exc:
        return ObjectCheck(info.key, info.size, f"{where}: {exc}", "integrity")
    except NotFoundError as exc:  # the dataset is damaged: a shard it lists is gone
        return ObjectCheck(info.key, info.size, str(exc), "integrity")
    except KeyAccessError as exc:
        return ObjectCheck(info.key, info.size, f"{where}: {exc}", "key")
    except DcstoreError as exc:
        return ObjectCheck(info.key, info.size, f"{where}: {exc}", "error")
    if not bad:
        return ObjectCheck(info.key, info.size)
    shown = ", ".join(bad[:10]) + (", ..." if len(bad) > 10 else "")
    problem = (
        f"{where}: {len(bad)} of {info.num_samples} sample(s) do not match their checksum ({shown})"
    )
    return ObjectCheck(info.key, info.size, problem, "integrity")


def verify_dataset(store: Backend, manifest: Manifest, prefix: str = "") -> Iterator[ObjectCheck]:
    """One :class:`ObjectCheck` per shard under ``prefix``, in manifest order."""
    for info in manifest.shards:
        if info.key.startswith(prefix):
            yield verify_shard(store, info)
