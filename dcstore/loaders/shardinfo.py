"""One shard of a dataset version and the check of its manifest row.

Guarantees: :func:`check_shard` passes only a row whose per-sample columns agree in
length with its sample count and whose samples all lie inside the shard, so a loader
can trust its offsets (the check cannot overflow int64). :func:`read_as_packed` reads
exactly the shard version a manifest lists, or raises :class:`ShardChangedError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcstore.backends.base import Backend
from dcstore.errors import (
    IntegrityError,
    InvalidRangeError,
    NotEncryptedError,
    NotFoundError,
    ShardChangedError,
    VersionChangedError,
)


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its object key, size, key id, and per-sample byte ranges."""

    key: str
    size: int
    key_id: str | None
    sample_keys: tuple[str, ...]
    offsets: np.ndarray
    lengths: np.ndarray
    checksums: np.ndarray | None = None
    """Per-sample :func:`~dcstore.loaders.checksum.sample_checksum` (uint64); None in
    manifests written before checksums existed."""
    version: str | None = None
    """The shard object's version when the manifest was written: loaders read exactly
    it (``version=``), so a warm cache serves them without asking the origin and a
    replaced shard is a :class:`~dcstore.errors.VersionChangedError`. None in
    manifests written before versions were recorded (reads then ask for the current one)."""

    @property
    def num_samples(self) -> int:
        return len(self.offsets)


def check_shard(shard: ShardInfo, samples: int | None, what: str) -> ShardInfo:
    """``shard`` if its row is consistent: a key and size, one offset, length (and
    checksum) per sample key, as many as ``samples``, every sample inside the shard."""
    if shard.key is None or shard.size is None or shard.size < 0:
        raise IntegrityError(f"{what}: no shard key or size")
    n = len(shard.sample_keys)
    counts = {n, samples, len(shard.offsets), len(shard.lengths)}
    if shard.checksums is not None:
        counts.add(len(shard.checksums))
    if len(counts) != 1 or any(k is None for k in shard.sample_keys):
        raise IntegrityError(f"{what} ({shard.key!r}): sample counts disagree")
    if n and (  # each bounded first, so the sum cannot overflow int64
        min(shard.offsets.min(), shard.lengths.min()) < 0
        or max(shard.offsets.max(), shard.lengths.max()) > shard.size
        or (shard.offsets + shard.lengths).max() > shard.size
    ):
        raise IntegrityError(f"{what} ({shard.key!r}): a sample lies outside the shard")
    return shard


def read_as_packed(
    store: Backend, key: str, version: str | None, start: int, end: int, *, mapped: bool = True
) -> bytes | memoryview:
    """Bytes ``[start, end)`` of shard ``key`` at the ``version`` its manifest lists (a
    view of the page cache when ``mapped`` and the store maps files).

    A shard that is no longer as packed (replaced or rewritten: another version; cut
    short: the range is outside it; plaintext where the dataset is encrypted) raises
    :class:`ShardChangedError` naming it, not the store's error about an object; a
    shard that is gone is a :class:`NotFoundError` saying why that happens.
    """
    try:
        view = store.map_range(key, start, end, version=version) if mapped else None
        return store.get_range(key, start, end, version=version) if view is None else view
    except (VersionChangedError, InvalidRangeError, NotEncryptedError) as exc:
        raise ShardChangedError(
            f"{exc}; so the shard is not as its manifest lists it (truncated, rewritten or "
            "replaced after the pack): restore it, or pack the dataset again",
            url=store.url,
            key=key,
        ) from exc
    except NotFoundError as exc:
        raise NotFoundError(
            f"{exc}; the dataset version that lists this shard was dropped (a new pack keeps "
            "the last few versions, gc the current ones) or the shard deleted: open the "
            "dataset again to read its current version",
            url=store.url,
            key=key,
        ) from exc
