"""The load runner's logic with synthetic operations (timing, loops, errors, processes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from dcstore.bench.results import case_from_measurement
from dcstore.bench.runner import LoadSpec, run
from dcstore.errors import BackendUnavailableError, ConfigError, IntegrityError, StorageFullError


@dataclass
class SleepWorkload:
    """Each op sleeps ``seconds`` and moves ``nbytes``; op ``fail_at`` (per worker) raises."""

    seconds: float = 0.0
    first_seconds: float | None = None  # each worker's first op (e.g. a cold start)
    nbytes: int = 100
    fail_every: int = 0
    fail_with: str = "unavailable"
    fail_after: int = -1
    bad_check_every: int = 0

    def operation(self, worker: int, workers: int):
        count = 0

        def op():
            nonlocal count
            count += 1
            pause = self.first_seconds if count == 1 and self.first_seconds else self.seconds
            if pause:
                time.sleep(pause)
            if (self.fail_every and count % self.fail_every == 0) or count == self.fail_after:
                if self.fail_with == "full":
                    raise StorageFullError("no space left on device")
                raise BackendUnavailableError("server went away")
            if self.bad_check_every and count % self.bad_check_every == 0:

                def bad() -> int:
                    raise IntegrityError("bytes differ")

                return self.nbytes, bad
            return self.nbytes, lambda: self.nbytes

        return op

    def finish(self) -> None:
        pass


def test_load_spec_validation() -> None:
    with pytest.raises(ConfigError):
        LoadSpec(threads=0)
    with pytest.raises(ConfigError):
        LoadSpec(rate=0)
    with pytest.raises(ConfigError):
        LoadSpec(duration=None, ops=None)
    assert LoadSpec(threads=2, processes=3).workers == 6
    assert LoadSpec(rate=5).loop == "open"


def test_closed_loop_runs_exactly_the_requested_ops() -> None:
    m = run(SleepWorkload(nbytes=7), LoadSpec(threads=3, ops=500, warmup=0))
    assert m.ops == 500
    assert m.bytes == 3500
    assert m.bytes_verified == 3500
    assert m.histogram.count == 500
    assert m.errors == 0 and m.fatal is None


def test_warmup_is_run_but_not_recorded() -> None:
    m = run(SleepWorkload(seconds=0.002), LoadSpec(threads=2, duration=0.5, warmup=0.3))
    assert m.warmup_ops > 50
    assert m.ops > 100
    assert m.histogram.count == m.ops
    assert 0.45 < m.elapsed_s < 0.7
    assert sum(m.timeline_ops) == m.ops


def test_an_operation_slower_than_the_window_is_measured_not_zero() -> None:
    """A put stalled longer than warm-up plus duration (a loaded CI disk) is one slow op."""
    m = run(SleepWorkload(seconds=0.4), LoadSpec(threads=2, duration=0.1, warmup=0.05))
    assert m.ops >= 2  # at least one per worker
    assert m.histogram.summary_us()["p50"] >= 390_000
    assert m.elapsed_s >= 0.3


def test_a_warm_up_operation_overrunning_the_warm_up_is_not_measured_time() -> None:
    """A 1 s first (warm-up) op, then 10 ms ops, 0.5 s measured: ~100 ops/s, not the
    0.55 ops/s of one op over a window that began while the warm-up op still ran."""
    m = run(SleepWorkload(seconds=0.01, first_seconds=1.0), LoadSpec(duration=0.5, warmup=0.1))
    assert m.warmup_ops == 1 and m.ops >= 1
    assert m.elapsed_s < 0.2 + m.ops * 0.05
    assert m.ops / m.elapsed_s > 30


def test_closed_loop_latency_is_the_service_time() -> None:
    m = run(SleepWorkload(seconds=0.02), LoadSpec(threads=1, duration=1.0, warmup=0))
    summary = m.histogram.summary_us()
    assert 19_000 < summary["p50"] < 40_000
    assert summary["p99"] < 250_000  # generous: the test machine is shared


def test_open_loop_counts_queueing_from_the_intended_start() -> None:
    """Service takes 20 ms, 100 ops/s are asked: the queue grows and latency shows it."""
    spec = LoadSpec(threads=1, rate=100, duration=1.0, warmup=0)
    m = run(SleepWorkload(seconds=0.02), spec)
    summary = m.histogram.summary_us()
    # the last ops of the second were intended ~0.5 s before they could start
    assert summary["max"] > 300_000
    assert summary["p50"] > 100_000
    case = case_from_measurement("get", "t", {}, spec, m)
    assert any("target rate not sustained" in w for w in case.warnings)


def test_open_loop_below_capacity_keeps_the_rate() -> None:
    spec = LoadSpec(threads=2, rate=200, duration=1.0, warmup=0.2)
    m = run(SleepWorkload(seconds=0.001), spec)
    assert 180 <= m.ops <= 202
    assert m.histogram.summary_us()["p50"] < 10_000
    case = case_from_measurement("get", "t", {}, spec, m)
    assert not any("not sustained" in w for w in case.warnings)
    assert case.params["loop"] == "open" and case.params["rate"] == 200


def test_errors_are_counted_and_tolerated_up_to_max_errors() -> None:
    # one thread: every 4th attempt of a worker fails, so 2 threads split 151/149 made 74
    spec = LoadSpec(threads=1, ops=300, warmup=0, max_errors=10_000)
    m = run(SleepWorkload(fail_every=4), spec)
    assert m.ops + m.errors == 300  # --ops counts attempts
    assert m.errors == 75
    assert m.fatal is None
    assert m.error_types == {"BackendUnavailableError": m.errors}
    assert m.error_samples == ["BackendUnavailableError: server went away"]


def test_too_many_errors_stop_the_run_and_keep_what_was_measured() -> None:
    spec = LoadSpec(threads=1, ops=1000, warmup=0, max_errors=2)
    m = run(SleepWorkload(fail_every=10), spec)
    assert isinstance(m.fatal, BackendUnavailableError)
    assert m.errors == 3
    assert m.ops == 27
    case = case_from_measurement("put", "t", {}, spec, m)
    assert case.status == "partial" and case.ops == 27


def test_full_storage_stops_at_once() -> None:
    m = run(
        SleepWorkload(fail_after=6, fail_with="full"),
        LoadSpec(threads=1, ops=100, warmup=0, max_errors=100),
    )
    assert isinstance(m.fatal, StorageFullError)
    assert (m.ops, m.errors) == (5, 1)


def test_verification_failures_are_errors() -> None:
    m = run(SleepWorkload(bad_check_every=5), LoadSpec(ops=100, warmup=0, max_errors=1000))
    assert m.verify_failures == m.errors == 20
    assert m.error_types == {"IntegrityError": 20}


def test_processes_share_the_op_count_and_merge_histograms() -> None:
    m = run(SleepWorkload(nbytes=3), LoadSpec(threads=2, processes=2, ops=401, warmup=0))
    assert m.ops == 401
    assert m.histogram.count == 401
    assert m.bytes == 1203
    assert m.fatal is None


def test_a_fatal_error_in_a_worker_process_reaches_the_parent() -> None:
    m = run(
        SleepWorkload(fail_after=4, fail_with="full", seconds=0.001),
        LoadSpec(threads=1, processes=2, duration=5.0, warmup=0),
    )
    assert isinstance(m.fatal, StorageFullError)
    assert m.errors >= 1
    assert 3 <= m.ops <= 10


def test_corrupted_objects_on_disk_are_caught_by_verification(tmp_path) -> None:
    from dcstore.backends.local import LocalBackend
    from dcstore.bench.payload import ObjectSet
    from dcstore.bench.workloads import BackendWorkload

    store = LocalBackend(tmp_path)
    objects = ObjectSet("bench", 64 * 1024, 4, seed=0)
    for i in range(objects.count):
        store.put(objects.key(i), objects.content(i))
    victim = tmp_path / objects.key(2)
    raw = bytearray(victim.read_bytes())
    raw[1000] ^= 0xFF
    victim.write_bytes(raw)
    for op in ("get", "get_range"):
        workload = BackendWorkload(store, objects, op, range_size=64 * 1024, seed=3)
        m = run(workload, LoadSpec(ops=200, warmup=0, max_errors=1000))
        assert m.verify_failures > 0
        assert m.error_types == {"IntegrityError": m.verify_failures}
        assert m.ops + m.errors == 200
