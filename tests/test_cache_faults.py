"""Faults never fail a read; single-flight across processes. Private Redis instances only."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from redis_server import (  # noqa: F401 - private_redis_fixture is a fixture
    PrivateRedis,
    private_redis_fixture,
)

from dcstore.backends.local import LocalBackend
from dcstore.cache import CachedBackend, open_cache_tier
from dcstore.testing.conformance import payload
from dcstore.testing.instrumented import InstrumentedBackend, logged_bytes

pytestmark = pytest.mark.slow
KiB = 1 << 10


def origin_with(tmp_path: Path, n: int, size: int) -> InstrumentedBackend:
    origin = InstrumentedBackend(LocalBackend(tmp_path / "origin"))
    for i in range(n):
        origin.put(f"o/{i:03d}.bin", payload(size, i))
    return origin


def episode_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("reading from the origin" in r.getMessage() for r in caplog.records)


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_killed_and_restarted_redis(
    private_redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server: PrivateRedis = private_redis()
    origin = origin_with(tmp_path, 10, 200 * KiB)
    url = f"{server.url}?chunk_bytes=65536&retry_interval=0.2&connect_timeout=0.5"
    store = CachedBackend(origin, url)
    caplog.set_level(logging.WARNING, logger="dcstore.cache")
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:  # reads continuously through kill and restart
        try:
            while not stop.is_set():
                for i in range(10):
                    assert store.get(f"o/{i:03d}.bin") == payload(200 * KiB, i)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    wait_for(lambda: store.stats()["hits"] > 20)
    server.kill9()
    misses = store.stats()["misses"]
    wait_for(lambda: store.stats()["misses"] > misses + 20)  # served by the origin
    server.start()  # same port, empty: chunks are refilled
    hits = store.stats()["hits"]
    wait_for(lambda: store.stats()["hits"] > hits + 20)  # recovered by itself
    stop.set()
    thread.join()
    assert not errors, errors
    assert episode_warnings(caplog) == 1
    assert store.stats()["errors"] >= 1
    assert any("is back" in r.getMessage() for r in caplog.records)
    store.flush_stats()
    assert open_cache_tier(server.url).read_stats()["errors"] >= 1  # reported once back


def test_paused_redis_times_out_to_the_origin(private_redis, tmp_path: Path) -> None:
    server: PrivateRedis = private_redis()
    origin = origin_with(tmp_path, 3, 100 * KiB)
    url = f"{server.url}?socket_timeout=0.3&connect_timeout=0.3&retry_interval=0.5"
    store = CachedBackend(origin, url)
    for i in range(3):
        store.get(f"o/{i:03d}.bin")
    server.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        for _ in range(5):
            for i in range(3):
                assert store.get(f"o/{i:03d}.bin") == payload(100 * KiB, i)
        # one timeout (plus one quick retry) opens the circuit; the rest skip the tier
        assert time.monotonic() - started < 2.0
        assert store.stats()["errors"] >= 1
    finally:
        server.signal(signal.SIGCONT)
    time.sleep(0.6)
    hits = store.stats()["hits"]
    for i in range(3):
        assert store.get(f"o/{i:03d}.bin") == payload(100 * KiB, i)
    assert store.stats()["hits"] == hits + 3


def test_out_of_memory_redis(private_redis, tmp_path: Path) -> None:
    server: PrivateRedis = private_redis("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    origin = origin_with(tmp_path, 8, 1024 * KiB)
    store = CachedBackend(origin, f"{server.url}?chunk_bytes=262144&retry_interval=0.1")
    for _ in range(3):
        for i in range(8):
            assert store.get(f"o/{i:03d}.bin") == payload(1024 * KiB, i)
        time.sleep(0.15)
    stats = store.stats()
    assert stats["errors"] >= 1 and stats["hits"] >= 1  # what fitted is served
    assert "OOM" in server.cli("info", "errorstats") or stats["errors"] >= 1


def test_cluster_node_killed_and_restarted(private_redis, tmp_path: Path) -> None:
    cluster: PrivateRedis = private_redis(cluster=True)
    origin = origin_with(tmp_path, 12, 64 * KiB)
    url = f"{cluster.url}?chunk_bytes=16384&retry_interval=0.2&connect_timeout=0.3&socket_timeout=1"
    store = CachedBackend(origin, url)
    for _ in range(2):
        for i in range(12):
            store.get(f"o/{i:03d}.bin")
    assert store.stats()["hits"] == 12
    # Kill a node that holds chunks (each object's chunks share one slot, so with 12
    # objects a fixed node holds none of them in about 1 run in 130).
    node = max(range(3), key=lambda n: int(cluster.cli("dbsize", node=n)))
    cluster.kill9(node=node)
    for _ in range(3):
        for i in range(12):
            assert store.get(f"o/{i:03d}.bin") == payload(64 * KiB, i)
    assert store.stats()["errors"] >= 1
    cluster.start()  # restarts the missing node from its nodes.conf; waits for cluster_state:ok
    time.sleep(0.3)
    hits = store.stats()["hits"]

    def recovered() -> bool:
        for i in range(12):
            assert store.get(f"o/{i:03d}.bin") == payload(64 * KiB, i)
        return store.stats()["hits"] >= hits + 12

    wait_for(recovered, timeout=30)


READER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from dcstore.testing.instrumented import InstrumentedBackend
    from dcstore.backends.local import LocalBackend
    from dcstore.cache import CachedBackend
    root, cache, log, start_at, delay = sys.argv[2:]
    origin = InstrumentedBackend(LocalBackend(root), latency=float(delay), log=log)
    store = CachedBackend(origin, cache)
    while time.time() < float(start_at):
        time.sleep(0.001)
    for meta in list(origin.list_objects("")):
        store.get(meta.key)
    store.close()
    """
)


