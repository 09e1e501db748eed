"""Lists of benchmark options, and sizes, durations and rates formatted for tables
(parsing sizes and durations: :mod:`dcstore.units`). Throughput is always reported in
decimal MB/s (10**6 bytes per second).
"""

from __future__ import annotations

from typing import Any

from dcstore.errors import ConfigError


def parse_list(text: str, parse: type[int] | object = int) -> list[Any]:
    """Split ``"1,4,8"`` and parse each item with ``parse``; duplicates are dropped."""
    items = [part.strip() for part in str(text).split(",") if part.strip()]
    if not items:
        raise ConfigError(f"empty list {text!r}")
    out: list[Any] = []
    for item in items:
        try:
            value = parse(item)  # type: ignore[operator]
        except ValueError as exc:
            raise ConfigError(f"bad list item {item!r}: {exc}") from None
        if value not in out:
            out.append(value)
    return out


def format_size(size: int | float) -> str:
    """Binary units, exact when possible: 4194304 -> ``"4MiB"``, 1500 -> ``"1.46KiB"``."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.3g}{unit}"
    return f"{int(size)}B"


def format_latency_us(value_us: float | None) -> str:
    """A latency in microseconds as ``"850µs"``, ``"12.3ms"`` or ``"1.20s"``."""
    if value_us is None:
        return "-"
    if value_us < 1000:
        return f"{value_us:.0f}µs"
    if value_us < 1_000_000:
        return f"{value_us / 1000:.3g}ms"
    return f"{value_us / 1e6:.3g}s"


def format_rate(value: float | None, digits: int = 4) -> str:
    """A rate with a sensible number of significant digits (``"1234"``, ``"12.35"``)."""
    if value is None:
        return "-"
    if value >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"
