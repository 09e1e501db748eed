"""Chaos over the distributed stack (issue: hardening), short: a seeded schedule of real
faults — toxics and cuts on the links through Toxiproxy, Redis/Memcached nodes killed,
a DataNode stopped, the NameNode restarted, a Cassandra node paused, a disk full —
while 2 ranks x 2 workers read encrypted datasets on 3-DataNode HDFS (behind a 3-node
Redis Cluster) and 2-node Cassandra (behind Memcached) and a parallel pack writes new
generations. See tests/chaos/ and ``python -m chaos.run`` for the long run.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra_server import cassandra_hosts  # noqa: F401 - fixture
from chaos.run import ChaosRun
from chaos.schedule import NODE_FAULTS, TOXICS, plan
from chaos.stack import ChaosStack
from chaos.toxiproxy import BINARY
from hdfs_server import hdfs_url  # noqa: F401 - fixture

from dcstore import open_store
from dcstore.errors import BackendUnavailableError

LINKS = ["namenode", "cassandra0", "redis0", "memcached0"]


def test_plan_is_a_function_of_its_seed() -> None:
    one = plan(7, 40, LINKS, NODE_FAULTS)
    assert one == plan(7, 40, LINKS, NODE_FAULTS)
    assert one != plan(8, 40, LINKS, NODE_FAULTS)
    kinds = {f.kind for f in one}
    assert set(NODE_FAULTS) <= kinds and "link_down" in kinds and kinds & set(TOXICS)
    for fault in one:
        assert 0.5 <= fault.duration <= 4.0 and 0.2 <= fault.gap <= 1.5
        if fault.kind in TOXICS or fault.kind == "link_down":
            assert fault.target in LINKS
        else:
            assert fault.target.isdigit()
    # without node kinds (a stack without them), only link faults
    assert {f.kind for f in plan(7, 40, LINKS, [])} <= set(TOXICS) | {"link_down"}


@pytest.fixture(scope="module")
def stack(
    hdfs_url: str,  # noqa: F811
    cassandra_hosts: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChaosStack]:
    """The run's own servers (only where the shared ones are configured, so the HDFS
    launcher and Cassandra jars are built)."""
    if not BINARY.exists() or not shutil.which("redis-server"):
        message = "toxiproxy-server or redis-server missing: run scripts/tools.sh, servers/up.sh"
        if os.environ.get("DCSTORE_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    chaos = ChaosStack(tmp_path_factory.mktemp("chaos"))
    try:
        chaos.start()
        yield chaos
    finally:
        chaos.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_training_read_survives_a_seeded_fault_schedule(stack: ChaosStack, tmp_path: Path) -> None:
    seed = int(os.environ.get("DCSTORE_CHAOS_SEED", "11"))
    run = ChaosRun(stack, tmp_path, seed=seed, faults=16)
    report = run.run(min_rounds=2, epochs=2)
    print(report.summary())
    assert report.problems() == [], "\n".join(run.injector.log)
    assert sum(report.injected.values()) == 16
    assert report.epochs >= 8 and report.samples_checked == report.epochs * 400
    assert report.packs["committed"] >= 1
    assert report.disk_full.startswith(("StorageFullError", "skipped"))


def test_a_fault_beyond_the_retry_budget_is_one_line(stack: ChaosStack) -> None:
    """A link down for longer than the retries last: one line naming server and object."""
    for link, url in (("namenode", stack.hdfs_url("budget")),
                      ("cassandra0", stack.cassandra_url("budget"))):  # fmt: skip
        store = open_store(url, retries=2)
        store.put("k", b"v")
        links = [stack.links[link]] + ([stack.links["cassandra1"]] if link == "cassandra0" else [])
        for each in links:
            each.set_enabled(False)
        try:
            with pytest.raises(BackendUnavailableError) as info:
                store.get("k")
        finally:
            for each in links:
                each.set_enabled(True)
        message = str(info.value)
        assert "\n" not in message and re.search(r"\[k\]|'k'", message), message
        assert stack.links[link].listen.split(":")[0] in message, message
        # the same store resumes once the link is back (the driver reconnects with backoff)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert store.get("k") == b"v"
                break
            except BackendUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
