"""End to end: a packed, encrypted dataset on Cassandra, behind the Redis tier, read by
``ShardedDataset`` through a multi-worker ``DataLoader``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cassandra_server import cassandra_hosts, cassandra_url  # noqa: F401 - fixtures
from e2e_dataset import new_key_file, pack_encrypted, read_two_epochs
from serverenv import server_url

from dcstore.cache import open_cache_tier
from dcstore.store import open_store

pytest.importorskip("torch")
pytestmark = [pytest.mark.server("cassandra"), pytest.mark.slow]


def test_encrypted_dataset_on_cassandra_behind_redis(
    cassandra_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    keys = new_key_file(tmp_path)
    url = f"{cassandra_url}/e2e-{uuid.uuid4().hex[:8]}"
    redis = server_url("redis")
    cache = f"{redis}{'&' if '?' in redis else '?'}namespace=e2e-{uuid.uuid4().hex[:8]}"
    # small shards: the dataset spans many objects (and several chunks per shard)
    first_key, first = pack_encrypted(url, keys, shard_size=256 * 1024)
    read_two_epochs(url, keys, cache=cache)
    stats = open_cache_tier(cache).read_stats()
    assert stats["misses"] > 0, stats
    assert stats["hits"] > 0 and stats["bytes_from_cache"] > 0, stats
    # The Redis tier holds ciphertext only.
    with open_store(url, cache=cache) as store:
        assert store.get(first_key) == first
