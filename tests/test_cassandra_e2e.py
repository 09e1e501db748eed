"""End to end: a packed, encrypted dataset on Cassandra, behind the Redis tier, read by
``ShardedDataset`` through a multi-worker ``DataLoader``."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cassandra_server import cassandra_hosts, cassandra_url  # noqa: F401 - fixtures
from serverenv import server_url

from dcstore.backends.registry import open_backend
from dcstore.cache import open_cache_tier
from dcstore.store import open_store
from dcstore.testing.conformance import payload

torch_data = pytest.importorskip("torch.utils.data")
pytestmark = [pytest.mark.server("cassandra"), pytest.mark.slow]

SAMPLES = 400


def _sample(i: int) -> dict[str, Any]:
    return {"__key__": f"s{i:05d}", "bin": payload(3000 + i, i), "cls": i % 7}


def _fields(sample: dict[str, Any]) -> tuple[str, bytes, int]:
    return str(sample["__key__"]), bytes(sample["bin"]), int(sample["cls"])


def test_encrypted_dataset_on_cassandra_behind_redis(
    cassandra_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import ShardedDataset, ShardWriter

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    keys = f"file://{keyfile}"
    url = f"{cassandra_url}/e2e-{uuid.uuid4().hex[:8]}"
    redis = server_url("redis")
    cache = f"{redis}{'&' if '?' in redis else '?'}namespace=e2e-{uuid.uuid4().hex[:8]}"

    # Pack: small shards so the dataset spans many objects (and several chunks per shard).
    with ShardWriter(url, keys=keys, shard_size=256 * 1024) as writer:
        for i in range(SAMPLES):
            writer.write(_sample(i))
    raw = open_backend(url)
    shards = [m for m in raw.list() if m.key.endswith(".tar")]
    assert len(shards) >= 4
    first = raw.get(shards[0].key)
    assert payload(3000, 0)[:64] not in first, "shards are stored encrypted"

    ds = ShardedDataset(url, cache=cache, keys=keys, shuffle=True, seed=1).map(_fields)
    loader = torch_data.DataLoader(ds, batch_size=None, num_workers=2)
    expected = {_fields(_sample(i)) for i in range(SAMPLES)}
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen = [tuple(item) for item in loader]  # the DataLoader turns tuples into lists
        assert len(seen) == SAMPLES
        assert set(seen) == expected
    stats = open_cache_tier(cache).read_stats()
    assert stats["misses"] > 0, stats
    assert stats["hits"] > 0 and stats["bytes_from_cache"] > 0, stats

    # The Redis tier holds ciphertext only.
    store = open_store(url, cache=cache)
    assert store.get(shards[0].key) == first
    raw.close()
    store.close()
