"""Benchmark workloads: what one worker does per operation.

A workload is picklable (process workers receive it) and hands each worker
thread an *operation*: a callable doing one timed operation and returning
``(bytes moved, check)``, where ``check`` (or ``None``) verifies the bytes read
and returns how many it verified. The runner times the operation only; the
check runs outside the latency window.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dcstore.backends.base import Backend
from dcstore.bench.payload import ObjectSet

Check = Callable[[], int]
Operation = Callable[[], tuple[int, Check | None]]

BACKEND_OPS = ("put", "get", "get_range")


class Workload(Protocol):
    """Builds one operation per worker; ``finish`` releases per-process resources."""

    def operation(self, worker: int, workers: int) -> Operation: ...

    def finish(self) -> None: ...


def worker_rng(seed: int, worker: int) -> random.Random:
    """The fixed-seed random stream of one worker."""
    return random.Random(seed * 1_000_003 + worker)


@dataclass
class BackendWorkload:
    """put / get / get_range of the objects in ``objects`` through ``store``.

    ``put`` walks the objects round-robin (worker ``w`` of ``W`` starts at ``w``
    and steps by ``W``), so concurrent workers rarely write the same key;
    ``get`` picks objects uniformly at random; ``get_range`` picks an object
    and a uniformly random ``range_size`` window inside it.
    """

    store: Backend
    objects: ObjectSet
    op: str
    range_size: int
    seed: int
    verify: bool = True

    def __post_init__(self) -> None:
        if self.op not in BACKEND_OPS:
            raise ValueError(f"unknown operation {self.op!r}; accepted: {', '.join(BACKEND_OPS)}")

    def operation(self, worker: int, workers: int) -> Operation:
        objects, store, verify = self.objects.build(), self.store, self.verify
        rng = worker_rng(self.seed, worker)
        if self.op == "put":
            counter = iter(range(worker, 1 << 62, workers))

            def put() -> tuple[int, Check | None]:
                index = next(counter) % objects.count
                store.put(objects.key(index), objects.content(index))
                return objects.size, None

            return put

        if self.op == "get":

            def get() -> tuple[int, Check | None]:
                index = rng.randrange(objects.count)
                data = store.get(objects.key(index))
                return len(data), (lambda: objects.verify(index, data)) if verify else None

            return get

        span = min(self.range_size, objects.size)

        def get_range() -> tuple[int, Check | None]:
            index = rng.randrange(objects.count)
            start = rng.randrange(objects.size - span + 1)
            data = store.get_range(objects.key(index), start, start + span)
            if not verify:
                return len(data), None
            return len(data), lambda: objects.verify(index, data, start, start + span)

        return get_range

    def finish(self) -> None:
        self.store.close()
