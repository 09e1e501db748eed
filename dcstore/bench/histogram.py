"""Latency histograms: a thin layer over HdrHistogram (the ``hdrhistogram`` package).

Values are recorded in nanoseconds between 1 ns and one hour with three
significant digits, so every reported percentile is within 0.1 % of the
exact order statistic. Histograms merge across threads and processes and
serialise to the standard HdrHistogram V2 base64 form, which other HdrHistogram
tools (Java, C, Go, HdrHistogram's online plotter) read too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
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


@functools.lru_cache(maxsize=4)
def _median_equivalents(counts_len: int, half_magnitude: int, unit_magnitude: int) -> np.ndarray:
    """The value HdrHistogram reports for each counts index (middle of its bucket)."""
    half = 1 << half_magnitude
    index = np.arange(counts_len, dtype=np.int64)
    bucket = (index >> half_magnitude) - 1
    sub = (index & (half - 1)) + half
    first = bucket < 0
    sub[first] -= half
    bucket[first] = 0
    lowest = sub << (bucket + unit_magnitude)
    size = np.left_shift(1, bucket + unit_magnitude)
    return np.asarray(lowest + (size >> 1), dtype=np.float64)


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
        return float(self._hdr.get_value_at_percentile(percentile)) / 1000.0

    def summary_us(self) -> dict[str, float | None]:
        """min, mean, stdev, p50, p90, p99, p99.9 and max in microseconds (None when empty)."""
        keys = ["min", "mean", "stdev", *(name for name, _ in PERCENTILES), "max"]
        if not self.count:
            return dict.fromkeys(keys, None)
        values = self._hdr.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        mean, stdev = self._moments_ns()
        out: dict[str, float | None] = {
            "min": self._hdr.get_min_value() / 1000.0,
            "mean": mean / 1000.0,
            "stdev": stdev / 1000.0,
        }
        for name, pct in PERCENTILES:
            out[name] = values[pct] / 1000.0
        out["max"] = self._hdr.get_max_value() / 1000.0
        return out

    def _moments_ns(self) -> tuple[float, float]:
        """Mean and standard deviation as HdrHistogram defines them, vectorised.

        (``HdrHistogram.get_mean_value`` walks every bucket in Python: ~0.3 s each.)
        """
        hdr = self._hdr
        counts = np.ctypeslib.as_array(hdr.counts)[: hdr.counts_len].astype(np.float64)
        values = _median_equivalents(
            hdr.counts_len, hdr.sub_bucket_half_count_magnitude, hdr.unit_magnitude
        )[: len(counts)]  # decoded histograms may carry a truncated counts array
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        stdev = float(np.sqrt((counts * (values - mean) ** 2).sum() / total))
        return mean, stdev

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
        return str(self._hdr.encode().decode("ascii"))

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
