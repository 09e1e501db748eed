"""CachedBackend on the real shared tiers: the Redis standalone server, the 3-node Redis
cluster and the three memcached servers (tier-generic tests run on each)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from memcached_server import memcached_entries, shared_memcached_url
from redis_server import (  # noqa: F401 - private_redis is a fixture
    private_redis_fixture,
    shared_cluster_url,
    shared_redis_url,
)

from dcstore.backends.base import Backend
from dcstore.backends.local import LocalBackend
from dcstore.cache import CachedBackend, CacheTier, open_cache_tier
from dcstore.cache.redis_tier import RedisTier
from dcstore.store import open_store
from dcstore.testing.conformance import BackendConformance, payload
from dcstore.testing.instrumented import InstrumentedBackend

MiB = 1 << 20
TESTS = Path(__file__).resolve().parent


def with_query(url: str, **query: object) -> str:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{url}{'&' if '?' in url else '?'}{qs}"


def fresh_url(base: str, **query: object) -> str:
    """The tier URL under a namespace of its own."""
    return with_query(base, namespace=f"t{uuid.uuid4().hex[:12]}", stats_interval=0, **query)


SHARED_TIERS = {
    "standalone": shared_redis_url,
    "cluster": shared_cluster_url,
    "memcached": shared_memcached_url,
}


@pytest.fixture(params=sorted(SHARED_TIERS))
def base_url(request: pytest.FixtureRequest) -> str:
    return SHARED_TIERS[request.param]()


@pytest.fixture
def tier_url(base_url: str) -> Iterator[str]:
    url = fresh_url(base_url, chunk_bytes=64 * 1024)
    yield url
    open_cache_tier(url).clear()


def raw_client(tier: RedisTier) -> redis.Redis | redis.RedisCluster:
    return tier._redis()


def all_entries(tier: CacheTier) -> dict[bytes, tuple[bytes, float | None]]:
    """Every string key of the tier's namespace: ``key -> (value, seconds to live or None)``."""
    if not isinstance(tier, RedisTier):
        return memcached_entries(tier)
    client = raw_client(tier)
    out = {}
    for key in client.scan_iter(match=f"{tier.namespace}:*"):
        if client.type(key) == b"string":
            ttl = client.pttl(key)
            out[key] = (client.get(key), ttl / 1000 if ttl >= 0 else None)
    return out


def all_values(tier: CacheTier) -> dict[bytes, bytes]:
    return {k: v for k, (v, _) in all_entries(tier).items()}


class TestRedisConformance(BackendConformance):
    stores_across_processes = False  # a memory:// origin

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        url = fresh_url(shared_redis_url(), chunk_bytes=MiB)
        yield CachedBackend(LocalBackend_or_memory(), url)
        open_cache_tier(url).clear()


class TestRedisClusterConformance(BackendConformance):
    stores_across_processes = False  # a memory:// origin
    large_object_size = 16 * MiB + 1

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        url = fresh_url(shared_cluster_url(), chunk_bytes=MiB)
        yield CachedBackend(LocalBackend_or_memory(), url)
        open_cache_tier(url).clear()


class TestMemcachedConformance(BackendConformance):
    stores_across_processes = False  # a memory:// origin
    large_object_size = 16 * MiB + 1

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        url = fresh_url(shared_memcached_url(), chunk_bytes=512 * 1024)
        yield CachedBackend(LocalBackend_or_memory(), url)
        open_cache_tier(url).clear()


def LocalBackend_or_memory() -> Backend:
    from dcstore.backends.memory import MemoryBackend

    return MemoryBackend(f"redis-conf-{uuid.uuid4().hex}")


