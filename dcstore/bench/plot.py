"""``--plot FILE.png``: latency CDF (percentile axis stretched towards the tail) and
throughput bars, drawn from the raw histograms stored in a result."""

from __future__ import annotations

import os

from dcstore.bench.results import BenchResult
from dcstore.errors import ConfigError

_TAIL_TICKS = (0.5, 0.9, 0.99, 0.999, 0.9999)
MAX_CURVES = 12
_TAIL_LIMIT = 1e-5


def plot_result(result: BenchResult, path: str | os.PathLike[str]) -> None:
    """Write a PNG (or any format matplotlib infers from the suffix) for ``result``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib: pip install 'dcstore[bench]'") from exc

    cases = [c for c in result.cases if c.ops]
    many_targets = len({c.target for c in cases}) > 1
    labels = [f"{c.target}: {c.name}" if many_targets else c.name for c in cases]
    fig, (ax_cdf, ax_bar) = plt.subplots(
        1, 2, figsize=(14, max(4.5, 0.32 * len(cases) + 2)), constrained_layout=True
    )
    for case, label in list(zip(cases, labels, strict=True))[:MAX_CURVES]:
        points = list(case.latency_histogram().cdf_us())
        if not points:
            continue
        xs = [1 / max(_TAIL_LIMIT, 1 - q) for _, q in points]
        ys = [v / 1000 for v, _ in points]
        ax_cdf.step(xs, ys, where="post", label=label)
    ax_cdf.set_xscale("log")
    ax_cdf.set_yscale("log")
    ax_cdf.set_xticks([1 / (1 - q) for q in _TAIL_TICKS])
    ax_cdf.set_xticklabels([f"p{q * 100:g}" for q in _TAIL_TICKS])
    ax_cdf.set_xlim(1, 2 / _TAIL_LIMIT)
    ax_cdf.minorticks_off()
    ax_cdf.set_xlabel("percentile")
    ax_cdf.set_ylabel("latency (ms)")
    ax_cdf.set_title("latency distribution")
    ax_cdf.grid(True, which="both", alpha=0.3)
    if cases:
        ax_cdf.legend(fontsize="small")

    values = [c.mb_per_s if c.bytes else c.ops_per_s for c in cases]
    unit = "MB/s" if all(c.bytes for c in cases) else "MB/s (or ops/s)"
    positions = range(len(cases))
    ax_bar.barh(positions, values, color="tab:blue")
    ax_bar.set_yticks(list(positions))
    ax_bar.set_yticklabels(labels, fontsize="small")
    ax_bar.invert_yaxis()
    ax_bar.set_xlabel(unit)
    ax_bar.set_title("throughput")
    for y, value in zip(positions, values, strict=True):
        ax_bar.text(value, y, f" {value:,.0f}", va="center", fontsize="small")
    status = "" if result.status == "complete" else f" [{result.status.upper()}]"
    fig.suptitle(f"dcstore bench {result.suite} - {result.started_at}{status}")
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)
