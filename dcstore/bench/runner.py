"""Running a workload with threads and processes, closed or open loop.

* Closed loop: each worker starts its next operation when the previous one
  ends; latency is measured from the actual start.
* Open loop (``rate``): operations are scheduled at fixed intended times
  ``t0 + k / rate`` shared by all workers; latency is measured from the
  *intended* start, so time spent queued behind slow operations counts
  (no coordinated omission). A worker that falls behind starts late operations
  at once instead of skipping them.
* Warm-up: operations that start (or are scheduled) before ``t0 + warmup``
  are run but not recorded. In a closed loop the measured window starts when the
  first measured operation does (a warm-up operation still running past the
  warm-up is not measured time).
* End: after ``duration`` seconds of measurement, or after ``ops`` measured
  operations in total. In a closed loop each worker measures at least one
  operation, so one operation slower than the whole window (a stalled fsync)
  is reported as slow, never as zero operations per second.
* Errors: every failure is counted by type; a full disk, a bad configuration,
  an access error or more than ``max_errors`` errors stops the run, and what
  was measured until then is returned with the exception (never lost).

Process workers are started with ``spawn`` and receive the pickled workload
(a store pickles and reconnects lazily), exactly as DataLoader workers do.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dcstore.bench.measurement import Measurement, portable_exception
from dcstore.bench.workloads import Workload
from dcstore.errors import (
    ConfigError,
    DcstoreError,
    KeyAccessError,
    StorageFullError,
)

FATAL_ERRORS = (StorageFullError, ConfigError, KeyAccessError)
_SLOT_FIELDS = 3  # ops, bytes, errors per worker thread in the progress array
_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LoadSpec:
    """How hard, how long and with how many workers to run a workload."""

    threads: int = 1
    processes: int = 1
    rate: float | None = None
    """Total intended operations per second (open loop); None for closed loop."""
    duration: float | None = 5.0
    """Measured seconds; ignored when ``ops`` is set."""
    ops: int | None = None
    """Measured operations in total (all workers)."""
    warmup: float = 1.0
    max_errors: int = 0
    interval: float = 1.0
    """Width of the throughput timeline buckets in seconds."""

    def __post_init__(self) -> None:
        if self.threads < 1 or self.processes < 1:
            raise ConfigError("threads and processes must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("rate must be positive")
        if self.ops is None and (self.duration is None or self.duration <= 0):
            raise ConfigError("give a positive duration or an operation count")
        if self.ops is not None and self.ops < 1:
            raise ConfigError("ops must be at least 1")

    @property
    def workers(self) -> int:
        return self.threads * self.processes

    @property
    def loop(self) -> str:
        return "open" if self.rate else "closed"


def is_fatal(exc: BaseException) -> bool:
    """Errors that stop a run at once, whatever ``max_errors`` says."""
    if isinstance(exc, FATAL_ERRORS):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class _ProcessRun:
    """The worker threads of one process and the state they share."""

    def __init__(
        self,
        workload: Workload,
        spec: LoadSpec,
        process: int,
        stop: Any,
        progress: Any,
    ):
        self.spec = spec
        self.process = process
        self.stop = stop
        self.progress = progress
        self.lock = threading.Lock()
        self.next_seq = 0
        self.measured_started = 0
        quota = None
        if spec.ops is not None:
            quota = spec.ops // spec.processes + (1 if process < spec.ops % spec.processes else 0)
        self.quota = quota
        workers = spec.workers
        self.operations = [
            workload.operation(process * spec.threads + t, workers) for t in range(spec.threads)
        ]
        self.results: list[Measurement] = []
        self.threads: list[threading.Thread] = []

    def start(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.measure_ns = t0_ns + int(self.spec.warmup * 1e9)
        self.end_ns = (
            self.measure_ns + int(self.spec.duration * 1e9)
            if self.spec.ops is None and self.spec.duration
            else None
        )
        for t, op in enumerate(self.operations):
            m = Measurement(window_start_ns=self.measure_ns)
            self.results.append(m)
            thread = threading.Thread(
                target=self._loop, args=(op, t, m), name=f"bench-worker-{t}", daemon=True
            )
            self.threads.append(thread)
            thread.start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> Measurement:
        for thread in self.threads:
            thread.join()
        total = Measurement(window_start_ns=self.measure_ns)
        for m in self.results:
            total.merge(m)
        if self.end_ns is not None and not (total.fatal or self.stop.is_set()):
            total.window_end_ns = max(total.window_end_ns, self.end_ns)
        return total

    def _claim(self, measured_one: bool = True) -> tuple[int, bool] | None:
        """Next sequence number, or None when the run is over (``measured_one``: this
        worker has measured an operation; a closed-loop worker always measures one)."""
        with self.lock:
            seq = self.next_seq
            self.next_seq += 1
        spec = self.spec
        if spec.rate:
            intended = self.t0_ns + int((seq * spec.processes + self.process) * 1e9 / spec.rate)
        else:
            intended = time.monotonic_ns()
        measured = intended >= self.measure_ns
        over = self.end_ns is not None and intended >= self.end_ns
        if over and (spec.rate or measured_one):
            return None
        if measured and self.quota is not None:
            with self.lock:
                if self.measured_started >= self.quota:
                    return None
                self.measured_started += 1
        return intended, measured

    def _loop(self, op: Callable[[], tuple[int, Any]], slot: int, m: Measurement) -> None:
        spec = self.spec
        interval_ns = int(spec.interval * 1e9)
        base = (self.process * spec.threads + slot) * _SLOT_FIELDS
        progress = self.progress
        delay = self.t0_ns - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        while not self.stop.is_set():
            claim = self._claim(measured_one=m.ops > 0 or m.errors > 0)
            if claim is None:
                break
            intended, measured = claim
            if spec.rate:
                delay = intended - time.monotonic_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                    if self.stop.is_set():
                        break
                start = intended
            else:
                start = time.monotonic_ns()
            try:
                nbytes, check = op()
                end = time.monotonic_ns()
                verified = check() if check is not None else 0
                if measured:
                    m.bytes_verified += verified
            except Exception as exc:
                m.add_error(exc)
                progress[base + 2] = m.errors
                if is_fatal(exc) or self._total_errors() > spec.max_errors:
                    m.fatal = exc
                    self.stop.set()
                    break
                continue
            if measured:
                if not (spec.rate or m.first_start_ns):
                    m.first_start_ns = start
                m.record(end - start, nbytes, end - self.measure_ns, interval_ns)
                m.window_end_ns = max(m.window_end_ns, end)
                progress[base] = m.ops
                progress[base + 1] = m.bytes
            else:
                m.warmup_ops += 1

    def _total_errors(self) -> int:
        return int(sum(self.progress[i + 2] for i in range(0, len(self.progress), _SLOT_FIELDS)))


@dataclass
class Progress:
    """A snapshot for live display: measured ops and bytes so far, errors, phase."""

    ops: int
    bytes: int
    errors: int
    elapsed_s: float
    """Seconds since the start of the run (negative while workers start)."""
    warmup_s: float
    duration_s: float | None
    target_ops: int | None


ProgressCallback = Callable[[Progress], None]


def _snapshot(progress: Any, spec: LoadSpec, t0_ns: int | None) -> Progress:
    values = list(progress)
    elapsed = -1.0 if t0_ns is None else (time.monotonic_ns() - t0_ns) / 1e9
    return Progress(
        ops=int(sum(values[0::_SLOT_FIELDS])),
        bytes=int(sum(values[1::_SLOT_FIELDS])),
        errors=int(sum(values[2::_SLOT_FIELDS])),
        elapsed_s=elapsed,
        warmup_s=spec.warmup,
        duration_s=None if spec.ops is not None else spec.duration,
        target_ops=spec.ops,
    )


def run(
    workload: Workload,
    spec: LoadSpec,
    on_progress: ProgressCallback | None = None,
    tick: float = 0.2,
) -> Measurement:
    """Run ``workload`` under ``spec`` and return the merged measurement.

    Never raises for failures of the operations: they are in
    ``Measurement.fatal`` / ``errors``. A KeyboardInterrupt stops the workers
    and returns what was measured with ``interrupted`` set.
    """
    if spec.processes == 1:
        return _run_in_process(workload, spec, on_progress, tick)
    return _run_processes(workload, spec, on_progress, tick)


def _run_in_process(
    workload: Workload, spec: LoadSpec, on_progress: ProgressCallback | None, tick: float
) -> Measurement:
    stop = threading.Event()
    progress = [0.0] * (spec.threads * _SLOT_FIELDS)
    runner = _ProcessRun(workload, spec, 0, stop, progress)
    t0 = time.monotonic_ns()
    runner.start(t0)
    interrupted = False
    try:
        while runner.alive():
            if on_progress:
                on_progress(_snapshot(progress, spec, t0))
            for thread in runner.threads:
                thread.join(tick / len(runner.threads))
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
    result = runner.join()
    result.interrupted = result.interrupted or interrupted
    if on_progress:
        on_progress(_snapshot(progress, spec, t0))
    return result


def _process_main(
    workload: Workload,
    spec: LoadSpec,
    process: int,
    stop: Any,
    go: Any,
    start_at: Any,
    results: Any,
    progress: Any,
) -> None:
    """Entry point of a worker process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through ``stop``
    try:
        runner = _ProcessRun(workload, spec, process, stop, progress)
    except BaseException as exc:
        results.put(("failed", process, portable_exception(exc)))
        return
    results.put(("ready", process, None))
    go.wait()
    if stop.is_set():
        results.put(("done", process, Measurement().to_wire()))
        return
    runner.start(start_at.value)
    measurement = runner.join()
    with contextlib.suppress(Exception):
        workload.finish()
    results.put(("done", process, measurement.to_wire()))


