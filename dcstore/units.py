"""Sizes, durations and counts as people write them: the one parser the CLI, ``dcstore
bench``, the loaders and the benchmark scripts share.

Sizes take binary (``KiB``, ``MiB``, ``GiB``, ``TiB``) and decimal (``k``/``KB``, ``MB``,
``GB``) suffixes, case-insensitively; a bare number is bytes. Durations take ``us``,
``ms``, ``s``, ``m``/``min`` and ``h``; a bare number is seconds.
"""

from __future__ import annotations

import operator
import re

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
    if not isinstance(text, str):
        if isinstance(text, bool) or not hasattr(text, "__index__"):  # ints, numpy's too
            raise ConfigError(f"bad size {text!r}: use e.g. 64KiB, 1MiB, 4MiB, 64MiB or bytes")
        value, unit = float(operator.index(text)), ""
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


def whole_number(name: str, value: object, minimum: int = 0) -> int:
    """``value`` as an ``int`` of at least ``minimum``; else a :class:`ConfigError` naming
    ``name`` (a float, a string, a ``bool`` or ``None`` is refused, not rounded, parsed
    or taken for 0 and 1)."""
    if isinstance(value, bool):  # batched(True) made batches of one
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number
