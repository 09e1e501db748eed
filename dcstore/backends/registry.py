"""``open_backend(url)``: the scheme registry.

Built-in schemes map to ``module:Class`` import paths and are imported only
when used, so a missing driver only matters to the scheme that needs it.
Third-party backends register under the entry-point group
``dcstore.backends`` (name = scheme, value = ``module:Class``). A backend
class provides ``from_url(url: ParsedUrl, options: Options) -> Backend``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, cast

from dcstore.backends.base import Backend
from dcstore.backends.options import Options, parse_url
from dcstore.errors import ConfigError

ENTRY_POINT_GROUP = "dcstore.backends"

BUILTIN_SCHEMES: dict[str, tuple[str, str | None]] = {
    # scheme: (import path, pip extra that provides its driver)
    "memory": ("dcstore.backends.memory:MemoryBackend", None),
    "file": ("dcstore.backends.local:LocalBackend", None),
    "hdfs": ("dcstore.backends.hdfs:HdfsBackend", "hdfs"),
    "viewfs": ("dcstore.backends.hdfs:HdfsBackend", "hdfs"),
    "cassandra": ("dcstore.backends.cassandra:CassandraBackend", "cassandra"),
    "mongodb": ("dcstore.backends.mongodb:MongoBackend", "mongodb"),
    "mongodb+srv": ("dcstore.backends.mongodb:MongoBackend", "mongodb"),
}


def _plugin_schemes() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_schemes() -> list[str]:
    """Every scheme ``open_backend`` accepts, built-in and plugins."""
    return sorted({*BUILTIN_SCHEMES, *_plugin_schemes()})


def _cache_hint(scheme: str) -> str:
    """For a cache tier's scheme given as a store: where that URL goes instead."""
    from dcstore.cache.spec import MEMCACHED_SCHEMES, REDIS_SCHEMES

    if scheme in (*REDIS_SCHEMES, *MEMCACHED_SCHEMES):
        return (
            f" ({scheme}:// is a hot tier in front of a store: pass it as cache=..., CLI --cache)"
        )
    return ""


def _load_class(scheme: str) -> type[Backend]:
    if scheme in BUILTIN_SCHEMES:
        target, extra = BUILTIN_SCHEMES[scheme]
    else:
        plugins = _plugin_schemes()
        if scheme not in plugins:
            raise ConfigError(
                f"unknown storage scheme {scheme!r}; accepted: {', '.join(known_schemes())}"
                + _cache_hint(scheme)
            )
        target, extra = plugins[scheme], None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f": pip install 'dcstore[{extra}]'" if extra else ""
        raise ConfigError(
            f"the {scheme}:// backend needs a driver that is not installed ({exc.name}){hint}"
        ) from exc
    return cast("type[Backend]", getattr(module, class_name))


def open_backend(url: str, **options: Any) -> Backend:
    """Open the storage backend for ``url`` (no cache, no encryption).

    Options come from the URL's query string and from ``options`` (which win).
    Raises :class:`ConfigError` for an unknown scheme, a malformed URL or an
    unknown option, naming the URL (without password or query) and what is accepted.
    """
    parsed = parse_url(url)
    try:
        cls = _load_class(parsed.scheme)
        reader = Options(parsed.scheme, parsed.query, options)
        backend: Backend = cls.from_url(parsed, reader)  # type: ignore[attr-defined]
        reader.finish()
    except ConfigError as exc:
        where = parsed.safe(query={})  # no password, no query (options may hold secrets)
        if where in str(exc):
            raise
        raise type(exc)(f"{where}: {exc}") from exc
    return backend
