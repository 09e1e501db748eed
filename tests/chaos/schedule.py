"""A seeded fault schedule and the thread that injects it.

:func:`plan` is a pure function of its seed: the same seed gives the same faults, in
the same order, with the same parameters and durations. One fault is active at a
time (a toxic on a link, a link cut, or a node killed, paused or stopped), for
``duration`` seconds, then undone; ``gap`` seconds pass before the next. Node faults
never exceed the stack's redundancy: one DataNode of three, one Cassandra node of two
(replication 2, reads at ONE), one cache node (the caches may lose everything).
Node fault kinds come in seeded shuffled cycles, so a short schedule of ``3 * len(nodes)``
faults very likely holds every kind; toxics and cuts pick any link.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.stack import ChaosStack

TOXICS: dict[str, Callable[[random.Random], dict[str, float]]] = {
    "latency": lambda r: {"latency": r.randint(50, 400), "jitter": r.randint(0, 100)},
    "bandwidth": lambda r: {"rate": r.randint(64, 1024)},  # KB/s
    "slicer": lambda r: {
        "average_size": r.randint(16, 512),
        "size_variation": 8,
        "delay": r.randint(0, 2000),
    },
    "reset_peer": lambda r: {"timeout": r.randint(0, 300)},  # ms, then RST
    "timeout": lambda r: {"timeout": r.randint(200, 1500)},  # data stops, closed after
}
NODE_FAULTS = ("kill_memcached", "kill_redis", "stop_datanode", "restart_namenode",
               "freeze_cassandra")  # fmt: skip


@dataclass(frozen=True)
class Fault:
    kind: str  # a toxic type, "link_down", or one of NODE_FAULTS
    target: str  # a link name, or a node index as text
    params: tuple[tuple[str, float], ...]
    duration: float
    gap: float

    def __str__(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.kind}({self.target}{', ' + params if params else ''}) {self.duration:.1f}s"


def plan(seed: int, count: int, links: Sequence[str], nodes: Sequence[str]) -> list[Fault]:
    """``count`` faults over ``links`` (names) and the ``nodes`` fault kinds available."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    cycle: list[str] = []  # node kinds come in shuffled rounds: each within len(nodes) draws
    for _ in range(count):
        duration = round(rng.uniform(0.5, 4.0), 2)
        gap = round(rng.uniform(0.2, 1.5), 2)
        roll = rng.random()
        if nodes and roll < 0.35:
            if not cycle:
                cycle = rng.sample(list(nodes), len(nodes))
            kind = cycle.pop()
            span = {"kill_redis": 3, "stop_datanode": 3, "freeze_cassandra": 2}.get(kind, 2)
            target = "0" if kind == "restart_namenode" else str(rng.randrange(span))
            faults.append(Fault(kind, target, (), duration, gap))
        elif roll < 0.45:
            faults.append(Fault("link_down", rng.choice(list(links)), (), duration, gap))
        else:
            kind = rng.choice(sorted(TOXICS))
            params = tuple(sorted(TOXICS[kind](rng).items()))
            faults.append(Fault(kind, rng.choice(list(links)), params, duration, gap))
    return faults


def apply(stack: ChaosStack, fault: Fault) -> Callable[[], Any]:
    """Inject ``fault``; return its undo."""
    node = int(fault.target) if fault.target.isdigit() else -1
    if fault.kind in TOXICS:
        link = stack.links[fault.target]
        name = link.add_toxic(fault.kind, **dict(fault.params))
        return lambda: link.remove_toxic(name)
    if fault.kind == "link_down":
        link = stack.links[fault.target]
        link.set_enabled(False)
        return lambda: link.set_enabled(True)
    if fault.kind == "kill_memcached":
        stack.kill_memcached(node)
        return stack.restart_memcached
    if fault.kind == "kill_redis":
        stack.kill_redis(node)
        return lambda: stack.restart_redis(node)
    if fault.kind == "stop_datanode":
        stack.hdfs_control(f"stop-datanode {node}")
        return lambda: stack.hdfs_control("restart-datanodes")
    if fault.kind == "restart_namenode":
        stack.hdfs_control("stop-namenode")
        return lambda: stack.hdfs_control("restart-namenode")
    if fault.kind == "freeze_cassandra":
        stack.freeze_cassandra(node)
        return lambda: stack.thaw_cassandra(node)
    raise ValueError(f"unknown fault kind {fault.kind!r}")


@dataclass
class Injector:
    """Injects ``faults`` in order on a thread until they run out or :meth:`stop`."""

    stack: ChaosStack
    faults: list[Fault]
    injected: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-injector", daemon=True)
        self._next = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="chaos-injector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self.faults)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and not self.exhausted:
            fault = self.faults[self._next]
            self._next += 1
            try:
                undo = apply(self.stack, fault)
            except Exception as exc:  # the harness's own failure, reported, not hidden
                self.failures.append(f"inject {fault}: {exc!r}")
                continue
            self.injected[fault.kind] += 1
            self.log.append(f"{time.monotonic() - started:7.1f}s {fault}")
            self._stop.wait(fault.duration)
            try:
                undo()
            except Exception as exc:
                self.failures.append(f"undo {fault}: {exc!r}")
            self._stop.wait(fault.gap)