def test_hits_come_from_the_tier(tier_url: str, tmp_path: Path) -> None:
    origin = InstrumentedBackend(LocalBackend(tmp_path))
    store = CachedBackend(origin, tier_url)
    data = payload(300_000)
    store.put("d/a.bin", data)
    assert store.get("d/a.bin") == data
    assert store.get("d/a.bin") == data
    assert store.get_range("d/a.bin", 70_000, 200_000) == data[70_000:200_000]
    assert origin.reads == 1
    tier = store.tier
    chunks = [v for k, v in all_values(tier).items() if b"lease" not in k and b"stats" not in k]
    assert len(chunks) == 5 and b"".join(sorted(chunks, key=data.index)) == data
    store.flush_stats()
    shared = tier.read_stats()
    assert (shared["hits"], shared["misses"], shared["bytes_from_origin"]) == (2, 1, len(data))


def test_ranges_short_of_their_chunks_move_only_their_bytes(tier_url: str, tmp_path: Path) -> None:
    """Redis (GETRANGE) reads any range short of the chunks covering it as slices, so an
    unaligned 64 KiB range moves 64 KiB, not its two chunks; Memcached, which fetches whole
    values either way, slices only ranges under a quarter of their chunks."""
    store = CachedBackend(LocalBackend(tmp_path), tier_url)  # 64 KiB chunks
    data = payload(300_000)
    store.put("a.bin", data)
    store.get("a.bin")  # filled
    tier = store.tier
    sliced: list[int] = []
    real = tier.get_slices

    def spy(items):  # type: ignore[no-untyped-def]
        sliced.append(sum(b - a for _, a, b in items))
        return real(items)

    tier.get_slices = spy  # type: ignore[method-assign]
    ranges = [(100, 5_000), (40_000, 40_000 + 65_536), (0, 65_536)]  # small, unaligned, a chunk
    for start, end in ranges:
        assert store.get_range("a.bin", start, end) == data[start:end]
    expected = [4_900, 65_536] if isinstance(tier, RedisTier) else [4_900]
    assert sliced == expected


def test_tier_holds_ciphertext_only(tier_url: str, tmp_path: Path) -> None:
    from dcstore.crypto import Keyring, write_key_file

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    marker = b"PLAINTEXT-MARKER-" * 4096
    with open_store(str(tmp_path / "origin"), cache=tier_url, keys=f"file://{keyfile}") as store:
        store.put("secret/shard-000.tar", marker)
        assert store.get("secret/shard-000.tar") == marker
        assert store.get_range("secret/shard-000.tar", 17, 1000) == marker[17:1000]
        values = all_values(open_cache_tier(tier_url))
        assert values, "the cache should hold the object's chunks"
        for key, value in values.items():
            assert b"PLAINTEXT" not in key and b"PLAINTEXT" not in value
            assert b"secret" not in key  # keys are digests, not object names
        ciphertext = LocalBackend(tmp_path / "origin").get("secret/shard-000.tar")
        assert any(v in ciphertext for v in values.values() if len(v) > 1000)


def test_a_corrupt_cache_entry_is_dropped_and_read_from_the_origin(
    tier_url: str, tmp_path: Path
) -> None:
    """Anyone able to write to the tier (memcached has no auth) could flip a byte of a
    cached segment: readers fail it (never decode it), drop the version's entries and
    read the origin once, so the tier heals instead of failing every node. A corrupt
    origin still fails."""
    from dcstore.crypto import Keyring, write_key_file
    from dcstore.errors import IntegrityError

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    data = payload(300_000, 5)
    keys = f"file://{keyfile}"
    with open_store(str(tmp_path / "origin"), cache=tier_url, keys=keys) as store:
        store.put("shard.tar", data)
        assert store.get("shard.tar") == data  # fills the tier
    tier = open_cache_tier(tier_url)
    chunks = {k: v for k, v in all_values(tier).items() if len(v) > 1000}
    assert chunks
    prefix = f"{tier.namespace}:".encode()
    tier.set_many([(k[len(prefix) :].decode(), b"\x00" + v[1:]) for k, v in chunks.items()])
    with open_store(str(tmp_path / "origin"), cache=tier_url, keys=keys) as store:
        assert store.get_range("shard.tar", 1000, 200_000) == data[1000:200_000]
        assert store.get("shard.tar") == data
    assert all(all_values(tier).get(k) == v for k, v in chunks.items())  # healed
    origin = LocalBackend(tmp_path / "origin")
    damaged = bytearray(origin.get("shard.tar"))
    damaged[-100] ^= 1
    origin.put("shard.tar", bytes(damaged))
    store = open_store(str(tmp_path / "origin"), cache=tier_url, keys=keys)
    with store, pytest.raises(IntegrityError, match="failed authentication"):
        store.get("shard.tar")


