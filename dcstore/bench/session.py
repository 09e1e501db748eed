"""What every suite shares: the result being built, interleaving, and failure handling.

A :class:`Session` owns the :class:`BenchResult` of one invocation. Suites add
cases as they finish with :meth:`Session.record`, which also re-raises the
failure that stopped a case; :meth:`Session.run` turns any failure (including
^C) into a ``partial`` or ``failed`` result that keeps every measured case.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from dcstore.bench.machine import machine_facts
from dcstore.bench.measurement import Measurement
from dcstore.bench.results import BenchResult, CaseResult, case_from_measurement, error_info
from dcstore.bench.runner import LoadSpec, ProgressCallback

T = TypeVar("T")


class Reporter(Protocol):
    """Where progress goes (a live terminal display, or nothing)."""

    def phase(self, text: str) -> None: ...

    def case_started(self, name: str, spec: LoadSpec) -> ProgressCallback | None: ...

    def case_finished(self, case: CaseResult) -> None: ...


class SilentReporter:
    def phase(self, text: str) -> None:
        pass

    def case_started(self, name: str, spec: LoadSpec) -> ProgressCallback | None:
        return None

    def case_finished(self, case: CaseResult) -> None:
        pass


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_prefix() -> str:
    """A fresh key prefix for one run's objects."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"dcstore-bench/{stamp}-{os.getpid()}"


def interleave(targets: Sequence[T], repetitions: int) -> Iterator[tuple[int, T]]:
    """(repetition, target) with every target once per repetition, order rotated each time,
    so drift on a shared machine hits every target alike."""
    for rep in range(repetitions):
        shift = rep % len(targets)
        for target in (*targets[shift:], *targets[:shift]):
            yield rep, target


class Session:
    """The result of one ``dcstore bench`` invocation, filled as cases finish."""

    def __init__(
        self,
        suite: str,
        config: dict[str, Any],
        command: Sequence[str] | None = None,
        reporter: Reporter | None = None,
    ):
        self.reporter: Reporter = reporter or SilentReporter()
        self.result = BenchResult(
            suite=suite,
            status="complete",
            started_at=now_iso(),
            finished_at="",
            command=list(command or []),
            config=config,
            machine=machine_facts(),
        )

    def warn(self, text: str) -> None:
        self.result.warnings.append(text)

    def measure(self, name: str, target: str, load: LoadSpec, workload: Any) -> Measurement:
        """Run ``workload`` under ``load`` with live progress."""
        from dcstore.bench.runner import run

        on_progress = self.reporter.case_started(f"{target}: {name}", load)
        return run(workload, load, on_progress)

    def record(
        self,
        name: str,
        target: str,
        params: dict[str, Any],
        load: LoadSpec,
        measurement: Measurement,
        extra: dict[str, Any] | None = None,
        before_report: Callable[[CaseResult], None] | None = None,
    ) -> CaseResult:
        """Add the case; then raise what stopped it (fatal error or ^C), if anything."""
        case = case_from_measurement(name, target, params, load, measurement, extra)
        self.result.cases.append(case)
        if before_report is not None and measurement.fatal is None and not measurement.interrupted:
            before_report(case)
        self.reporter.case_finished(case)
        if measurement.interrupted:
            raise KeyboardInterrupt
        if measurement.fatal is not None:
            raise measurement.fatal
        return case

    def run(
        self, body: Callable[[], None], cleanup: Callable[[BaseException | None], None]
    ) -> tuple[BenchResult, BaseException | None]:
        """Run ``body`` then ``cleanup(error)``; never raises for benchmark failures."""
        error: BaseException | None = None
        try:
            body()
        except (Exception, KeyboardInterrupt) as exc:
            error = exc
        finally:
            cleanup(error)
        result = self.result
        result.finished_at = now_iso()
        if error is not None:
            result.status = "partial" if any(case.ops for case in result.cases) else "failed"
            result.error = error_info(error)
        return result, error
