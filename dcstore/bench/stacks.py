"""What a benchmark measures: a store stack opened exactly as users open it.

A :class:`StackSpec` names a URL plus the optional cache tier, key source and
backend options, and opens them with :func:`dcstore.store.open_store` (the
function the loader uses), so a figure means what a user gets. Its
description and label never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dcstore.backends.base import Backend
from dcstore.backends.options import parse_url
from dcstore.errors import ConfigError

_SECRET_WORDS = ("pass", "secret", "token", "credential", "auth")
_STACK_FIELDS = ("cache", "keys", "label", "retries")


def redact(spec: str | None) -> str | None:
    """A URL-like spec without its password and secret-looking query values."""
    if spec is None or "://" not in spec:
        return spec
    try:
        parsed = parse_url(spec)
    except ConfigError:
        return "<unparsable>"
    query = {k: ("***" if _is_secret(k) else v) for k, v in parsed.query.items()}
    return parsed.safe(query=query)


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


@dataclass(frozen=True)
class StackSpec:
    """A URL with its cache, keys and options: one thing to benchmark."""

    url: str
    cache: str | None = None
    keys: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    retries: int = 4
    label: str | None = None

    @classmethod
    def parse(cls, text: str, **defaults: Any) -> StackSpec:
        """``URL[;cache=SPEC][;keys=SPEC][;label=NAME][;retries=N]`` (defaults fill gaps)."""
        url, *parts = text.split(";")
        values: dict[str, Any] = dict(defaults)
        for part in parts:
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in _STACK_FIELDS:
                raise ConfigError(
                    f"bad stack part {part!r} in {redact(url)!r}: expected one of "
                    f"{', '.join(f'{n}=...' for n in _STACK_FIELDS)}"
                )
            values[name] = int(value) if name == "retries" else (value or None)
        if not url.strip():
            raise ConfigError(f"empty URL in stack {text!r}")
        return cls(url=url.strip(), **values)

    @property
    def name(self) -> str:
        """The label, or the URL without secrets plus what is stacked on it."""
        if self.label:
            return self.label
        name = redact(self.url) or self.url
        if self.cache:
            name += f" +cache({redact(self.cache)})"
        if self.keys:
            name += " +encrypted"
        return name

    @property
    def process_local(self) -> bool:
        """True for ``memory://``: each process sees its own objects."""
        return self.url.startswith("memory:")

    def describe(self) -> dict[str, Any]:
        """The stack for result files, secrets removed."""
        return {
            "url": redact(self.url),
            "cache": redact(self.cache),
            "keys": redact(self.keys),
            "options": {k: ("***" if _is_secret(k) else v) for k, v in self.options.items()},
            "retries": self.retries,
            "label": self.label,
        }

    def open(self) -> Backend:
        from dcstore.store import open_store

        return open_store(
            self.url, cache=self.cache, keys=self.keys, retries=self.retries, **self.options
        )
