"""ShardedDataset through an encrypted, Redis-cached stack survives Redis being killed mid-epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis_server import (  # noqa: F401 - private_redis_fixture is a fixture
    PrivateRedis,
    private_redis_fixture,
)

from dcstore.backends.local import LocalBackend
from dcstore.cache import open_cache_tier
from dcstore.store import open_store
from dcstore.testing.conformance import payload
from dcstore.testing.instrumented import InstrumentedBackend

torch_data = pytest.importorskip("torch.utils.data")
loaders = pytest.importorskip("dcstore.loaders.dataset")
pytestmark = pytest.mark.slow

SAMPLES = 600


def key_of(sample: dict[str, Any]) -> str:
    return str(sample["__key__"])


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, str]:
    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import ShardWriter

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    root = tmp_path / "origin"
    with ShardWriter(str(root), keys=f"file://{keyfile}", shard_size=32 * 1024) as writer:
        for i in range(SAMPLES):
            writer.write({"__key__": f"s{i:05d}", "bin": payload(1500, i), "cls": i % 10})
    return root, f"file://{keyfile}"


def run_epoch(loader: Any, on_progress: Any = None) -> list[str]:
    seen: list[str] = []
    for key in loader:
        seen.append(key)
        if on_progress:
            on_progress(len(seen))
    return seen


def test_redis_killed_and_restarted_mid_epoch(private_redis, dataset: tuple[Path, str]) -> None:
    root, keys = dataset
    server: PrivateRedis = private_redis()
    cache = f"{server.url}?retry_interval=0.2&connect_timeout=0.3&socket_timeout=1&stats_interval=0"
    # a slow origin so that the epoch is long enough to kill Redis in its middle
    store = open_store(
        InstrumentedBackend(LocalBackend(root), latency=0.01), cache=cache, keys=keys
    )
    ds = loaders.ShardedDataset(store, shuffle=True, seed=3, prefetch_bytes=64 * 1024).map(key_of)
    loader = torch_data.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=False)
    expected = sorted(f"s{i:05d}" for i in range(SAMPLES))

    ds.set_epoch(0)
    assert sorted(run_epoch(loader)) == expected  # fills the cache
    tier = open_cache_tier(cache)
    assert tier.read_stats()["misses"] > 0

    events: list[str] = []

    def chaos(n: int) -> None:
        if n == SAMPLES // 4:
            server.kill9()
            events.append("killed")
        elif n == SAMPLES // 2:
            server.start()  # same port, empty
            events.append("restarted")

    ds.set_epoch(1)
    seen = run_epoch(loader, chaos)
    assert events == ["killed", "restarted"]
    assert len(seen) == SAMPLES and sorted(seen) == expected  # every sample exactly once

    ds.set_epoch(2)  # the tier is back: the epoch refills it and completes
    assert sorted(run_epoch(loader)) == expected
    stats = open_cache_tier(cache).read_stats()
    assert stats["misses"] > 0 and stats["errors"] >= 1


def test_sharded_dataset_accepts_a_cache_url(private_redis, dataset: tuple[Path, str]) -> None:
    root, keys = dataset
    server: PrivateRedis = private_redis()
    cache = f"{server.url}?stats_interval=0"
    for _ in range(2):
        ds = loaders.ShardedDataset(str(root), cache=cache, keys=keys)
        assert sorted(key_of(s) for s in ds) == sorted(f"s{i:05d}" for i in range(SAMPLES))
    stats = open_cache_tier(cache).read_stats()
    assert stats["hits"] >= stats["misses"] > 0
    assert stats["bytes_from_origin"] <= sum(m.size for m in LocalBackend(root).list_objects(""))