WRITER = textwrap.dedent(
    """
    import sys
    from dcstore.store import open_store
    from dcstore.testing.conformance import payload
    root, cache, seed = sys.argv[1:]
    with open_store(root, cache=cache) as store:
        store.put("k.bin", payload(200_000, int(seed)))
    """
)


def test_overwrite_from_another_process_is_seen(tier_url: str, tmp_path: Path) -> None:
    root = str(tmp_path / "origin")
    store = open_store(root, cache=tier_url)
    for seed in (1, 2, 3):
        subprocess.run([sys.executable, "-c", WRITER, root, tier_url, str(seed)], check=True)
        assert store.get("k.bin") == payload(200_000, seed)
        assert store.get("k.bin") == payload(200_000, seed)  # a hit of the new version
        assert store.get_range("k.bin", 5, 70_000) == payload(200_000, seed)[5:70_000]
    store.close()


def test_a_value_of_the_wrong_length_is_never_served(tier_url: str) -> None:
    """The tier checks each value's length (CacheTier.get_many's contract; CachedBackend
    relies on it and does not check again): a chunk of another length is a miss, never
    data."""
    origin = InstrumentedBackend(LocalBackend_or_memory())
    store = CachedBackend(origin, tier_url)
    data = payload(300_000)
    meta = store.put("k.bin", data)
    assert store.get("k.bin", version=meta.version) == data  # fills the chunk and the size
    chunk = f"{{{store._object_id('k.bin', meta)}}}:0"
    first = min(store.policy.chunk_bytes, len(data))
    store.tier.set_many([(chunk, data[:1000])])
    assert store.tier.get_many([chunk], [first]) == [None]
    reads = origin.reads
    fresh = CachedBackend(origin, tier_url)  # no size remembered in this process
    assert fresh.get("k.bin", version=meta.version) == data
    assert origin.reads == reads + 1
    store.tier.delete_many([chunk])


@pytest.mark.parametrize("damage", ["truncated", "longer"])
def test_a_damaged_entry_is_a_miss_of_its_chunk_only(tier_url: str, damage: str) -> None:
    """A truncated entry made every Redis MGET of its object fail as if the tier were
    down (its reply was not the one expected), until the entry expired. It is a miss of
    that chunk only: the other chunks are served, the refill overwrites it."""
    origin = InstrumentedBackend(LocalBackend_or_memory())
    store = CachedBackend(origin, tier_url)
    chunk = store.policy.chunk_bytes
    data = payload(4 * chunk + 1000)
    meta = store.put("k.bin", data)
    assert store.get("k.bin", version=meta.version) == data  # fills the tier
    names = [f"{{{store._object_id('k.bin', meta)}}}:{n}" for n in range(5)]
    sizes = [chunk] * 4 + [1000]
    bad = data[chunk : chunk + chunk // 2] if damage == "truncated" else data[:chunk] + b"x"
    store.tier.set_many([(names[1], bad)])
    values = store.tier.get_many(names, sizes)
    assert [None if v is None else bytes(v) for v in values] == [
        data[n * chunk : (n + 1) * chunk] if n != 1 else None for n in range(5)
    ]
    fresh = CachedBackend(origin, tier_url)
    read = origin.bytes_read
    assert fresh.get("k.bin", version=meta.version) == data
    assert origin.bytes_read - read == chunk  # the damaged chunk only, read and refilled
    (healed,) = store.tier.get_many(names[1:2], [chunk])
    assert healed is not None and bytes(healed) == data[chunk : 2 * chunk]
    assert fresh.get_range("k.bin", 10, 3 * chunk, version=meta.version) == data[10 : 3 * chunk]
    assert origin.bytes_read - read == chunk  # the tier serves again: no further origin read


READER = textwrap.dedent(
    """
    import sys
    from dcstore.store import open_store
    root, cache = sys.argv[1:]
    with open_store(root, cache=cache) as store:
        for meta in list(store.list_objects("")):
            store.get(meta.key)
    """
)


def dcstore_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcstore.cli", *args], capture_output=True, text=True
    )


