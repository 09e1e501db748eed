"""What the URLs of shared tiers have in common: host lists and namespaces."""

from __future__ import annotations

import re

from dcstore.errors import ConfigError

NAMESPACE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
"""A namespace is a key prefix: short, and safe in any store's keys."""


def check_namespace(namespace: str) -> str:
    """``namespace`` if valid, else :class:`ConfigError`."""
    if not NAMESPACE.match(namespace):
        raise ConfigError(f"cache namespace must match {NAMESPACE.pattern}, got {namespace!r}")
    return namespace


def check_timeouts(what: str, **seconds: float) -> None:
    """:class:`ConfigError` unless every timeout is positive: zero or less cannot work
    (a tier that always times out would look down forever)."""
    bad = {name: value for name, value in seconds.items() if not value > 0}
    if bad:
        shown = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise ConfigError(f"{what} timeouts must be positive, got {shown}")


def parse_host(entry: str, default_port: int, what: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6addr]:port`` of a ``what`` server."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.lstrip(":")
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, ""
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise ConfigError(f"bad {what} host {entry!r}: expected host:port") from None


def query_string(items: dict[str, object | None]) -> str:
    """``?k=v&...`` of the items that are not ``None`` (sorted, quoted), or ``""``."""
    from urllib.parse import quote

    qs = "&".join(f"{k}={quote(str(v))}" for k, v in sorted(items.items()) if v is not None)
    return f"?{qs}" if qs else ""
