"""``--plot FILE.png``: figures of a result that a person can read and share.

* Storage suites (backend, compare, crypto, cache): the latency distribution
  (percentile axis stretched towards the tail) and the throughput of every workload.
  With several targets, one small latency panel per workload.
* ``loader``: samples/s and data-wait % per case.

Every target is one series with one colour in every panel; its repetitions are
drawn as their spread (a min-max band around the median curve; bars show the
median with min-max whiskers), never as separate series. Legends sit outside the
axes, so they never cover data.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dcstore.bench.results import BenchResult, CaseResult
from dcstore.errors import ConfigError

MAX_PANELS = 12
"""Latency panels (workloads) drawn at most; the throughput panel shows every one."""
MAX_CURVES = 20
"""Latency curves in a single-target panel drawn at most (tab20 keeps them distinct)."""
_TAIL_TICKS = (0.5, 0.9, 0.99, 0.999, 0.9999)
_TAIL_LIMIT = 1e-5
_CDF_POINTS = 120
_LOG_BARS_RATIO = 50.0
"""Throughput bars use a log axis when the largest is this many times the smallest."""


@dataclass
class Series:
    """One workload (case name) on one target, with all of its repetitions."""

    name: str
    target: str
    cases: list[CaseResult]

    def spread(self, value: Callable[[CaseResult], float | None]) -> tuple[float, float, float]:
        """(min, median, max) of ``value`` over the repetitions (NaN when none has it)."""
        values = [v for v in (value(c) for c in self.cases) if v is not None]
        if not values:
            return math.nan, math.nan, math.nan
        return min(values), statistics.median(values), max(values)


def group_series(result: BenchResult) -> list[Series]:
    """The measured cases grouped into series by (case name, target), in first-seen order."""
    series: dict[tuple[str, str], Series] = {}
    for case in result.cases:
        if case.ops:
            key = (case.name, case.target)
            series.setdefault(key, Series(case.name, case.target, [])).cases.append(case)
    return list(series.values())


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _colours(names: list[str], plt: Any) -> dict[str, Any]:
    """A distinct colour per name (tab10, then tab20, then an evenly spaced colormap)."""
    if len(names) <= 10:
        palette = [plt.get_cmap("tab10")(i) for i in range(len(names))]
    elif len(names) <= 20:
        palette = [plt.get_cmap("tab20")(i) for i in range(len(names))]
    else:
        palette = [plt.get_cmap("turbo")(i / (len(names) - 1)) for i in range(len(names))]
    return dict(zip(names, palette, strict=True))


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib: pip install 'dcstore[bench]'") from exc
    return plt


def plot_result(result: BenchResult, path: str | os.PathLike[str]) -> None:
    """Write a PNG (or any format matplotlib infers from the suffix) for ``result``."""
    plt = _pyplot()
    fig = build_figure(result)
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)


def build_figure(result: BenchResult) -> Any:
    """The matplotlib figure of ``result`` (loader or storage layout by its suite)."""
    plt = _pyplot()
    series = group_series(result)
    targets = _unique([s.target for s in series])
    colours = _colours(targets, plt)
    if result.suite == "loader":
        fig = _loader_figure(plt, series, targets, colours)
    else:
        fig = _storage_figure(plt, series, targets, colours)
    status = "" if result.status == "complete" else f" [{result.status.upper()}]"
    reps = max((len(s.cases) for s in series), default=0)
    spread = (
        f"\nup to {reps} repetitions per case: curves and bars are medians, "
        "bands and whiskers span min-max"
        if reps > 1
        else ""
    )
    fig.suptitle(f"dcstore bench {result.suite} - {result.started_at}{status}{spread}")
    if len(targets) > 1:
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[t]) for t in targets]
        fig.legend(handles, targets, loc="outside lower center", ncols=min(len(targets), 4))
    return fig


def _storage_figure(
    plt: Any, series: list[Series], targets: list[str], colours: dict[str, Any]
) -> Any:
    names = _unique([s.name for s in series])
    many = len(targets) > 1
    panels = names[:MAX_PANELS] if many else [""]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    bar_height = 0.25 * len(series) + 1.5
    fig = plt.figure(
        figsize=(4.2 * ncols + 7.5 + (0 if many else 2.5), max(3.6 * nrows, bar_height, 4.5)),
        layout="constrained",
    )
    grid = fig.add_gridspec(nrows, ncols + 1, width_ratios=[*([1.0] * ncols), 1.5])
    if many:
        for i, name in enumerate(panels):
            ax = fig.add_subplot(grid[i // ncols, i % ncols])
            for s in (s for s in series if s.name == name):
                _cdf(ax, s, colours[s.target], label=s.target)
            _cdf_axes(ax, name, xlabel=i // ncols == nrows - 1, ylabel=i % ncols == 0)
        if len(names) > MAX_PANELS:
            fig.text(0.01, 0.01, f"latency: first {MAX_PANELS} of {len(names)} workloads")
    else:
        ax = fig.add_subplot(grid[:, 0])
        shown = series[:MAX_CURVES]
        case_colours = _colours([s.name for s in shown], plt)
        for s in shown:
            _cdf(ax, s, case_colours[s.name], label=s.name)
        more = f" (first {MAX_CURVES} of {len(series)})" if len(series) > MAX_CURVES else ""
        _cdf_axes(ax, f"latency distribution{more}", xlabel=True, ylabel=True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small", frameon=False)
    bars = fig.add_subplot(grid[:, ncols])
    all_bytes = all(c.bytes for s in series for c in s.cases)
    unit, field = ("MB/s", "mb_per_s") if all_bytes else ("ops/s", "ops_per_s")
    _bars(bars, series, names, targets, colours, lambda c: getattr(c, field))
    bars.set_xlabel(unit)
    bars.set_title(f"throughput ({unit})")
    return fig


def _loader_figure(
    plt: Any, series: list[Series], targets: list[str], colours: dict[str, Any]
) -> Any:
    names = _unique([s.name for s in series])
    height = max(3.5, 0.35 * len(series) + 1.8)
    fig, (rate, wait) = plt.subplots(1, 2, figsize=(13, height), layout="constrained", sharey=True)
    _bars(rate, series, names, targets, colours, lambda c: c.extra.get("samples_per_s"))
    rate.set_xlabel("samples/s")
    rate.set_title("throughput (samples/s, higher is better)")
    _bars(wait, series, names, targets, colours, lambda c: c.extra.get("data_wait_pct"), "%.1f%%")
    wait.set_xlim(0, 105)
    wait.set_xlabel("% of step time waiting for data")
    wait.set_title("data wait (lower is better)")
    return fig


def _cdf(ax: Any, series: Series, colour: Any, label: str) -> None:
    """The median latency curve of ``series`` with the min-max band of its repetitions."""
    import numpy as np

    hists = [c.latency_histogram() for c in series.cases]
    hists = [h for h in hists if h.count]
    if not hists:
        return
    # Beyond 1 - 1/count a curve only repeats its maximum: stop each series there.
    limit = min(1 - 1 / h.count for h in hists) if min(h.count for h in hists) > 1 else 0.5
    xs = np.logspace(0, math.log10(1 / _TAIL_LIMIT), _CDF_POINTS)
    xs = xs[1 - 1 / xs <= max(limit, 0.5)]
    curves = np.array([[h.percentile_us((1 - 1 / x) * 100) / 1000 for x in xs] for h in hists])
    ax.plot(xs, np.median(curves, axis=0), color=colour, label=label, linewidth=1.6)
    if len(hists) > 1:
        ax.fill_between(xs, curves.min(axis=0), curves.max(axis=0), color=colour, alpha=0.25)


def _cdf_axes(ax: Any, title: str, *, xlabel: bool, ylabel: bool) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([1 / (1 - q) for q in _TAIL_TICKS])
    ax.set_xticklabels([f"p{q * 100:g}" for q in _TAIL_TICKS])
    ax.set_xlim(1, 1 / _TAIL_LIMIT)
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize="medium")
    if xlabel:
        ax.set_xlabel("percentile")
    if ylabel:
        ax.set_ylabel("latency (ms)")


def _bars(
    ax: Any,
    series: list[Series],
    names: list[str],
    targets: list[str],
    colours: dict[str, Any],
    value: Callable[[CaseResult], float | None],
    fmt: str = "%s",
) -> None:
    """Horizontal bars grouped by workload, one per target: median, min-max whiskers."""
    by_key = {(s.name, s.target): s for s in series}
    height = 0.8 / len(targets)
    medians: list[float] = []
    for j, target in enumerate(targets):
        ys, mids, lows, highs = [], [], [], []
        for i, name in enumerate(names):
            s = by_key.get((name, target))
            if s is None:
                continue
            low, mid, high = s.spread(value)
            if math.isnan(mid):
                continue
            ys.append(i + (j - (len(targets) - 1) / 2) * height)
            mids.append(mid)
            lows.append(mid - low)
            highs.append(high - mid)
        if not ys:
            continue
        spread = any(lows) or any(highs)
        ax.barh(
            ys, mids, height=height * 0.9, color=colours[target], label=target,
            xerr=[lows, highs] if spread else None,
            error_kw={"ecolor": "0.25", "capsize": 2, "elinewidth": 1},
        )  # fmt: skip
        for y, mid, high in zip(ys, mids, highs, strict=True):  # right of the whisker
            ax.text(mid + high, y, f" {_fmt_value(mid, fmt)}", va="center", fontsize="x-small")
        medians.extend(mids)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize="small")
    ax.set_ylim(len(names) - 0.5, -0.5)
    positive = [m for m in medians if m > 0]
    if positive and fmt == "%s" and max(positive) / min(positive) > _LOG_BARS_RATIO:
        ax.set_xscale("log")
    if positive:
        left, right = ax.get_xlim()
        ax.set_xlim(left, right * (3 if ax.get_xscale() == "log" else 1.15))  # room for labels
    ax.grid(True, axis="x", alpha=0.3)


def _fmt_value(value: float, fmt: str) -> str:
    if fmt != "%s":
        return fmt % value
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