def test_stats_are_shared_and_cli_shows_and_clears(tier_url: str, tmp_path: Path) -> None:
    root = str(tmp_path / "origin")
    origin = LocalBackend(root)
    for i in range(4):
        origin.put(f"s/{i}.bin", payload(100_000, i))
    for _ in range(2):  # two processes, one after the other: 4 misses then 4 hits
        subprocess.run([sys.executable, "-c", READER, root, tier_url], check=True)
    out = dcstore_cli("cache", "stats", tier_url, "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["hits"] == 4 and stats["misses"] == 4
    assert stats["bytes_from_cache"] == stats["bytes_from_origin"] == 400_000
    assert stats["hit_ratio"] == 0.5
    policy = "memcached-lru" if tier_url.startswith("memcached:") else "allkeys-lru"
    assert stats["server"]["maxmemory_policy"] == policy
    assert stats["server"]["nodes"] in (1, 3) and stats["server"]["used_memory"] > 0
    human = dcstore_cli("cache", "stats", tier_url)
    assert "hit ratio" in human.stdout and "50.0%" in human.stdout
    assert f"policy {policy}" in human.stdout and "warning" not in human.stdout
    cleared = dcstore_cli("cache", "clear", tier_url)
    assert cleared.returncode == 0, cleared.stderr
    tier = open_cache_tier(tier_url)
    assert all_values(tier) == {} and tier.read_stats()["hits"] == 0


def test_a_database_the_server_lacks_is_a_config_error_not_an_outage(tmp_path: Path) -> None:
    """redis://host/99 was taken for an outage: every read went to the origin, exit 0."""
    from dcstore.errors import ConfigError

    url = shared_redis_url().split("?")[0].rsplit("/", 1)[0] + "/99"
    store = open_store(str(tmp_path / "origin"), cache=url)
    store.put("x", b"1")
    with pytest.raises(ConfigError, match="the server has no database 99"):
        store.get("x")


def test_cli_reports_an_unreachable_tier() -> None:
    out = dcstore_cli("cache", "stats", "redis://127.0.0.1:1/0?connect_timeout=0.2")
    assert out.returncode == 5 and "127.0.0.1:1" in out.stderr


def test_ttl_is_set_on_chunks(base_url: str, tmp_path: Path) -> None:
    url = fresh_url(base_url, ttl=60)
    store = CachedBackend(LocalBackend(tmp_path), url)
    store.put("k", payload(1000))
    store.get("k")
    tier = store.tier
    ttls = [ttl for k, (_, ttl) in all_entries(tier).items() if b"stats" not in k]
    # memcached reports expiry in whole seconds of its own clock, which ticks once a second,
    # so the remaining time read against ours can be up to a second or two over.
    slack = 2.5 if base_url.startswith("memcached") else 0.0
    assert ttls and all(ttl is not None and 0 < ttl <= 60 + slack for ttl in ttls), ttls
    tier.clear()


def test_namespaces_are_isolated(base_url: str, tmp_path: Path) -> None:
    a, b = fresh_url(base_url), fresh_url(base_url)
    origin = InstrumentedBackend(LocalBackend(tmp_path))
    origin.put("k", payload(1000))
    CachedBackend(origin, a).get("k")
    CachedBackend(origin, b).get("k")
    assert origin.reads == 2  # b does not see a's chunks
    assert open_cache_tier(a).clear() >= 1
    CachedBackend(origin, b).get("k")
    assert origin.reads == 2  # clearing a left b alone
    open_cache_tier(b).clear()


def test_pickled_stack_reconnects_in_a_spawned_process(tier_url: str, tmp_path: Path) -> None:
    import multiprocessing

    store = open_store(str(tmp_path), cache=tier_url)
    store.put("k", payload(70_000))
    store.get("k")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("k") == payload(70_000)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_read_in_worker, (store, "k")) == payload(70_000)


