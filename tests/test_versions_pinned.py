"""The object version travels down the stack: a dataset's manifest pins its shards'
versions, wrappers pass them down, and a warm cache serves an epoch without the origin."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dcstore import ShardedDataset, ShardWriter, VersionChangedError
from dcstore.backends.local import LocalBackend
from dcstore.cache.backend import CachedBackend
from dcstore.crypto import Keyring
from dcstore.crypto.backend import EncryptedBackend
from dcstore.loaders.manifest import load_manifest
from dcstore.testing.instrumented import InstrumentedBackend

SAMPLES = 60


def payload(i: int) -> bytes:
    return bytes([i % 251]) * (3000 + 37 * i)


@pytest.fixture
def stack(tmp_path):
    """An encrypted dataset behind an in-process cache over a counted local origin."""
    origin = InstrumentedBackend(LocalBackend(tmp_path / "origin"))
    keyring = Keyring.generate()
    store = EncryptedBackend(CachedBackend(origin, "memory"), keyring, segment_size=4096)
    with ShardWriter(store, shard_size=64 * 1024) as writer:
        for i in range(SAMPLES):
            writer.write({"__key__": f"s{i:04d}", "bin": payload(i)})
    return origin, store


def epoch(ds: ShardedDataset, number: int) -> dict[str, bytes]:
    ds.set_epoch(number)
    return {s["__key__"]: bytes(s["bin"]) for s in ds}


def origin_requests(origin: InstrumentedBackend) -> int:
    return origin.heads + origin.reads


def test_manifest_records_each_shards_version(stack) -> None:
    origin, store = stack
    manifest = load_manifest(store)
    assert len(manifest.shards) > 3
    for shard in manifest.shards:
        assert shard.version == origin.head(shard.key).version


def test_a_warm_cache_serves_an_epoch_without_the_origin(stack) -> None:
    origin, store = stack
    ds = ShardedDataset(store, shuffle=True, seed=1)
    before = origin_requests(origin)
    first = epoch(ds, 0)
    cold = origin_requests(origin) - before
    assert cold > 0
    assert first == {f"s{i:04d}": payload(i) for i in range(SAMPLES)}
    for number in (1, 2):
        before = origin_requests(origin)
        assert epoch(ds, number) == first
        assert origin_requests(origin) - before == 0, f"epoch {number} asked the origin"


def test_a_cold_read_asks_the_origin_once_per_shard_for_metadata(stack) -> None:
    origin, store = stack
    shards = load_manifest(store).shards
    ds = ShardedDataset(store)
    heads = origin.heads
    epoch(ds, 0)
    assert origin.heads - heads <= len(shards)  # one lookup per miss, none per read


def test_a_shard_replaced_under_the_manifest_is_named(stack) -> None:
    _, store = stack
    shard = load_manifest(store).shards[1]
    data = store.get(shard.key)
    store.put(shard.key, data)  # same bytes, new version: still not the manifest's shard
    with pytest.raises(VersionChangedError, match=shard.key.replace("/", ".")):
        epoch(ShardedDataset(store), 0)
    skipping = ShardedDataset(store, on_error="skip")
    got = epoch(skipping, 0)
    assert skipping.skipped_samples == shard.num_samples
    assert len(got) == SAMPLES - shard.num_samples


def test_rotation_records_the_new_versions(tmp_path) -> None:
    root, keyfile = tmp_path / "ds", tmp_path / "keys.json"
    cli = [sys.executable, "-m", "dcstore.cli"]

    def run(*args: str) -> str:
        done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("keys", "new", "--keys", str(keyfile))
    store = EncryptedBackend(LocalBackend(root), f"file://{keyfile}")
    with ShardWriter(store, shard_size=64 * 1024) as writer:
        for i in range(SAMPLES):
            writer.write({"__key__": f"s{i:04d}", "bin": payload(i)})
    run("keys", "new", "--keys", str(keyfile))  # a new primary
    out = run("keys", "rotate", f"file://{root}", "--keys", str(keyfile))
    assert "recorded the new shard versions in 1 dataset manifest(s)" in out
    fresh = EncryptedBackend(LocalBackend(root), f"file://{keyfile}")
    assert len(epoch(ShardedDataset(fresh), 0)) == SAMPLES


@pytest.mark.parametrize("origin_kind", ["local", "memory"])
def test_a_pinned_encrypted_read_asks_nothing_before_its_data(tmp_path, origin_kind) -> None:
    """A version's header and stored size are remembered: pinned reads of it go straight
    to the data (the inner read checks the version), unpinned reads still ask the
    origin which version is current, and a replaced version is still refused."""
    from dcstore.backends.memory import MemoryBackend

    inner = LocalBackend(tmp_path) if origin_kind == "local" else MemoryBackend(str(tmp_path))
    origin = InstrumentedBackend(inner)
    store = EncryptedBackend(origin, Keyring.generate(), segment_size=4096)
    data = payload(7) * 5
    old = store.put("k", data)
    heads = origin.heads
    for start, end in ((0, 10), (4000, 9000), (len(data) - 5, len(data))):
        assert store.get_range("k", start, end, version=old.version) == data[start:end]
    assert store.get("k", version=old.version) == data
    assert origin.heads == heads
    assert store.get_range("k", 0, 10) == data[:10]  # unpinned: the current version, asked
    assert origin.heads == heads + 1
    store.put("k", data[::-1])
    with pytest.raises(VersionChangedError):
        store.get_range("k", 0, 10, version=old.version)
    with pytest.raises(VersionChangedError):
        store.get("k", version=old.version)
    assert store.get_range("k", 0, 10) == data[::-1][:10]
