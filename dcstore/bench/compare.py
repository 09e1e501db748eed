"""Comparing figures: repetitions of one run side by side, and two saved results.

In a compare run each repetition measures every target back to back, so the
ratio of a target to the baseline (the first target) is computed *within* a
repetition and then summarised (min / median / max): drift of a shared machine
cancels out of the ratio.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from rich.table import Table

from dcstore.bench.results import BenchResult, CaseResult
from dcstore.bench.units import format_latency_us, format_rate
from dcstore.errors import NotFoundError

_MACHINE_KEYS = ("cpu_model", "usable_cores", "memory_bytes", "kernel", "python")


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _throughput(case: CaseResult) -> float:
    return case.mb_per_s if case.bytes else case.ops_per_s


def summarize(result: BenchResult) -> list[dict[str, Any]]:
    """Per case and target: spread over repetitions and the ratio to the first target."""
    targets: list[str] = []
    cells: dict[str, dict[str, dict[int, CaseResult]]] = defaultdict(lambda: defaultdict(dict))
    for case in result.cases:
        if case.target not in targets:
            targets.append(case.target)
        if case.status == "complete":
            cells[case.name][case.target][case.params.get("repetition", 0)] = case
    rows = []
    for name, by_target in cells.items():
        baseline = by_target.get(targets[0], {})
        for target in targets:
            reps = by_target.get(target)
            if not reps:
                continue
            cases = list(reps.values())
            ratios = [
                _throughput(case) / _throughput(baseline[rep])
                for rep, case in reps.items()
                if rep in baseline and _throughput(baseline[rep]) > 0
            ]
            rows.append(
                {
                    "case": name,
                    "target": target,
                    "repetitions": len(cases),
                    "mb_per_s": _spread([c.mb_per_s for c in cases]),
                    "ops_per_s": _spread([c.ops_per_s for c in cases]),
                    "p50_us_median": _median_latency(cases, "p50"),
                    "p99_us_median": _median_latency(cases, "p99"),
                    "ratio": None if target == targets[0] or not ratios else _spread(ratios),
                }
            )
    return rows


def _median_latency(cases: list[CaseResult], key: str) -> float | None:
    values = [v for c in cases if (v := c.latency_us.get(key)) is not None]
    return statistics.median(values) if values else None


def diff(a: BenchResult, b: BenchResult) -> tuple[Table, list[str]]:
    """A table of B against A for the cases both have, plus warnings about the comparison;
    no case in both is a :class:`NotFoundError` (nothing was compared)."""
    warnings = []
    for field in _MACHINE_KEYS:
        if a.machine.get(field) != b.machine.get(field):
            warnings.append(
                f"machines differ in {field}: {a.machine.get(field)!r} vs {b.machine.get(field)!r}"
            )
    if a.started_at != b.started_at:
        warnings.append(
            "A and B were measured at different times: prefer `dcstore bench compare`, "
            "which interleaves targets in one run"
        )
    single = len({c.target for c in a.cases}) == 1 and len({c.target for c in b.cases}) == 1

    def key(case: CaseResult) -> tuple[str, str, int]:
        return ("" if single else case.target, case.name, case.params.get("repetition", 0))

    b_cases = {key(c): c for c in b.cases}
    table = Table(title="B vs A", title_justify="left", header_style="bold")
    for name in ("case", "A MB/s", "B MB/s", "B/A", "A ops/s", "B ops/s", "A p99", "B p99", "B/A"):
        table.add_column(name, justify="left" if name == "case" else "right")
    matched = 0
    for case in a.cases:
        other = b_cases.get(key(case))
        if other is None:
            continue
        matched += 1
        a99, b99 = case.latency_us.get("p99"), other.latency_us.get("p99")
        label = case.name if single else f"{case.target}: {case.name}"
        table.add_row(
            label,
            format_rate(case.mb_per_s),
            format_rate(other.mb_per_s),
            _ratio(_throughput(other), _throughput(case)),
            format_rate(case.ops_per_s),
            format_rate(other.ops_per_s),
            format_latency_us(a99),
            format_latency_us(b99),
            _ratio(b99, a99),
        )
    if not matched:
        names = [sorted({c.name for c in r.cases})[:3] for r in (a, b)]
        raise NotFoundError(
            f"no case appears in both results: nothing to compare (A has {names[0]}, "
            f"B has {names[1]})"
        )
    return table, warnings


def _ratio(b: float | None, a: float | None) -> str:
    if not a or b is None:
        return "-"
    return f"{b / a:.3f}"