def _read_in_worker(store: Backend, key: str) -> bytes:
    return store.get(key)


def test_password_from_file_is_not_pickled(private_redis, tmp_path: Path) -> None:
    server = private_redis(password="pw-" + uuid.uuid4().hex)
    secret = server.password
    pwfile = tmp_path / "redis.pw"
    pwfile.write_text(secret + "\n")
    url = with_query(server.url, password_file=pwfile, stats_interval=0)
    store = CachedBackend(LocalBackend(tmp_path / "o"), url)
    store.put("k", payload(5000))
    assert store.get("k") == payload(5000)
    assert store.get("k") == payload(5000)
    assert store.stats()["hits"] == 1 and store.stats()["errors"] == 0
    blob = pickle.dumps(store)
    assert secret.encode() not in blob
    assert secret not in str(store.tier) + repr(store.tier)
    clone = pickle.loads(blob)
    assert clone.get("k") == payload(5000) and clone.stats()["hits"] == 1
    # the URL form works too, and never shows the password
    url_pw = server.url.replace("redis://", f"redis://:{secret}@")
    tier = open_cache_tier(url_pw)
    assert secret not in str(tier) and tier.read_stats()["hits"] == 2
    # a wrong password is a tier fault: reads still succeed from the origin
    wrong = CachedBackend(LocalBackend(tmp_path / "o"), url_pw.replace(secret, "nope"))
    assert wrong.get("k") == payload(5000)
    assert wrong.stats()["errors"] == 1 and wrong.stats()["misses"] == 1
    assert secret not in os.environ.get("REDISCLI_AUTH", "")


def test_tls(private_redis, tmp_path: Path) -> None:
    server = private_redis(tls=True)
    assert server.url.startswith("rediss://")
    store = CachedBackend(LocalBackend(tmp_path), with_query(server.url, stats_interval=0))
    store.put("k", payload(100_000))
    for _ in range(3):
        assert store.get("k") == payload(100_000)
    assert store.stats()["hits"] == 2 and store.stats()["errors"] == 0
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("k") == payload(100_000) and clone.stats()["hits"] == 1
    # a plain-text client against the TLS port is a tier fault, not a failed read
    plain = server.url.split("?")[0].replace("rediss://", "redis://") + "?socket_timeout=0.5"
    wrong = CachedBackend(LocalBackend(tmp_path), plain)
    assert wrong.get("k") == payload(100_000) and wrong.stats()["errors"] == 1


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_a_counter_that_is_no_number_is_a_tier_fault(kind: str) -> None:
    """Review: a shared counter overwritten with text made ``read_stats`` (``dcstore cache
    stats``) raise a bare ValueError, a traceback from the CLI."""
    from dcstore.cache.tier import CacheUnavailableError

    base = shared_redis_url() if kind == "redis" else shared_memcached_url()
    tier = open_cache_tier(fresh_url(base))
    tier.add_stats({"hits": 1})
    if isinstance(tier, RedisTier):
        redis.Redis.from_url(base).hset(tier.key("stats"), "hits", "garbage")
    else:
        tier._memcached().set(tier._stat_key("hits"), b"garbage")  # type: ignore[attr-defined]
    with pytest.raises(CacheUnavailableError, match="stats failed"):
        tier.read_stats()
    tier.clear()