def _run_processes(
    workload: Workload, spec: LoadSpec, on_progress: ProgressCallback | None, tick: float
) -> Measurement:
    ctx = multiprocessing.get_context("spawn")
    stop, go = ctx.Event(), ctx.Event()
    start_at = ctx.RawValue("q", 0)
    results = ctx.Queue()
    progress = ctx.RawArray("d", spec.workers * _SLOT_FIELDS)
    procs = [
        ctx.Process(
            target=_process_main,
            args=(workload, spec, p, stop, go, start_at, results, progress),
            name=f"dcstore-bench-{p}",
            daemon=True,
        )
        for p in range(spec.processes)
    ]
    total = Measurement()
    t0: int | None = None
    done: set[int] = set()
    ready: set[int] = set()
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while len(ready) < len(procs) and total.fatal is None:
            try:
                kind, p, payload = results.get(timeout=tick)
            except queue.Empty:
                if time.monotonic() > deadline or not all(pr.is_alive() for pr in procs):
                    total.fatal = DcstoreError("a benchmark worker process failed to start")
                continue
            if kind == "ready":
                ready.add(p)
            else:
                total.fatal = payload or DcstoreError(f"worker process {p} failed to start")
        if total.fatal is not None:
            stop.set()
            go.set()
            return total
        t0 = time.monotonic_ns() + 10_000_000
        start_at.value = t0
        total.window_start_ns = t0 + int(spec.warmup * 1e9)
        go.set()
        while len(done) < len(procs):
            if on_progress:
                on_progress(_snapshot(progress, spec, t0))
            try:
                kind, p, payload = results.get(timeout=tick)
            except queue.Empty:
                for i, proc in enumerate(procs):
                    if i not in done and not proc.is_alive() and proc.exitcode not in (0, None):
                        done.add(i)
                        total.add_error(
                            DcstoreError(f"worker process {i} died (exit code {proc.exitcode})")
                        )
                        total.fatal = total.fatal or DcstoreError(
                            f"benchmark worker process {i} died (exit code {proc.exitcode})"
                        )
                        stop.set()
                continue
            if kind == "done":
                done.add(p)
                total.merge(Measurement.from_wire(payload))
                if total.fatal is not None:
                    stop.set()
    except KeyboardInterrupt:
        total.interrupted = True
        stop.set()
        go.set()
        end = time.monotonic() + 10
        while len(done) < len(procs) and time.monotonic() < end:
            try:
                kind, p, payload = results.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "done":
                done.add(p)
                total.merge(Measurement.from_wire(payload))
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        results.close()
    if on_progress:
        on_progress(_snapshot(progress, spec, t0))
    return total