def run_readers(root: Path, cache: str, log: Path, n: int, delay: float) -> None:
    start_at = time.time() + 3.0  # after every interpreter has started
    tests = str(Path(__file__).resolve().parent)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER,
                tests,
                str(root),
                cache,
                str(log),
                str(start_at),
                str(delay),
            ]
        )
        for _ in range(n)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * n


@pytest.mark.parametrize("single_flight", [True, False])
def test_single_flight_across_processes(private_redis, tmp_path: Path, single_flight: bool) -> None:
    server: PrivateRedis = private_redis()
    root = tmp_path / "origin"
    origin = LocalBackend(root)
    for i in range(6):
        origin.put(f"s/{i}.bin", payload(512 * KiB, i))
    dataset = 6 * 512 * KiB
    log = tmp_path / "origin.log"
    cache = f"{server.url}?chunk_bytes=131072&single_flight={str(single_flight).lower()}"
    run_readers(root, cache, log, n=3, delay=0.3)
    ratio = logged_bytes(str(log)) / dataset
    stats = open_cache_tier(cache).read_stats()
    if single_flight:
        assert ratio <= 1.05, ratio  # the guarantee, whatever the timing
        assert stats["single_flight_waits"] >= 1
    else:
        assert ratio >= 1.5, ratio  # simultaneous misses each read the origin


HOLDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from dcstore.testing.instrumented import InstrumentedBackend
    from dcstore.backends.local import LocalBackend
    from dcstore.cache import CachedBackend
    root, cache = sys.argv[2:]
    store = CachedBackend(InstrumentedBackend(LocalBackend(root), latency=60), cache)
    store.get("k.bin")  # takes the lease, then hangs in the slow origin until killed
    """
)


def test_killed_fetcher_lease_is_taken_over(private_redis, tmp_path: Path) -> None:
    server: PrivateRedis = private_redis()
    root = tmp_path / "origin"
    LocalBackend(root).put("k.bin", payload(300 * KiB))
    cache = f"{server.url}?namespace=lease{uuid.uuid4().hex[:6]}&lease_ttl=2&stats_interval=0"
    tests = str(Path(__file__).resolve().parent)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, tests, str(root), cache])
    try:
        wait_for(lambda: "lease" in server.cli("--scan", "--pattern", "*lease*"))
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        origin = InstrumentedBackend(LocalBackend(root))
        store = CachedBackend(origin, cache)
        started = time.monotonic()
        assert store.get("k.bin") == payload(300 * KiB)
        waited = time.monotonic() - started
        assert 0.5 < waited < 5, waited  # waited for the dead fetcher's lease to expire
        assert origin.reads == 1  # then took over and filled the cache
        assert store.get("k.bin") == payload(300 * KiB) and origin.reads == 1
    finally:
        if holder.poll() is None:
            holder.kill()
