"""The Memcached tier's own behaviour on real memcached servers: URLs and limits, placement
by consistent hashing, leases, the CLI. Tier-generic tests are in test_cache_redis.py."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from memcached_server import (  # noqa: F401 - private_memcached is a fixture
    PrivateMemcached,
    memcached_entries,
    private_memcached_fixture,
    shared_memcached_url,
)

from dcstore.backends.local import LocalBackend
from dcstore.cache import CachedBackend, open_cache_tier
from dcstore.cache.memcached_client import route_of
from dcstore.cache.memcached_tier import ITEM_OVERHEAD, MemcachedTier
from dcstore.errors import ConfigError
from dcstore.testing.conformance import payload
from dcstore.testing.instrumented import InstrumentedBackend

KiB, MiB = 1 << 10, 1 << 20


def fresh(url: str, **query: object) -> str:
    query = {"namespace": f"m{uuid.uuid4().hex[:12]}", "stats_interval": 0, **query}
    return f"{url}?" + "&".join(f"{k}={v}" for k, v in query.items())


def tier_of(url: str) -> MemcachedTier:
    tier = open_cache_tier(url)
    assert isinstance(tier, MemcachedTier)
    return tier


def test_url_defaults_and_round_trip() -> None:
    tier = tier_of("memcached://h1,h2:11300,[::1]:11211?namespace=n1&ttl=30")
    assert tier.hosts == [("h1", 11211), ("h2", 11300), ("::1", 11211)]
    assert tier.policy.chunk_bytes == 512 * KiB  # half the default 1 MiB item limit
    assert tier.policy.ttl == 30
    assert open_cache_tier(tier.url).url == tier.url
    big = tier_of("memcached://h1?item_size_max=8388608")
    assert big.policy.chunk_bytes == 4 * MiB


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"memcached://h1?chunk_bytes={MiB}", "exceeds item_size_max"),
        ("memcached://h1?item_size_max=2048&chunk_bytes=1025", "exceeds item_size_max"),
        ("memcached://user:pw@h1", "no user"),
        ("memcached://h1/0", "no path"),
        ("memcached://h1?namespace=a b", "namespace"),
        ("memcached://h1?socket_timeout=0", "positive"),
        ("memcached://h1:port", "port 'port' is not 1..65535"),
        ("memcached://h1?bogus=1", "bogus"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_cache_tier(url)


def test_largest_chunk_fits_the_servers_item_limit(tmp_path: Path) -> None:
    url = fresh(shared_memcached_url(), chunk_bytes=MiB - ITEM_OVERHEAD)
    origin = InstrumentedBackend(LocalBackend(tmp_path))
    store = CachedBackend(origin, url)
    data = payload(3 * MiB)
    store.put("big.bin", data)
    assert store.get("big.bin") == data and store.get("big.bin") == data
    assert origin.reads == 1 and store.stats()["errors"] == 0
    tier_of(url).clear()


def test_a_chunk_over_the_servers_limit_is_a_fault_not_a_failed_read(
    private_memcached, tmp_path: Path
) -> None:
    server: PrivateMemcached = private_memcached("-I", "512k", count=1)
    # the URL claims the default 1 MiB limit: the server refuses the chunks
    store = CachedBackend(LocalBackend(tmp_path), fresh(server.url, retry_interval=0.1))
    store.put("k", payload(600 * KiB))
    for _ in range(2):
        assert store.get("k") == payload(600 * KiB)
    assert store.stats()["errors"] >= 1 and store.stats()["hits"] == 0


def test_an_objects_chunks_live_on_one_server(tmp_path: Path) -> None:
    url = fresh(shared_memcached_url(), chunk_bytes=64 * KiB)
    store = CachedBackend(LocalBackend(tmp_path), url)
    for i in range(12):
        store.put(f"o/{i}", payload(300 * KiB, i))
        store.get(f"o/{i}")
    tier = tier_of(url)
    servers = tier._memcached().server_clients()
    placement: dict[str, set[str]] = {}
    for name in servers:
        host, port = name.split(":")
        tier_on_one = MemcachedTier([(host, int(port))], namespace=tier.namespace)
        for key in memcached_entries(tier_on_one):
            if b"stats" not in key:
                placement.setdefault(route_of(key.decode()), set()).add(name)
    assert len(placement) == 12 and all(len(s) == 1 for s in placement.values())
    used = set().union(*placement.values())
    assert len(used) >= 2, "12 objects should spread over the three servers"
    tier.clear()


def test_leases_are_taken_once_and_released_only_by_their_holder() -> None:
    tier = tier_of(fresh(shared_memcached_url()))
    keys = [f"{{{uuid.uuid4().hex}}}:lease:{i}" for i in range(3)]
    assert tier.try_leases(keys, "a", 30) == [True] * 3
    assert tier.try_leases(keys[:2], "b", 30) == [False, False]
    assert tier.leases_held(keys)
    tier.release_leases(keys, "b")  # not b's: nothing happens
    assert tier.try_leases(keys[:1], "c", 30) == [False]
    tier.release_leases(keys, "a")
    assert not tier.leases_held(keys)
    assert tier.try_leases(keys[:1], "c", 30) == [True]
    tier.clear()


def dcstore_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcstore.cli", *args], capture_output=True, text=True
    )


def test_cli_stats_names_the_servers_and_clear_counts(tmp_path: Path) -> None:
    url = fresh(shared_memcached_url(), chunk_bytes=64 * KiB)
    store = CachedBackend(LocalBackend(tmp_path), url)
    store.put("k", payload(200 * KiB))
    store.get("k")
    store.get("k")
    stats = json.loads(dcstore_cli("cache", "stats", url, "--json").stdout)
    assert (stats["hits"], stats["misses"]) == (1, 1)
    assert stats["server"]["nodes"] == 3 and stats["server"]["maxmemory"] == 3 * 64 * MiB
    cleared = dcstore_cli("cache", "clear", url)
    assert cleared.returncode == 0, cleared.stderr
    # 4 chunks + the counters that were written (hits, misses, the two byte counts)
    assert "removed 8 keys" in cleared.stdout, cleared.stdout
    assert memcached_entries(tier_of(url)) == {}


def test_cli_reports_an_unreachable_tier() -> None:
    out = dcstore_cli("cache", "stats", "memcached://127.0.0.1:1?connect_timeout=0.2")
    assert out.returncode == 5 and "127.0.0.1:1" in out.stderr


def test_bench_cache_on_memcached(tmp_path: Path) -> None:
    from dcstore.bench.results import BenchResult
    from dcstore.cli.main import main

    url = fresh(shared_memcached_url())
    out = tmp_path / "cache.json"
    rc = main([
        "bench", "cache", str(tmp_path / "origin"), "--cache", url, "--op", "get,get_range",
        "--size", "700KiB", "--objects", "4", "--duration", "0.3s", "--warmup", "0.1s",
        "--no-progress", "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    result = BenchResult.from_dict(json.loads(out.read_text()))
    by = {(c.params["path"], c.params["op"]): c for c in result.cases}
    for op in ("get", "get_range"):
        hit, miss = by["hit", op], by["miss", op]
        assert hit.extra["hit_ratio"] == 1.0 and hit.extra["bytes_from_origin"] == 0
        assert miss.extra["hit_ratio"] == 0.0 and miss.extra["cache_errors"] == 0
        assert all(c.ops > 0 and c.errors == 0 and c.bytes_verified > 0 for c in (hit, miss))
    tier_of(url).clear()


def test_pymemcache_internals_the_fast_get_borrows() -> None:
    """memcached_io uses pymemcache's pooled connections directly (a measured speed-up,
    bench/results/cache.md); pyproject fences the version, and this fails if they move."""
    import pymemcache
    from pymemcache.client.base import Client, PooledClient

    assert pymemcache.__version__.startswith("4.0")
    pooled = PooledClient(("127.0.0.1", 1), connect_timeout=0.1, timeout=0.1)
    assert all(callable(getattr(pooled.client_pool, m)) for m in ("get", "release", "destroy"))
    client = Client(("127.0.0.1", 1))
    assert client.sock is None and callable(client._connect)


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"VALUE k 0 99999999999\r\n", "announces a value of"),
        (b"VALUE k 0 -5\r\n", "announces a value of"),
        (b"X" * 5000, "too long"),
    ],
)
def test_a_garbled_reply_never_sizes_an_allocation(reply: bytes, message: str) -> None:
    import socket

    from pymemcache.exceptions import MemcacheError

    from dcstore.cache.memcached_io import _read_values

    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(reply)
        with pytest.raises(MemcacheError, match=message):
            _read_values(ours, bytearray(256), 0)
