"""The cache-tier contract: a bounded, shared key-value store of chunks.

A tier stores opaque chunk bytes under string keys, offers leases for
single-flight and keeps the shared statistics. It knows nothing about objects,
versions or chunking: :class:`dcstore.cache.CachedBackend` does that. Tiers
raise :class:`CacheUnavailableError` for every failure of the store itself;
the backend turns those into origin reads, so a tier fault never fails a read.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dcstore.backends.base import Buffer
from dcstore.backends.options import Options
from dcstore.errors import BackendUnavailableError, ConfigError

MiB = 1 << 20

STAT_FIELDS = (
    "hits",
    "misses",
    "bytes_from_cache",
    "bytes_from_origin",
    "single_flight_waits",
    "errors",
    "not_admitted",
)
"""Counters every tier keeps (``hit_ratio`` is derived from hits and misses)."""


class CacheUnavailableError(BackendUnavailableError):
    """The cache tier cannot be reached or refused an operation (down, timeout, OOM)."""


class CacheFullError(CacheUnavailableError):
    """The tier refused a write for want of memory (Redis ``noeviction``, memcached
    ``-M``): it still answers, and serves what it holds."""


@dataclass(frozen=True)
class CachePolicy:
    """How :class:`~dcstore.cache.CachedBackend` uses a tier (set from the tier URL).

    * ``chunk_bytes``: objects are cached as chunks of this size (the last is shorter).
    * ``max_object_bytes``: larger objects are never cached (admission limit).
    * ``ttl``: seconds a chunk lives in the tier; ``None`` = until evicted.
    * ``single_flight``: concurrent misses of one object fetch it from the origin once.
    * ``lease_ttl``: seconds a fetcher's lease lives; a dead fetcher's lease expires
      and a waiter takes over.
    * ``wait_timeout``: longest a waiter waits for another fetcher before it reads
      the origin itself.
    * ``retry_interval``: seconds between attempts to use a tier that failed.
    * ``stats_interval``: seconds between flushes of this process's counters.
    """

    chunk_bytes: int = 4 * MiB
    max_object_bytes: int = 256 * MiB
    ttl: float | None = None
    single_flight: bool = True
    lease_ttl: float = 30.0
    wait_timeout: float = 60.0
    retry_interval: float = 1.0
    stats_interval: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_bytes <= 512 * MiB:
            raise ConfigError(f"chunk_bytes must be in 1..{512 * MiB}, got {self.chunk_bytes}")
        if self.max_object_bytes < 0:
            raise ConfigError("max_object_bytes must be >= 0")
        if self.ttl is not None and self.ttl <= 0:
            raise ConfigError("ttl must be positive (omit it for no expiry)")
        for name in ("lease_ttl", "wait_timeout", "retry_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.stats_interval < 0:
            raise ConfigError("stats_interval must be >= 0")

    @classmethod
    def from_options(cls, options: Options) -> CachePolicy:
        """Read the policy options from a :class:`dcstore.backends.options.Options`."""
        d = cls()
        ttl = options.number("ttl", math.inf)  # omitted (or inf): no expiry; 0 is refused
        return cls(
            chunk_bytes=options.size("chunk_bytes", d.chunk_bytes),
            max_object_bytes=options.size("max_object_bytes", d.max_object_bytes),
            ttl=None if math.isinf(ttl) else ttl,
            single_flight=options.flag("single_flight", d.single_flight),
            lease_ttl=options.number("lease_ttl", d.lease_ttl),
            wait_timeout=options.number("wait_timeout", d.wait_timeout),
            retry_interval=options.number("retry_interval", d.retry_interval),
            stats_interval=options.number("stats_interval", d.stats_interval),
        )

    def query(self) -> dict[str, str]:
        """The options that differ from the defaults, as URL query items."""
        d = CachePolicy()
        out: dict[str, str] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value != getattr(d, name):
                out[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


class CacheTier(abc.ABC):
    """A bounded store of chunks shared by the readers of one namespace.

    Guarantees: ``get_many`` returns each value exactly as stored or ``None``
    (evicted, expired, never stored); values are never partial. Methods are
    thread-safe. A tier pickles without its connections (and without a
    password read from a file); it reconnects lazily.
    """

    policy: CachePolicy
    namespace: str
    slice_ratio: float = 4
    """A range smaller than ``1/slice_ratio`` of the chunks covering it is read with
    :meth:`get_slices` instead of whole chunks (tiers that emulate slices by fetching
    whole values keep this to small ranges)."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The tier's URL without secrets."""

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str], sizes: Sequence[int]) -> list[Buffer | None]:
        """The value of each of ``keys`` (all in one hash slot), or ``None`` where it is
        missing or its size is not the expected one in ``sizes`` (a damaged entry: a
        miss of that key only, which the reader's refill overwrites; the other values are
        served). Never a value of another size: :class:`~dcstore.cache.CachedBackend`
        relies on this check and does not repeat it.

        A value may be a view into a buffer the tier reuses: it stays valid only
        until the calling thread's next ``get_many``; copy what must live longer.
        """

    @abc.abstractmethod
    def get_slices(self, items: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """Bytes ``[start, end)`` of each ``(key, start, end)`` (one hash slot), or
        ``None`` where the value is missing (``end`` must lie inside the value)."""

    @abc.abstractmethod
    def set_many(self, items: Sequence[tuple[str, Buffer]]) -> None:
        """Store every item (with the policy's TTL); order of visibility is unspecified."""

    @abc.abstractmethod
    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove the keys; missing keys are fine."""

    @abc.abstractmethod
    def try_leases(self, keys: Sequence[str], token: str, ttl: float) -> list[bool]:
        """For each lease key (one hash slot): take it for ``ttl`` seconds unless held."""

    @abc.abstractmethod
    def leases_held(self, keys: Sequence[str]) -> bool:
        """Whether anyone holds any of the leases."""

    @abc.abstractmethod
    def release_leases(self, keys: Sequence[str], token: str) -> None:
        """Drop each lease that ``token`` still holds."""

    @abc.abstractmethod
    def add_stats(self, counts: Mapping[str, int]) -> None:
        """Add this process's counters to the namespace's shared statistics."""

    @abc.abstractmethod
    def read_stats(self) -> dict[str, int]:
        """The namespace's shared counters (every :data:`STAT_FIELDS` entry)."""

    @abc.abstractmethod
    def clear(self) -> int:
        """Remove every key of the namespace (chunks, leases, stats); return how many."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Drop connections; the tier reconnects if used again."""

    def servers_out(self) -> list[str]:
        """The servers (``host:port``) this process has taken out of use for failing (a
        tier of several servers works on without them); none by default."""
        return []

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def with_ratio(stats: Mapping[str, int]) -> dict[str, float | int]:
    """``stats`` plus ``hit_ratio`` = hits / (hits + misses) (0.0 with no reads)."""
    out: dict[str, float | int] = {name: int(stats.get(name, 0)) for name in STAT_FIELDS}
    reads = out["hits"] + out["misses"]
    out["hit_ratio"] = out["hits"] / reads if reads else 0.0
    return out
