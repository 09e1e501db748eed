"""A loaded manifest holds its shard table; each shard's samples are read on first use,
from its row group only, and checked then; it pickles as its (pinned) address."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import EncryptedBackend, Keyring
from dcstore.errors import IntegrityError, KeyAccessError, VersionChangedError
from dcstore.loaders import shardindex
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest, load_manifest
from dcstore.loaders.shardindex import ShardIndex, row_groups
from dcstore.loaders.writer import ShardWriter


class Counting(MemoryBackend):
    """Counts range reads of the manifest and the bytes they return."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ranges: list[tuple[int, int]] = []

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        if key == MANIFEST_KEY:
            self.ranges.append((start, end))
        return super().get_range(key, start, end, version=version)

    def __reduce__(self) -> Any:
        return (Counting, (self.name,))


def _dataset(name: str, shards: int = 12, per_shard: int = 3) -> tuple[Counting, Manifest]:
    store = Counting(name)
    with ShardWriter(store, shard_size=per_shard * 1024 + 1024) as writer:
        for i in range(shards * per_shard):
            writer.write({"__key__": f"k{i:04d}", "txt": bytes([i % 256]) * 8})
    written = load_manifest(store)
    eager = Manifest(
        written.version, tuple(written.shards), written.metadata, versions_of=store.url
    )
    store.put(MANIFEST_KEY, eager.to_parquet(row_group_samples=2 * per_shard))
    return store, eager


def _same(a: Any, b: Any) -> None:
    assert (a.key, a.size, a.version, a.sample_keys) == (b.key, b.size, b.version, b.sample_keys)
    for name in ("offsets", "lengths", "checksums"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_row_groups_hold_whole_shards_of_about_the_bound() -> None:
    assert row_groups(np.array([3, 3, 3, 3, 3])) == [(0, 5)]
    assert row_groups(np.array([3, 3, 3, 3, 3]), 6) == [(0, 2), (2, 4), (4, 5)]
    assert row_groups(np.array([10, 1, 1]), 4) == [(0, 1), (1, 3)]
    assert row_groups(np.array([], dtype=np.int64)) == [(0, 0)]


def test_a_shard_is_read_from_its_row_group_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shardindex, "WHOLE_BELOW", 0)  # by ranges, as a large manifest
    # row groups far larger than the footer read and the reader's coalescing gap (8 KiB)
    store, eager = _dataset("lazy-ranges", shards=16, per_shard=2000)
    size = store.head(MANIFEST_KEY).size
    assert pq.ParquetFile(pa.BufferReader(store.get(MANIFEST_KEY))).num_row_groups == 8
    store.ranges.clear()
    manifest = load_manifest(store)
    opened = sum(b - a for a, b in store.ranges)
    assert manifest.num_samples == 32000 and len(manifest.shards) == 16
    assert opened < size / 4, (opened, size)
    assert len(store.ranges) <= 3 + 8  # probe, footer, one span per row group
    store.ranges.clear()
    _same(manifest.shards[7], eager.shards[7])
    assert len(store.ranges) == 1  # the row group's per-sample columns, as one span
    assert 0 < sum(b - a for a, b in store.ranges) < size / 6
    for got, want in zip(manifest.shards, eager.shards, strict=True):
        _same(got, want)


def test_a_manifest_pickles_as_its_address_and_reads_the_same_version() -> None:
    store, eager = _dataset("lazy-pickle", shards=40)
    manifest = load_manifest(store)
    manifest.shards[3]  # a cached shard is not shipped
    blob = pickle.dumps(manifest)
    assert len(blob) < 1000
    worker = pickle.loads(blob)
    assert isinstance(worker.shards, ShardIndex)
    np.testing.assert_array_equal(worker.starts, eager.starts)
    _same(worker.shards[39], eager.shards[39])
    store.put(MANIFEST_KEY, eager.to_parquet())  # a new object version under the same key
    with pytest.raises(VersionChangedError):
        pickle.loads(blob).num_samples  # noqa: B018


def test_an_unpinned_copy_has_no_shard_versions() -> None:
    store, _ = _dataset("lazy-unpinned", shards=2)
    manifest = load_manifest(store)
    assert manifest.shards[0].version is not None
    unpinned = manifest.unpinned()
    assert unpinned.shards[0].version is None and unpinned.versions_of == ""
    assert pickle.loads(pickle.dumps(unpinned)).shards[1].version is None


