"""Behind the back of the stack users run (``open_store(url, cache=<Redis>, keys=...)``)
on every real server: what lands in the origin and in Redis is ciphertext only, object
names never appear in Redis, a second read is served by Redis, and chunk names carry the
object's version (an overwrite is read through new chunks, never the old ones). The
whole conformance suite runs on the same stacks in test_{hdfs,cassandra,mongodb}.py and
test_conformance_builtin.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from cassandra_server import cassandra_hosts, cassandra_url  # noqa: F401 - fixtures
from ferretdb_server import mongodb_url  # noqa: F401 - fixture
from full_stack import full_stack, stack_keys  # noqa: F401 - fixture
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures
from redis_server import shared_redis_url

from dcstore.backends.registry import open_backend
from dcstore.cache import CachedBackend
from dcstore.crypto.format import MAGIC
from dcstore.testing.conformance import payload

MiB = 1 << 20


@pytest.fixture(params=["local", "hdfs", "cassandra", "mongodb"])
def origin_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return f"file://{tmp_path / 'origin'}"
    if request.param == "hdfs":
        return str(request.getfixturevalue("hdfs_base"))
    if request.param == "cassandra":
        return f"{request.getfixturevalue('cassandra_url')}/stack-{uuid.uuid4().hex[:8]}"
    return f"{request.getfixturevalue('mongodb_url')}?bucket=s{uuid.uuid4().hex[:10]}"


def redis_entries(namespace: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(shared_redis_url())
    names = [k for k in client.scan_iter(match=f"{namespace}:*") if b"stats" not in k]
    return dict(zip(names, client.mget(names), strict=True)) if names else {}


def test_origin_and_cache_hold_ciphertext_and_versions_name_chunks(
    origin_url: str,
    stack_keys: str,  # noqa: F811
) -> None:
    store, namespace = full_stack(origin_url, stack_keys)
    key = "secret-dir/plain-name.bin"
    first = payload(3 * MiB + 5, 1)
    meta = store.put(key, first)
    assert store.get(key) == first and store.get(key) == first  # miss, then a hit

    cached = store.inner  # EncryptedBackend over CachedBackend over RetryingBackend
    assert isinstance(cached, CachedBackend) and cached.stats()["hits"] >= 1
    raw = open_backend(origin_url).get(key)
    assert raw[:4] == MAGIC and first[:64] not in raw and first[-64:] not in raw

    entries = redis_entries(namespace)
    chunks = {k for k in entries if b":lease:" not in k}
    assert len(chunks) >= 4, chunks  # 3 MiB in 1 MiB chunks, plus the size record
    assert all(b"plain-name" not in k and b"secret-dir" not in k for k in entries)
    assert all(first[i : i + 64] not in v for v in entries.values() for i in (0, MiB, 2 * MiB))

    second = payload(3 * MiB + 5, 2)
    assert store.put(key, second).version != meta.version
    assert store.get(key) == second
    after = {k for k in redis_entries(namespace) if b":lease:" not in k}
    new = after - chunks
    assert len(new) >= 4, "an overwrite is cached under new chunk names (they carry the version)"
    store.close()
