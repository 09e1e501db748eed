"""Prefetcher: order kept, bytes in flight bounded, errors delivered in place, fork-safe."""

from __future__ import annotations

import random
import threading
import time

import pytest

from dcstore.loaders.prefetch import Prefetcher, ReadAhead


def test_order_and_byte_bound() -> None:
    lock = threading.Lock()
    active = {"bytes": 0, "peak": 0}
    sizes = [random.Random(i).randrange(1, 40) for i in range(200)]

    def fetch(i: int) -> int:
        with lock:
            active["bytes"] += sizes[i]
            active["peak"] = max(active["peak"], active["bytes"])
        time.sleep(random.random() / 1000)
        with lock:
            active["bytes"] -= sizes[i]
        return i * 2

    pf = Prefetcher(threads=4, max_bytes=64)
    got = [r.value for r in pf.map(fetch, range(200), lambda i: sizes[i])]
    assert got == [i * 2 for i in range(200)]
    assert pf.peak_bytes <= 64 and active["peak"] <= 64


def test_oversized_item_still_proceeds_and_errors_come_in_place() -> None:
    def fetch(i: int) -> int:
        if i == 3:
            raise OSError("boom")
        return i

    results = list(Prefetcher(threads=2, max_bytes=10).map(fetch, range(6), lambda i: 100))
    assert [r.value for r in results] == [0, 1, 2, None, 4, 5]
    assert isinstance(results[3].error, OSError)


def test_closing_early_cancels_the_rest() -> None:
    started = []

    def fetch(i: int) -> int:
        started.append(i)
        time.sleep(0.01)
        return i

    gen = Prefetcher(threads=1, max_bytes=3).map(fetch, range(100), lambda i: 1)
    assert next(gen).value == 0
    gen.close()
    assert len(started) <= 5


def test_closed_inside_one_of_its_own_fetches_without_deadlock() -> None:
    """The garbage collector may finalize an abandoned ``map`` generator in whichever thread
    allocates, e.g. a pool thread running one of that generator's fetches (seen in CI: the
    process then hung at exit, joining that thread)."""
    suspended = threading.Event()
    gen_box: list = []
    closed = threading.Event()

    def fetch(i: int) -> int:
        if i == 1:
            suspended.wait(5)
            gen_box[0].close()  # what the collector does with an unreachable generator
            closed.set()
        return i

    pf = Prefetcher(threads=1, max_bytes=2)
    gen = pf.map(fetch, range(10), lambda i: 1)
    gen_box.append(gen)
    assert next(gen).value == 0
    suspended.set()
    assert closed.wait(5), "closing the generator from its own fetch blocked"
    pf.close()


def _counted(n: int, fail_at: int | None = None):
    """A source of 0..n-1 that counts its items in ``pos`` (as read_plan counts progress)."""
    pos = {"read": 0}

    def gen():
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"item {i}")
            pos["read"] += 1
            yield i

    return gen(), pos


def _read_ahead(source, pos, handed, limit=5, max_bytes=1 << 30):
    return ReadAhead(
        source, limit=limit, max_bytes=max_bytes, size_of=lambda i: 10,
        mark=lambda: pos["read"], handed=handed.append,
    )  # fmt: skip


def test_read_ahead_reads_before_the_first_request_and_keeps_order() -> None:
    source, pos = _counted(20)
    handed: list[int] = []
    items = _read_ahead(source, pos, handed, limit=5)
    deadline = time.monotonic() + 10
    while pos["read"] < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pos["read"] == 5 and handed == []  # read ahead, nothing handed out yet
    got = [next(items) for _ in range(3)]
    assert got == [0, 1, 2] and handed == [1, 2, 3]  # progress as of what was handed out
    assert [*got, *items] == list(range(20)) and handed == list(range(1, 21))


def test_read_ahead_stops_at_its_byte_bound_and_raises_in_place() -> None:
    source, pos = _counted(20, fail_at=3)
    items = _read_ahead(source, pos, [], limit=100, max_bytes=25)  # 3 items of 10 bytes
    time.sleep(0.2)
    assert pos["read"] == 3
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)


def test_read_ahead_close_stops_the_source() -> None:
    closed = threading.Event()

    def gen():
        try:
            yield from range(1000)
        finally:
            closed.set()

    items = ReadAhead(
        gen(), limit=10, max_bytes=1 << 30, size_of=lambda i: 1, mark=lambda: 0,
        handed=lambda m: None,
    )  # fmt: skip
    assert next(items) == 0
    items.close()
    assert closed.is_set()