def test_a_damaged_row_fails_when_its_shard_is_first_used() -> None:
    store, eager = _dataset("lazy-damaged")
    table = pq.read_table(pa.BufferReader(store.get(MANIFEST_KEY)))
    lengths = table.column("lengths").to_pylist()
    lengths[9] = [10**9] * len(lengths[9])
    table = table.set_column(
        table.schema.get_field_index("lengths"), "lengths", pa.array(lengths, pa.list_(pa.int64()))
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=2)
    store.put(MANIFEST_KEY, sink.getvalue().to_pybytes())
    manifest = load_manifest(store)
    _same(manifest.shards[0], eager.shards[0])
    with pytest.raises(IntegrityError, match=r"manifest\.parquet: shard 9 .*outside the shard"):
        manifest.shards[9]
    with pytest.raises(IntegrityError, match="outside the shard"):
        Manifest.from_parquet(store.get(MANIFEST_KEY), where="x")


def test_a_one_row_group_manifest_still_loads() -> None:
    store, eager = _dataset("lazy-old")
    table = pq.read_table(pa.BufferReader(store.get(MANIFEST_KEY)))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put(MANIFEST_KEY, sink.getvalue().to_pybytes())
    manifest = load_manifest(store)
    for got, want in zip(manifest.shards, eager.shards, strict=True):
        _same(got, want)


def test_shard_counts_that_overflow_are_refused() -> None:
    store, _ = _dataset("lazy-overflow", shards=2)
    table = pq.read_table(pa.BufferReader(store.get(MANIFEST_KEY)))
    index = table.schema.get_field_index("samples")
    table = table.set_column(index, "samples", pa.array([2**62, 2**62], pa.int64()))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put(MANIFEST_KEY, sink.getvalue().to_pybytes())
    with pytest.raises(IntegrityError, match="sample counts out of range"):
        load_manifest(store)


def test_an_encrypted_manifest_reads_by_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of an encrypted manifest decrypt only their segments; without keys the
    dataset is refused as encrypted, as before."""
    monkeypatch.setattr(shardindex, "WHOLE_BELOW", 0)
    plain, eager = _dataset("lazy-plain", shards=6)
    inner = MemoryBackend("lazy-encrypted")
    store = EncryptedBackend(inner, Keyring.generate("k"), segment_size=4096)
    store.put(MANIFEST_KEY, plain.get(MANIFEST_KEY))
    manifest = load_manifest(store)
    for got, want in zip(manifest.shards, eager.shards, strict=True):
        assert (got.key, got.sample_keys) == (want.key, want.sample_keys)
    with pytest.raises(KeyAccessError, match="is encrypted"):
        load_manifest(inner)


def _count_group_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row groups ShardIndex reads from now on, in order."""
    reads: list[int] = []
    original = ShardIndex._read_group

    def counted(self: ShardIndex, g: int, names: list[str]) -> pa.Table:
        reads.append(g)
        return original(self, g, names)

    monkeypatch.setattr(ShardIndex, "_read_group", counted)
    return reads


def test_a_small_manifest_is_decoded_when_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most CACHED_ROW_GROUPS row groups: decoded with the shard table, so a process
    forked afterwards (a DataLoader worker) reads and decodes nothing more."""
    store, eager = _dataset("lazy-small", shards=4)  # 2 row groups of 2 shards
    manifest = load_manifest(store)
    assert len(manifest.shards) == 4
    reads = _count_group_reads(monkeypatch)
    store.ranges.clear()
    for got, want in zip(manifest.shards, eager.shards, strict=True):
        _same(got, want)
    assert reads == [] and store.ranges == []
    for got, want in zip(manifest.unpinned().shards, eager.shards, strict=True):
        assert got.version is None
        np.testing.assert_array_equal(got.offsets, want.offsets)
    assert reads == []  # an unpinned copy shares the decoded groups


def test_a_large_manifest_decodes_a_row_group_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    store, eager = _dataset("lazy-large", shards=12)  # 6 row groups
    reads = _count_group_reads(monkeypatch)
    manifest = load_manifest(store)
    assert len(manifest.shards) == 12
    reads.clear()  # the shard-level columns were read, by row group
    _same(manifest.shards[7], eager.shards[7])
    assert reads == [3]  # shard 7's samples: its row group only


def test_a_flipped_bit_in_a_manifest_page_names_the_manifest() -> None:
    """Pages carry CRC-32 checksums: a flip in the offsets or checksums columns of a
    plaintext manifest was blamed on a healthy shard's sample (or went unseen)."""
    for column in ("offsets", "checksums"):
        store, _ = _dataset(f"lazy-flip-{column}")
        data = bytearray(store.get(MANIFEST_KEY))
        parquet = pq.ParquetFile(pa.BufferReader(bytes(data)))
        chunk = parquet.metadata.row_group(1).column(parquet.schema_arrow.names.index(column))
        data[chunk.data_page_offset + chunk.total_compressed_size - 3] ^= 0x10
        store.put(MANIFEST_KEY, bytes(data))
        with pytest.raises(IntegrityError, match=r"manifest\.parquet: not a readable dcstore"):
            manifest = load_manifest(store)
            for shard in range(len(manifest.shards)):
                manifest.shards[shard]
