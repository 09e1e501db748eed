"""Parsing backend URLs and their options, with errors that say what is accepted."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from dcstore.errors import ConfigError
from dcstore.units import parse_size

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ParsedUrl:
    """A split storage URL. ``password`` is kept out of ``repr`` and :meth:`safe`."""

    scheme: str
    netloc: str
    """``host[:port][,host[:port]...]`` without credentials."""
    path: str
    query: dict[str, str]
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def hosts(self) -> list[str]:
        """Comma-separated ``host[:port]`` entries of the netloc, credentials removed."""
        return [h for h in self.netloc.split(",") if h]

    def safe(self, path: str | None = None, query: Mapping[str, str] | None = None) -> str:
        """The URL without password (and with ``path``/``query`` if given)."""
        user = f"{quote(self.username)}@" if self.username else ""
        q = dict(self.query if query is None else query)
        qs = "&".join(f"{quote(k)}={quote(str(v))}" for k, v in sorted(q.items()))
        p = self.path if path is None else path
        return f"{self.scheme}://{user}{self.netloc}{quote(p)}" + (f"?{qs}" if qs else "")


def parse_url(url: str) -> ParsedUrl:
    """Split ``url``; a plain path (no ``scheme://``) becomes a ``file`` URL."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"storage URL must be a non-empty string, got {url!r}")
    if "\x00" in url:
        raise ConfigError("storage URL contains a NUL character")
    if "://" not in url:
        if ":" in url.split("/", 1)[0] and not url.startswith((".", "/")):
            raise ConfigError(
                f"malformed storage URL {url!r}: expected scheme://... or a filesystem path"
            )
        return ParsedUrl("file", "", os.path.expanduser(url), {})  # ~/data as a shell says
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
        query = dict(pairs)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
    except ValueError as exc:
        raise ConfigError(f"malformed storage URL: {exc}") from None
    if not parts.scheme:
        raise ConfigError("malformed storage URL: missing scheme")
    if len(query) < len(pairs):  # the last one would win without a word
        twice = next(name for name, n in Counter(name for name, _ in pairs).items() if n > 1)
        raise ConfigError(f"URL option {twice!r} is given more than once: give it once")
    hostpart = parts.netloc.rsplit("@", 1)[-1]
    for host in hostpart.split(","):
        _check_port(host, f"{parts.scheme}://{hostpart}")
    return ParsedUrl(parts.scheme.lower(), hostpart, unquote(parts.path), query, username, password)


def _check_port(host: str, where: str) -> None:
    """A port after ``host:`` (``[v6]:port`` too) must be 1..65535: drivers raise their
    own ValueError for it, or wrap it around (Cassandra's 99999 connected to 34463)."""
    _, colon, port = host.rpartition("]")[2].rpartition(":")
    if colon and port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"malformed URL {where}: port {port!r} is not 1..65535")


class Options:
    """Typed access to URL query options merged with keyword options.

    Keyword options win over query options. Call :meth:`finish` once all
    options were read: anything left over is an unknown option.
    """

    def __init__(self, scheme: str, query: Mapping[str, str], kwargs: Mapping[str, Any]):
        self._scheme = scheme
        self._values: dict[str, Any] = {**query, **kwargs}
        self._accepted: list[str] = []

    def _take(self, name: str) -> Any:
        self._accepted.append(name)
        return self._values.pop(name, None)

    def raw(self, name: str, default: Any = None) -> Any:
        value = self._take(name)
        return default if value is None else value

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self._take(name)
        return default if value is None else str(value)

    def _parsed(self, name: str, default: T, parse: Callable[[Any], T], what: str) -> T:
        """``parse(value)`` of option ``name`` (``default`` when absent); a value it
        refuses is a :class:`ConfigError` naming the option."""
        value = self._take(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ConfigError as exc:  # the parser's own message says what it takes
            raise ConfigError(f"option {name!r}: {exc}") from None
        except (TypeError, ValueError):
            raise ConfigError(f"option {name!r} must be {what}, got {value!r}") from None

    def integer(self, name: str, default: int) -> int:
        return self._parsed(name, default, int, "an integer")

    def size(self, name: str, default: int) -> int:
        """A byte count: ``4194304``, or as people write it (``4MiB``, ``64KiB``)."""
        return self._parsed(name, default, parse_size, "a size")

    def number(self, name: str, default: float) -> float:
        return self._parsed(name, default, float, "a number")

    def flag(self, name: str, default: bool) -> bool:
        value = self._take(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"option {name!r} must be true or false, got {value!r}")

    def finish(self) -> None:
        """Raise :class:`ConfigError` naming any option that was not read."""
        if self._values:
            unknown = ", ".join(sorted(self._values))
            accepted = ", ".join(sorted(set(self._accepted))) or "none"
            raise ConfigError(
                f"unknown option(s) {unknown} for {self._scheme}:// URLs; accepted: {accepted}"
            )
