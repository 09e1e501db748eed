"""``--plot`` figures from real short runs: one series per target with the spread of its
repetitions, distinct colours, legends outside the axes; the loader in samples/s and data-wait %."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from matplotlib.container import BarContainer

from dcstore.bench.plot import build_figure, group_series, plot_result
from dcstore.bench.results import BenchResult, read_json
from dcstore.cli.main import main

QUICK = ["--duration", "0.3s", "--warmup", "0.1s", "--no-progress"]


def run(tmp_path: Path, *args: str) -> BenchResult:
    out = tmp_path / "result.json"
    assert main(["bench", *args, "--json", str(out)]) == 0
    return read_json(out)


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.fixture(scope="module")
def compare_result(tmp_path_factory) -> BenchResult:
    tmp = tmp_path_factory.mktemp("cmp")
    return run(
        tmp, "compare", "memory://plot-a;label=a", f"{tmp / 'disk'};label=b",
        "--op", "put,get", "--size", "4KiB", "--reps", "3", *QUICK,
    )  # fmt: skip


def test_repetitions_are_one_series_per_target(compare_result: BenchResult) -> None:
    series = group_series(compare_result)
    assert {(s.name, s.target) for s in series} == {
        (op, t) for op in ("put 4KiB x1", "get 4KiB x1") for t in ("a", "b")
    }
    for s in series:
        assert len(s.cases) == 3
        low, mid, high = s.spread(lambda c: c.mb_per_s)
        assert low <= mid <= high and low > 0


def test_compare_figure_bands_distinct_colours_legend_outside(compare_result, tmp_path) -> None:
    fig = build_figure(compare_result)
    *latency_axes, bars = fig.axes
    assert [ax.get_title() for ax in latency_axes] == ["put 4KiB x1", "get 4KiB x1"]
    for ax in latency_axes:
        assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]  # not one per rep
        assert len(ax.collections) == 2  # the min-max band of each target's repetitions
    containers = [c for c in bars.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in containers] == ["a", "b"]
    colours = {tuple(c.patches[0].get_facecolor()) for c in containers}
    assert len(colours) == 2
    assert all(len(c.patches) == 2 for c in containers)  # one bar per workload and target
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    box = legend.get_window_extent(renderer)
    assert not any(overlaps(box, ax.get_window_extent(renderer)) for ax in fig.axes)
    plot_result(compare_result, tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_single_target_legend_sits_outside_its_axes(tmp_path: Path) -> None:
    result = run(tmp_path, "backend", "memory://plot-one", "--op", "put,get", "--size", "4KiB",
                 *QUICK)  # fmt: skip
    fig = build_figure(result)
    latency, _bars = fig.axes
    assert [line.get_label() for line in latency.get_lines()] == ["put 4KiB x1", "get 4KiB x1"]
    assert len({line.get_color() for line in latency.get_lines()}) == 2
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = latency.get_legend().get_window_extent(renderer)
    assert not overlaps(legend, latency.get_window_extent(renderer))


def test_loader_figure_is_samples_per_s_and_data_wait(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = run(
        tmp_path, "loader", str(tmp_path / "ds"), "--synthetic", "120", "--sample-size", "4KiB",
        "--shard-size", "256KiB", "--workers", "0", "--batch-size", "16", "--step", "0,1ms",
        "--duration", "0", "--no-progress",
    )  # fmt: skip
    fig = build_figure(result)
    rate, wait = fig.axes
    assert rate.get_xlabel() == "samples/s"
    assert wait.get_xlabel() == "% of step time waiting for data"
    widths = [p.get_width() for p in rate.patches]
    assert widths == pytest.approx([c.extra["samples_per_s"] for c in result.cases])
    waits = [p.get_width() for p in wait.patches]
    assert waits == pytest.approx([c.extra["data_wait_pct"] for c in result.cases])
    assert wait.get_xlim() == (0, 105)
