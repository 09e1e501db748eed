"""The chaos run's own servers, every client link through Toxiproxy.

* a 3-DataNode MiniDFS (replication 3); its NameNode RPC link is proxied, the DataNodes
  are stopped and restarted as processes (clients reach them at the addresses the
  NameNode hands out);
* a 2-node Cassandra (127.0.0.6 and 127.0.0.7, replication 2); each node tells drivers
  to reach it at a proxy (``broadcast_rpc_address`` 127.0.0.16 / 127.0.0.17), so every
  driver connection, to either node, crosses Toxiproxy;
* a 3-node Redis Cluster whose nodes announce their proxy ports
  (``cluster-announce-port``), so slot redirections lead back through the proxy;
* two memcached servers, each behind a proxy.

Nothing here touches the shared servers of the test suite. :meth:`ChaosStack.stop`
stops exactly what :meth:`ChaosStack.start` started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cassandra_server import PrivateNode, wait_ring, wait_started
from hdfs_server import PrivateMiniDfs
from memcached_server import PrivateMemcached
from redis_server import PrivateRedis

from chaos.toxiproxy import Link, Toxiproxy

CASSANDRA_NODES = ("127.0.0.6", "127.0.0.7")
CASSANDRA_PROXIES = ("127.0.0.16", "127.0.0.17")
CASSANDRA_PORT = 9042


class ChaosStack:
    """Every server of one chaos run, started once, plus the node-level faults."""

    def __init__(self, state_dir: Path, *, hdfs: bool = True, cassandra: bool = True) -> None:
        self.state_dir = state_dir
        self.proxy = Toxiproxy(state_dir / "toxiproxy.log")
        self.links: dict[str, Link] = {}
        self.memcached = PrivateMemcached(count=2, memory_mb=16)
        self.redis = PrivateRedis(cluster=True)
        self.hdfs = PrivateMiniDfs(state_dir / "hdfs", datanodes=3, replication=3) if hdfs else None
        seeds = ",".join(CASSANDRA_NODES)
        self.cassandra = (
            [
                PrivateNode(
                    f"chaos-{i}",
                    address,
                    seeds,
                    "dcstore-chaos",
                    CASSANDRA_BROADCAST_RPC=CASSANDRA_PROXIES[i],
                )
                for i, address in enumerate(CASSANDRA_NODES)
            ]
            if cassandra
            else []
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.proxy.start()
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(self._start_caches)]
            if self.hdfs is not None:
                jobs.append(pool.submit(self.hdfs.start))
            if self.cassandra:
                jobs.append(pool.submit(self._start_cassandra))
            for job in jobs:
                job.result()
        if self.hdfs is not None:
            self.links["namenode"] = self.proxy.link("namenode", f"127.0.0.1:{self.hdfs.port}")
        for i, (node, listen) in enumerate(zip(CASSANDRA_NODES, CASSANDRA_PROXIES, strict=True)):
            if self.cassandra:
                self.links[f"cassandra{i}"] = self.proxy.link(
                    f"cassandra{i}", f"{node}:{CASSANDRA_PORT}", listen, CASSANDRA_PORT
                )

    def _start_caches(self) -> None:
        self.memcached.start()
        for i, port in enumerate(self.memcached.ports):
            self.links[f"memcached{i}"] = self.proxy.link(f"memcached{i}", f"127.0.0.1:{port}")
        self.redis.start()
        for i in range(3):
            self.links[f"redis{i}"] = self.proxy.link(
                f"redis{i}", f"127.0.0.1:{self.redis.port + i}"
            )
        self._announce_redis()

    def _announce_redis(self, nodes: range = range(3)) -> None:
        """Make each Redis node announce its proxy port (lost when a node restarts)."""
        for i in nodes:
            port = self.redis.port + i
            self.redis.cli("config", "set", "cluster-announce-bus-port", str(port + 10000), node=i)
            self.redis.cli("config", "set", "cluster-announce-port",
                           str(self.links[f"redis{i}"].port), node=i)  # fmt: skip
        deadline = time.monotonic() + 30
        wanted = {str(self.links[f"redis{i}"].port) for i in range(3)}
        while time.monotonic() < deadline:  # every node's view carries the proxy ports
            views = [self.redis.cli("cluster", "nodes", node=i) for i in range(3)]
            if all(all(f":{p}@" in view for p in wanted) for view in views):
                return
            time.sleep(0.2)
        raise RuntimeError("Redis Cluster nodes did not learn the announced proxy ports")

    def _start_cassandra(self) -> None:
        wait_started([node.start(fresh=True) for node in self.cassandra])
        wait_ring(list(CASSANDRA_NODES))

    def stop(self) -> None:
        """Stop everything started (each step even when an earlier one failed)."""
        steps = [self.proxy.stop, lambda: self.redis.signal(signal.SIGCONT), self.redis.stop,
                 self.memcached.stop]  # fmt: skip
        for node in self.cassandra:
            steps.append(lambda n=node: self._signal_cassandra(n, signal.SIGCONT))
            steps.append(lambda n=node: n.stop(kill=True, wipe=True))
        if self.hdfs is not None:
            steps.append(self.hdfs.stop)
        for step in steps:
            with contextlib.suppress(Exception):
                step()

    # -- what the readers connect to ----------------------------------------------------

    @property
    def memcached_url(self) -> str:
        hosts = ",".join(self.links[f"memcached{i}"].listen for i in range(2))
        return f"memcached://{hosts}?dead_timeout=1&retry_interval=0.5&ttl=5"

    @property
    def redis_url(self) -> str:
        hosts = ",".join(self.links[f"redis{i}"].listen for i in range(3))
        return f"redis+cluster://{hosts}?retry_interval=0.5&ttl=5"

    def hdfs_url(self, root: str) -> str:
        assert self.hdfs is not None
        return f"hdfs://{self.links['namenode'].listen}/{root}"

    def cassandra_url(self, root: str) -> str:
        hosts = ",".join(CASSANDRA_PROXIES)
        return f"cassandra://{hosts}:{CASSANDRA_PORT}/chaos/{root}?read_consistency=ONE"

    # -- node faults (each has its undo) --------------------------------------------------

    def kill_memcached(self, node: int) -> None:
        self.memcached.kill9(node)

    def restart_memcached(self) -> None:
        self.memcached.start()  # starts only the servers that are down (empty)

    def kill_redis(self, node: int) -> None:
        self.redis.kill9(node)

    def restart_redis(self, node: int) -> None:
        self.redis.start()  # restarts the missing node; it rejoins from its nodes.conf
        self._announce_redis(range(node, node + 1))

    def hdfs_control(self, command: str) -> None:
        assert self.hdfs is not None
        self.hdfs.control(command)

    def _signal_cassandra(self, node: PrivateNode, sig: int) -> None:
        os.kill(int((node.dir / "cassandra.pid").read_text()), sig)

    def freeze_cassandra(self, node: int) -> None:
        self._signal_cassandra(self.cassandra[node], signal.SIGSTOP)

    def thaw_cassandra(self, node: int) -> None:
        self._signal_cassandra(self.cassandra[node], signal.SIGCONT)
