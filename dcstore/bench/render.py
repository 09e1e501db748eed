"""Terminal output: a live progress display while running and readable result tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dcstore.bench.results import BenchResult, CaseResult
from dcstore.bench.runner import LoadSpec, ProgressCallback
from dcstore.bench.runner import Progress as RunProgress
from dcstore.bench.units import format_latency_us, format_rate, format_size


class LiveReporter:
    """A rich progress bar per case (time- or op-based) with live MB/s and errors.

    On a non-terminal (CI logs, pipes) it prints one line per finished case instead.
    """

    def __init__(self, console: Console | None = None, live: bool = True):
        self.console = console or Console(stderr=True)
        self.live = live and self.console.is_terminal
        self._progress: Progress | None = None

    def __enter__(self) -> LiveReporter:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[phase]:>7}"),
                TextColumn("{task.fields[ops]:>9} ops"),
                TextColumn("{task.fields[mbps]:>9} MB/s"),
                TextColumn("{task.fields[errors]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def phase(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]", highlight=False)

    def case_started(self, name: str, spec: LoadSpec) -> ProgressCallback | None:
        if self._progress is None:
            return None
        total = spec.ops if spec.ops is not None else (spec.warmup + (spec.duration or 0))
        task = self._progress.add_task(
            name, total=total, phase="start", ops="0", mbps="-", errors=""
        )
        progress = self._progress

        def update(p: RunProgress) -> None:
            measuring = p.elapsed_s >= p.warmup_s
            window = p.elapsed_s - p.warmup_s
            mbps = format_rate(p.bytes / window / 1e6) if measuring and window > 0 else "-"
            done = p.ops if p.target_ops is not None else max(0.0, p.elapsed_s)
            progress.update(
                task,
                completed=done,
                phase="measure" if measuring else ("warm-up" if p.elapsed_s >= 0 else "start"),
                ops=f"{p.ops:,}",
                mbps=mbps,
                errors=f"[red]{p.errors} errors[/red]" if p.errors else "",
            )

        return update

    def case_finished(self, case: CaseResult) -> None:
        if self._progress is None:
            p99 = format_latency_us(case.latency_us["p99"])
            errors = f", {case.errors} errors" if case.errors else ""
            self.console.print(
                f"{case.target}: {case.name}: {format_rate(case.ops_per_s)} ops/s, "
                f"{format_rate(case.mb_per_s)} MB/s, p99 {p99}{errors} [{case.status}]",
                highlight=False,
            )


def _loop(params: dict[str, Any]) -> str:
    if "step_s" in params:
        return f"step {params['step_s'] * 1000:g}ms" if params["step_s"] else "no step"
    if params.get("loop") == "open":
        return f"open {params.get('rate'):g}/s"
    return "closed"


def _workers(params: dict[str, Any]) -> str:
    if "workers" in params:
        return f"{params['workers']} workers"
    if params.get("processes", 1) > 1:
        return f"{params['processes']}x{params['threads']}"
    return str(params.get("threads", 1))


def cases_table(result: BenchResult, title: str | None = None) -> Table:
    """One row per case: throughput, latency percentiles, errors, verified bytes."""
    many_targets = len({c.target for c in result.cases}) > 1
    has_reps = any(c.params.get("repetition") for c in result.cases)
    table = Table(title=title, title_justify="left", header_style="bold")
    if many_targets:
        table.add_column("target", overflow="fold")
    show_loop = any(_loop(c.params) != "closed" for c in result.cases)
    for name in ("op", "size", "conc", *(("loop",) if show_loop else ())):
        table.add_column(name)
    if has_reps:
        table.add_column("rep", justify="right")
    for name in ("ops/s", "MB/s", "p50", "p90", "p99", "p99.9", "max", "err", "verified"):
        table.add_column(name, justify="right")
    for case in result.cases:
        p, lat = case.params, case.latency_us
        row = [case.target] if many_targets else []
        row += [
            str(p.get("op", "-")) + ("" if case.status == "complete" else f" [{case.status}]"),
            format_size(p["size"]) if p.get("size") else "-",
            _workers(p),
            *((_loop(p),) if show_loop else ()),
        ]
        if has_reps:
            row.append(str(p.get("repetition", 0) + 1))
        row += [
            format_rate(case.ops_per_s),
            format_rate(case.mb_per_s),
            *(format_latency_us(lat.get(k)) for k in ("p50", "p90", "p99", "p999", "max")),
            f"[red]{case.errors}[/red]" if case.errors else "0",
            format_size(case.bytes_verified) if case.bytes_verified else "-",
        ]
        table.add_row(*row)
    return table


def extra_table(result: BenchResult, title: str | None = None) -> Table | None:
    """Suite-specific figures (``CaseResult.extra``), if any case has them."""
    keys: list[str] = []
    for case in result.cases:
        keys += [k for k, v in case.extra.items() if k not in keys and not isinstance(v, str)]
    if not keys:
        return None
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("case")
    for key in keys:
        table.add_column(key, justify="right")
    for case in result.cases:
        cells = []
        for key in keys:
            cells.append(_format_extra(key, case.extra.get(key)))
        table.add_row(f"{case.target}: {case.name}", *cells)
    return table


def make_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when output is not a terminal."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=160)
    return console


def _format_extra(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if "ratio" in key or key.endswith("_pct"):
        return f"{value:.3f}" if "ratio" in key else f"{value:.1f}%"
    if ("bytes" in key or key.startswith("rss")) and isinstance(value, int):
        return format_size(value)
    if key.endswith("_s") and not key.endswith("_per_s"):
        return f"{value:.3g}s"
    return format_rate(value) if isinstance(value, float) else f"{value:,}"


def print_result(result: BenchResult, console: Console | None = None) -> None:
    """The tables, every warning and the run's status."""
    console = console or make_console()
    header = f"dcstore bench {result.suite} - {result.started_at}"
    m = result.machine
    facts = (
        f"{m.get('usable_cores')} cores ({m.get('cpu_model') or '?'}), "
        f"{(m.get('memory_bytes') or 0) / 1024**3:.0f} GiB, "
        f"Python {m.get('python')}, dcstore {m.get('packages', {}).get('dcstore', '?')}"
    )
    console.print(f"[bold]{header}[/bold]\n[dim]{facts}[/dim]", highlight=False)
    if len({c.target for c in result.cases}) == 1:
        console.print(f"target: {result.cases[0].target}", highlight=False)
    if result.cases:
        console.print(cases_table(result))
    extra = extra_table(result)
    if extra is not None:
        console.print(extra)
    for table in summary_tables(result):
        console.print(table)
    many_targets = len({c.target for c in result.cases}) > 1

    def label(case: CaseResult) -> str:
        return f"{case.target}: {case.name}" if many_targets else case.name

    grouped: dict[str, list[str]] = {}
    for case in result.cases:
        for warning in case.warnings:
            names = grouped.setdefault(warning, [])
            if label(case) not in names:
                names.append(label(case))
    for warning, names in grouped.items():
        every = len(names) == len({label(c) for c in result.cases}) > 1
        where = "all cases" if every else ", ".join(names)
        console.print(f"[yellow]warning[/yellow]: {where}: {warning}", highlight=False)
    for case in result.cases:
        for sample in case.error_samples:
            console.print(f"[red]error[/red]: {label(case)}: {sample}", highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}", highlight=False)
    if result.status != "complete":
        err = result.error or {}
        kept = (
            "the figures above were measured before it"
            if result.status == "partial"
            else "nothing was measured"
        )
        console.print(
            f"[bold red]{result.status.upper()}[/bold red]: stopped by {err.get('type', '?')}; "
            f"{kept}",
            highlight=False,
        )


def summary_tables(result: BenchResult) -> list[Table]:
    """Compare summaries: min / median / max per target and the ratio to the baseline."""
    if not result.summary:
        return []
    table = Table(
        title="summary over repetitions (ratio = this target / baseline, per repetition)",
        title_justify="left",
        header_style="bold",
    )
    for name in ("case", "target", "reps"):
        table.add_column(name)
    for name in ("MB/s min", "median", "max", "p50 med", "p99 med", "ratio med", "ratio range"):
        table.add_column(name, justify="right")
    for row in result.summary:
        ratio = row.get("ratio")
        table.add_row(
            row["case"],
            row["target"],
            str(row["repetitions"]),
            format_rate(row["mb_per_s"]["min"]),
            format_rate(row["mb_per_s"]["median"]),
            format_rate(row["mb_per_s"]["max"]),
            format_latency_us(row["p50_us_median"]),
            format_latency_us(row["p99_us_median"]),
            "baseline" if ratio is None else f"{ratio['median']:.3f}",
            "" if ratio is None else f"{ratio['min']:.3f}-{ratio['max']:.3f}",
        )
    return [table]
