"""Benchmark arithmetic: unit parsing, percentiles against known distributions, merging."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dcstore.bench.histogram import LatencyHistogram
from dcstore.bench.measurement import Measurement
from dcstore.bench.units import format_size, parse_list
from dcstore.errors import ConfigError
from dcstore.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64KiB", 65536),
        ("1MiB", 1 << 20),
        ("4mib", 4 << 20),
        ("64MiB", 64 << 20),
        ("1GiB", 1 << 30),
        ("1.5KiB", 1536),
        ("1MB", 10**6),
        ("100", 100),
        ("0", 0),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "4 MiBs", "MiB", "-1KiB", "1.3B", "4XB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size(text)


def test_format_size_round_trips() -> None:
    for size in (1, 65536, 1 << 20, 4 << 20, 64 << 20, 1 << 30):
        assert parse_size(format_size(size)) == size


def test_parse_duration_and_lists() -> None:
    assert parse_duration("10s") == 10.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1.5") == 1.5
    with pytest.raises(ConfigError):
        parse_duration("soon")
    assert parse_list("1,4,4,8", int) == [1, 4, 8]
    assert parse_list("64KiB, 1MiB", parse_size) == [65536, 1 << 20]
    with pytest.raises(ConfigError):
        parse_list("1,x", int)


def _hist(values_ns: np.ndarray) -> LatencyHistogram:
    hist = LatencyHistogram()
    for value in values_ns:
        hist.record(int(value))
    return hist


def _exact_us(values_ns: np.ndarray, pct: float) -> float:
    # The order statistic HdrHistogram targets: the value at rank ceil(pct/100 * n).
    ordered = np.sort(values_ns)
    rank = max(1, int(pct / 100 * len(ordered) + 0.5))
    return ordered[rank - 1] / 1000


@pytest.mark.parametrize(
    "distribution",
    [
        lambda rng: rng.uniform(1_000, 10_000_000, 50_000),  # 1 µs .. 10 ms
        lambda rng: rng.exponential(2_000_000, 50_000) + 1,  # mean 2 ms
        lambda rng: rng.lognormal(13, 1.2, 50_000),  # heavy tail
        lambda rng: np.concatenate(
            [rng.normal(200_000, 10_000, 49_000), rng.normal(80_000_000, 1e6, 1_000)]
        ),  # bimodal: 2 % of ops take 80 ms
    ],
    ids=["uniform", "exponential", "lognormal", "bimodal"],
)
def test_percentiles_match_known_distributions(distribution) -> None:
    values = np.maximum(1, distribution(np.random.default_rng(7))).astype(np.int64)
    summary = _hist(values).summary_us()
    for key, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        exact = _exact_us(values, pct)
        # three significant digits: within 0.1 % (plus one ns of bucket rounding)
        assert summary[key] == pytest.approx(exact, rel=1e-3, abs=1e-3), key
    assert summary["max"] == pytest.approx(values.max() / 1000, rel=1e-3)
    assert summary["min"] == pytest.approx(values.min() / 1000, rel=1e-3)
    assert summary["mean"] == pytest.approx(values.mean() / 1000, rel=2e-3)


def test_constant_latency_and_known_percentiles() -> None:
    hist = _hist(np.full(1000, 5_000_000))
    summary = hist.summary_us()
    for key in ("p50", "p90", "p99", "p999", "max"):
        assert summary[key] == pytest.approx(5000, rel=1e-3)
    # 1..100 ms in 1 ms steps: p50 = 50 ms, p90 = 90 ms, p99 = 99 ms
    hist = _hist(np.arange(1, 101) * 1_000_000)
    summary = hist.summary_us()
    assert summary["p50"] == pytest.approx(50_000, rel=1e-3)
    assert summary["p90"] == pytest.approx(90_000, rel=1e-3)
    assert summary["p99"] == pytest.approx(99_000, rel=1e-3)
    assert summary["max"] == pytest.approx(100_000, rel=1e-3)


def test_empty_histogram_reports_none() -> None:
    summary = LatencyHistogram().summary_us()
    assert set(summary.values()) == {None}
    assert LatencyHistogram.decode(LatencyHistogram().encode()).count == 0


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.exponential(1e6, 5000).astype(int) + 1, rng.exponential(5e6, 7000).astype(int) + 1
    merged = _hist(a).merge(_hist(b))
    assert merged.count == 12_000
    assert merged.summary_us() == _hist(np.concatenate([a, b])).summary_us()


def test_encode_decode_round_trip_preserves_percentiles() -> None:
    values = np.random.default_rng(5).lognormal(12, 1, 20_000).astype(int) + 1
    hist = _hist(values)
    doc = hist.to_dict()
    assert doc["encoding"] == "hdrhistogram-v2-base64" and doc["unit"] == "ns"
    back = LatencyHistogram.from_dict(doc)
    assert back.count == hist.count
    assert back.summary_us() == hist.summary_us()
    cdf = list(back.cdf_us())
    assert cdf[-1][1] == pytest.approx(1.0)
    assert all(x1 <= x2 for (x1, _), (x2, _) in itertools.pairwise(cdf))


def test_huge_latencies_are_clamped_and_counted() -> None:
    hist = LatencyHistogram()
    hist.record(10**13)
    hist.record(-5)
    assert hist.overflows == 1
    assert hist.count == 2


def test_measurement_merge_and_wire_round_trip() -> None:
    a, b = Measurement(window_start_ns=100), Measurement(window_start_ns=100)
    a.record(1_000_000, 10, 0, 10**9)
    b.record(2_000_000, 20, 2 * 10**9, 10**9)
    b.add_error(ValueError("boom"))
    a.merge(Measurement.from_wire(b.to_wire()))
    assert (a.ops, a.bytes, a.errors) == (2, 30, 1)
    assert a.timeline_ops == [1, 0, 1] and a.timeline_bytes == [10, 0, 20]
    assert a.error_types == {"ValueError": 1}
    assert a.error_samples == ["ValueError: boom"]


def test_object_contents_are_deterministic_distinct_and_verified() -> None:
    from dcstore.bench.payload import ObjectSet
    from dcstore.errors import IntegrityError

    a, b = ObjectSet("p", 3 << 20, 3, seed=1), ObjectSet("p", 3 << 20, 3, seed=1)
    assert a.content(2) == b.content(2) and a.content(1) != a.content(2)
    assert ObjectSet("p", 3 << 20, 3, seed=2).content(2) != a.content(2)
    data = a.content(1)
    assert a.verify(1, bytes(bytearray(data))) == len(data)
    assert a.verify(1, data[5 : 2 << 20], 5, 2 << 20) == (2 << 20) - 5
    flipped = bytearray(data)
    flipped[(2 << 20) + 7] ^= 0x40
    with pytest.raises(IntegrityError, match=f"offset {(2 << 20) + 7}"):
        a.verify(1, bytes(flipped))
    with pytest.raises(IntegrityError, match="offset"):
        a.verify(2, data)  # the wrong object
    with pytest.raises(IntegrityError, match="read 10 bytes"):
        a.verify(1, data[:10])
