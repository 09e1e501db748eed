"""``open_store``: the canonical stack every user, the loader and the benchmarks open.

Data flows down on write and up on read::

    EncryptedBackend   (keys=...)   plaintext above, ciphertext below
    CachedBackend      (cache=...)  read-through hot tier: holds ciphertext only
    RetryingBackend    (retries=)   transient errors retried with backoff
    Backend            (url)        local | memory | hdfs | cassandra | mongodb
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeAlias

from dcstore.backends.base import Backend
from dcstore.backends.registry import open_backend
from dcstore.errors import ConfigError
from dcstore.retry import RetryingBackend, RetryPolicy
from dcstore.units import parse_size, whole_number

if TYPE_CHECKING:
    from dcstore.cache.tier import CacheTier
    from dcstore.crypto.keyring import Keyring
    from dcstore.crypto.sources import KeySource

CacheSpec: TypeAlias = "CacheTier | str"
"""A cache tier, or its URL (``"memory"``, ``"redis://host:6379/0"``, ...)."""
KeySpec: TypeAlias = "KeySource | Keyring | str | os.PathLike[str]"
"""A key source, a keyring, ``file:///abs/kek.json`` or a path to a key file."""


def open_store(
    url: str | os.PathLike[str] | Backend,
    *,
    cache: CacheSpec | None = None,
    keys: KeySpec | None = None,
    retries: int = 4,
    segment_size: int | str | None = None,
    **options: Any,
) -> Backend:
    """Open ``url`` with optional hot-tier ``cache`` and encryption ``keys``.

    ``url`` may already be a :class:`Backend` (then ``options`` must be empty); a
    ``pathlib.Path`` is a local store, as its string is.
    ``cache`` is a cache tier or its URL (``"memory"``, ``"redis://host:6379/0"``);
    ``keys`` is a key source or its URL (``"file:///etc/dcstore/kek.json"``).
    ``retries`` is the number of attempts for transient failures (1 disables).
    ``segment_size`` is the encrypted segment size of objects written (default 4 MiB;
    readers take it from each object's header; bytes or a size such as ``"64KiB"``): smaller
    segments make small random reads cheaper (one segment is fetched and authenticated whole).
    """
    retries = whole_number("retries", retries)
    if isinstance(url, os.PathLike):  # a pathlib.Path: a local store, as a path string is
        url = os.fspath(url)
    if segment_size is not None and keys is None:
        raise ConfigError("segment_size sets the size of encrypted segments: it needs keys=")
    if isinstance(url, Backend):
        if options:
            raise TypeError("options are only accepted with a URL")
        backend = url
    else:
        backend = open_backend(url, **options)
    if retries > 1:
        backend = RetryingBackend(backend, RetryPolicy(attempts=retries))
    if cache is not None:
        from dcstore.cache import CachedBackend, open_cache_tier

        backend = CachedBackend(backend, open_cache_tier(cache))
    if keys is not None:
        from dcstore.crypto import EncryptedBackend, open_key_source

        if backend.authenticates_reads:
            raise ConfigError(
                f"{backend.url}: this store already encrypts: give keys= once (a second "
                "layer would hand readers of the store ciphertext)"
            )

        sized = {} if segment_size is None else {"segment_size": _segment_size(segment_size)}
        backend = EncryptedBackend(backend, open_key_source(keys), **sized)
    return backend


def _segment_size(value: int | str) -> int:
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise ConfigError(f"segment_size: {exc}") from None


def store_for(
    url_or_store: str | os.PathLike[str] | Backend, *, cache: CacheSpec | None = None,
    keys: KeySpec | None = None, segment_size: int | str | None = None,
) -> Backend:  # fmt: skip
    """``url_or_store`` itself when it is a :class:`Backend` and nothing asks for a stack,
    else :func:`open_store` of it with ``cache``, ``keys`` and ``segment_size``."""
    if isinstance(url_or_store, Backend) and (cache, keys, segment_size) == (None, None, None):
        return url_or_store
    return open_store(url_or_store, cache=cache, keys=keys, segment_size=segment_size)