@pytest.mark.parametrize("read", ["get", "get_range", "open_read"])
def test_an_older_copy_written_into_the_tier_is_not_served(read: str, tmp_path: Path) -> None:
    """Outside review: a writer of the shared tier (not of the storage) copied an object's
    older authentic ciphertext over the current version's entries, and every reader
    decrypted the old plaintext without an error. Headers now come from the storage."""
    from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource

    keys = StaticKeySource(Keyring.generate("kek"))
    url = fresh_url(shared_redis_url(), chunk_bytes=MiB)
    tier = open_cache_tier(url)
    try:
        cached = CachedBackend(LocalBackend(tmp_path), url)
        store = EncryptedBackend(cached, keys, segment_size=4096)
        old, new = b"OLD-" * 5000, b"NEW-" * 5000  # same size: the same entries' shape
        store.put("weights", old)
        assert store.get("weights") == old
        old_entries = all_values(tier)
        store.put("weights", new)
        assert store.get("weights") == new
        client = raw_client(tier)  # type: ignore[arg-type]
        for key in set(all_values(tier)) - set(old_entries):
            client.set(key, next(iter(old_entries.values())))  # one chunk each
        fresh = EncryptedBackend(CachedBackend(LocalBackend(tmp_path), url), keys)
        if read == "get":
            assert fresh.get("weights") == new
        elif read == "get_range":
            assert fresh.get_range("weights", 100, 9000) == new[100:9000]
        else:
            with fresh.open_read("weights") as f:
                assert f.read() == new
    finally:
        tier.clear()


def test_datasets_read_shard_headers_from_the_tier(tmp_path: Path) -> None:
    """The check above costs a round trip per version and process (a whole 4 MiB chunk
    on MongoDB): a dataset's shards, written once under unique names, skip it once the
    manifest (which is replaced in place) has been read with it; a caller's store is
    left as it is."""
    from dcstore.crypto import EncryptedBackend
    from dcstore.crypto.keyring import Keyring
    from dcstore.crypto.sources import write_key_file
    from dcstore.loaders import ShardedDataset, ShardWriter

    key_file = tmp_path / "kek.json"
    write_key_file(str(key_file), Keyring.generate("kek"))
    url = fresh_url(shared_redis_url(), chunk_bytes=MiB)
    data = f"file://{tmp_path / 'ds'}"
    try:
        with ShardWriter(data, shard_size=40_000, keys=str(key_file)) as writer:
            for i in range(60):
                writer.write({"__key__": f"s/{i:03d}", "bin": bytes([i]) * 3000})
        ds = ShardedDataset(data, keys=str(key_file), cache=url)
        assert isinstance(ds.store, EncryptedBackend) and not ds.store.check_cached_headers
        assert not pickle.loads(pickle.dumps(ds.store)).check_cached_headers
        # review: the manifest's own reads (lazy parts; a spawned worker rebuilds its
        # index from them) went through the unchecked store too
        assert ds.manifest.shards.source.store.check_cached_headers
        worker = pickle.loads(pickle.dumps(ds))
        assert worker.manifest.shards.source.store.check_cached_headers
        assert [s["bin"][0] for s in ds] == list(range(60))  # fills the tier
        origin = InstrumentedBackend(LocalBackend(tmp_path / "ds"))
        for check in (True, False):
            store = EncryptedBackend(CachedBackend(origin, url), str(key_file))
            mine = ShardedDataset(store)
            assert mine.store is store and store.check_cached_headers
            store.check_cached_headers = check  # False: what the dataset's own stack does
            reads = origin.reads
            assert [s["bin"][0] for s in mine] == list(range(60))
            # each shard's header from the origin, or every shard from the tier
            assert (origin.reads > reads + 3) if check else (origin.reads == reads)
    finally:
        open_cache_tier(url).clear()
