"""The fence around the one private redis-py name the Redis tier reads
(``Connection._sock``, see dcstore/cache/redis_io.py): the installed redis-py is inside the
range pyproject.toml accepts, the fast in-place MGET is the path taken on it, and when the
name is not where it is expected the tier falls back to redis-py's MGET, still correct,
with the connection still in sync."""

from __future__ import annotations

import uuid
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from redis_server import shared_cluster_url, shared_redis_url

from dcstore.cache import open_cache_tier, redis_io
from dcstore.testing.conformance import payload

REPO = Path(__file__).resolve().parents[1]


def test_installed_redis_py_is_inside_the_fence() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    spec = next(Requirement(r) for r in extras["redis"] if r.startswith("redis"))
    assert spec.specifier.contains(version("redis")), (version("redis"), str(spec))
    assert not spec.specifier.contains("9.0"), "a new major must be tested before it is accepted"


@pytest.fixture(params=["standalone", "cluster"])
def tier(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    url = shared_redis_url() if request.param == "standalone" else shared_cluster_url()
    sep = "&" if "?" in url else "?"
    return open_cache_tier(f"{url}{sep}namespace=fence-{uuid.uuid4().hex[:8]}")


def _items(n: int) -> list[tuple[str, bytes]]:
    """Chunks of one object share a hash tag (one cluster slot), as CachedBackend writes them."""
    return [(f"{{obj}}:{i}", payload(1000 + 4096 * i, i)) for i in range(n)]


def test_the_in_place_path_is_taken(tier, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    items = _items(3)
    tier.set_many(items)
    calls = []
    read_mget = redis_io.read_mget
    monkeypatch.setattr(redis_io, "read_mget", lambda *a: calls.append(1) or read_mget(*a))
    got = tier.get_many([k for k, _ in items], [len(v) for _, v in items])
    assert [bytes(g) for g in got] == [v for _, v in items]
    assert calls, "redis_io.connected_socket found no socket on this redis-py"


def test_without_the_private_name_reads_fall_back_and_stay_correct(  # type: ignore[no-untyped-def]
    tier, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _items(4)
    tier.set_many(items)
    monkeypatch.setattr(redis_io, "connected_socket", lambda conn: None)
    for _ in range(3):  # the connection stays in sync across reads
        got = tier.get_many([k for k, _ in items], [len(v) for _, v in items])
        assert [None if g is None else bytes(g) for g in got] == [v for _, v in items]
