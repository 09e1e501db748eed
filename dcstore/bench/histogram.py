"""Latency histograms: a thin layer over HdrHistogram (the ``hdrhistogram`` package).

Values are recorded in nanoseconds between 1 ns and one hour with three
significant digits, so every reported percentile is within 0.1 % of the
exact order statistic. Histograms merge across threads and processes and
serialise to the standard HdrHistogram V2 base64 form, which other HdrHistogram
tools (Java, C, Go, HdrHistogram's online plotter) read too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_NS = 1
HIGHEST_NS = 3_600 * 10**9
SIGNIFICANT_DIGITS = 3
ENCODING = "hdrhistogram-v2-base64"
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


class LatencyHistogram:
    """Records latencies in ns; reports them in microseconds."""

    def __init__(self, hdr: HdrHistogram | None = None):
        self._hdr = hdr or HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
        self.overflows = 0
        """Values above one hour, clamped to the maximum trackable value."""

    def record(self, latency_ns: int) -> None:
        """Record one latency (negative values count as 0, huge ones are clamped)."""
        if latency_ns > HIGHEST_NS:
            self.overflows += 1
            latency_ns = HIGHEST_NS
        self._hdr.record_value(max(0, int(latency_ns)))

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count())

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add ``other``'s counts into this histogram and return self."""
        if other.count:
            self._hdr.add(other._hdr)
        self.overflows += other.overflows
        return self

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
        total = cls()
        for hist in histograms:
            total.merge(hist)
        return total

    def percentile_us(self, percentile: float) -> float:
        """The latency at ``percentile`` (0-100) in µs: HdrHistogram's highest equivalent value."""
        return self._hdr.get_value_at_percentile(percentile) / 1000.0

    def summary_us(self) -> dict[str, float | None]:
        """min, mean, stdev, p50, p90, p99, p99.9 and max in microseconds (None when empty)."""
        keys = ["min", "mean", "stdev", *(name for name, _ in PERCENTILES), "max"]
        if not self.count:
            return dict.fromkeys(keys, None)
        values = self._hdr.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        out: dict[str, float | None] = {
            "min": self._hdr.get_min_value() / 1000.0,
            "mean": self._hdr.get_mean_value() / 1000.0,
            "stdev": self._hdr.get_stddev() / 1000.0,
        }
        for name, pct in PERCENTILES:
            out[name] = values[pct] / 1000.0
        out["max"] = self._hdr.get_max_value() / 1000.0
        return out

    def cdf_us(self) -> Iterator[tuple[float, float]]:
        """(latency µs, fraction of ops at or below it) for every recorded bucket."""
        total = self.count
        seen = 0
        for item in self._hdr.get_recorded_iterator():
            seen += item.count_at_value_iterated_to
            yield item.value_iterated_to / 1000.0, seen / total

    def encode(self) -> str:
        """HdrHistogram V2 compressed, base64 (empty string for an empty histogram)."""
        if not self.count:
            return ""
        return self._hdr.encode().decode("ascii")

    @classmethod
    def decode(cls, data: str) -> LatencyHistogram:
        if not data:
            return cls()
        return cls(HdrHistogram.decode(data.encode("ascii")))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in results."""
        return {"encoding": ENCODING, "unit": "ns", "data": self.encode()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LatencyHistogram:
        if doc.get("encoding") != ENCODING or doc.get("unit") != "ns":
            raise ValueError(f"unsupported histogram encoding {doc.get('encoding')!r}")
        return cls.decode(doc.get("data", ""))
