"""Parsing and formatting sizes, durations and rates for benchmark options and tables.

Sizes accept binary (``KiB``, ``MiB``, ``GiB``) and decimal (``KB``, ``MB``,
``GB``) suffixes, case-insensitively; a bare number is bytes. Throughput is
always reported in decimal MB/s (10**6 bytes per second).
"""

from __future__ import annotations

import re
from typing import Any

from dcstore.errors import ConfigError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"4MiB"`` -> 4194304; ``"64KiB"``, ``"1.5MB"``, ``"100"`` (bytes) also accepted."""
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        match = _NUMBER.match(text)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ConfigError(f"bad size {text!r}: use e.g. 64KiB, 1MiB, 4MiB, 64MiB or bytes")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _SIZE_UNITS[unit])
    if size < 0 or size != value * _SIZE_UNITS[unit]:
        raise ConfigError(f"bad size {text!r}: must be a whole number of bytes")
    return size


def parse_duration(text: str | float) -> float:
    """``"10s"`` -> 10.0; ``"500ms"``, ``"2m"``, ``"1.5"`` (seconds) also accepted."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _NUMBER.match(text)
        if not match or match.group(2).lower() not in _DURATION_UNITS:
            raise ConfigError(f"bad duration {text!r}: use e.g. 10s, 500ms, 2m")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if seconds < 0:
        raise ConfigError(f"bad duration {text!r}: must not be negative")
    return seconds


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
