"""The Backend contract: a minimal, synchronous object store.

Every storage backend and every wrapper (cache, encryption, retries) is a
:class:`Backend`. The guarantees below are checked for each of them by
:mod:`dcstore.testing.conformance`.

Guarantees
----------
* ``put`` is atomic: a concurrent or later reader sees the old object or the
  whole new one, never a prefix or a mix. An interrupted put leaves the
  previous object readable.
* ``open_write(key)`` returns a file-like :class:`ObjectWriter` committed
  atomically by ``close()`` and discarded by ``abort()`` or an exception in its
  ``with`` block; ``open_read(key, version=)`` a seekable :class:`ObjectReader` of
  one version, read in ranges (see :mod:`dcstore.backends.objectio`). Both keep
  memory bounded by a few chunks whatever the object's size, on every store that
  overrides ``open_write`` (all of dcstore's; the default collects in memory).
* ``put_stream(key, chunks, size)`` is ``put`` of an object given as an
  iterable of buffers of ``size`` bytes in all, through ``open_write``; a
  stream of another length fails with :class:`IntegrityError` and writes
  nothing.
* ``get_range(key, start, end)`` returns exactly bytes ``[start, end)``;
  ``0 <= start <= end <= size`` or :class:`InvalidRangeError`.
* ``head`` returns the size and a version token that changes on every
  overwrite (even with identical content), and ``modified``: the store's time
  of the write that made the current version (None when it cannot say), never
  earlier after an overwrite (every store dcstore ships makes it later, even on a
  clock that steps back).
* Reads take a keyword-only ``version=`` (a token from ``head``, ``put`` or
  ``list_objects``): ``get``, ``get_range``, ``map_range`` and ``head`` then serve
  exactly that version or raise :class:`VersionChangedError`, at the cost of
  the metadata the read fetches anyway. A version is immutable, so a layer that
  still holds its bytes (the cache) may serve them after the origin replaced
  the object; a read without ``version=`` always gets the current object.
* ``list_objects(prefix)`` is lazy and yields :class:`ObjectMeta` sorted by key;
  ``prefix`` is a plain string prefix of the key.
* ``delete`` is idempotent: deleting a missing key is not an error.
* Keys follow :mod:`dcstore.backends.keys`; bad keys raise
  :class:`InvalidKeyError` before any I/O.
* Missing objects raise :class:`NotFoundError`, transient failures
  :class:`BackendUnavailableError`.
* ``str(backend)`` is its URL without secrets.
* A backend pickles; connections are reopened lazily in the receiving
  process, so a ``torch.utils.data.DataLoader`` can ship it to workers.
* Methods are thread-safe.

Declared capabilities (defaults here; every :class:`Wrapper` forwards them to the
backend it wraps, so stacking one more wrapper never switches them off):
``read_alignment`` (the byte granularity reads should align to: an encrypted store's
segment size), ``encryption_key_id`` (the key new objects are encrypted under),
``authenticates_reads`` (every byte read was authenticated: AES-GCM) and
``sweep(older_than=)`` (reclaim what abandoned writes left behind).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from dcstore.backends.keys import validate_key
from dcstore.backends.objectio import MemoryWriter, ObjectReader, ObjectWriter
from dcstore.backends.streams import Buffer, sized
from dcstore.errors import InvalidRangeError, VersionChangedError

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations are not evaluated at run time

__all__ = [
    "Backend",
    "Buffer",
    "ObjectMeta",
    "ObjectReader",
    "ObjectWriter",
    "Wrapper",
    "check_range",
    "check_version",
]


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What ``head`` and ``list_objects`` report about one object."""

    key: str
    size: int
    version: str
    """Opaque token; different for every write of the key."""
    modified: float | None = field(default=None, compare=False)
    """Seconds since the Unix epoch (UTC) of the write that made this version, by the
    store's clock, or None when unknown. ``head`` without ``version=`` and
    ``list_objects`` fill it on every store dcstore ships; ``put``, a writer's ``meta``
    and a head pinned to a version (served from a cache tier's memory, say) may leave
    it None. Not compared: metas of one version are equal whether or not they carry it."""


class Backend(abc.ABC):
    """Abstract object store; see the module docstring for the guarantees."""

    @abc.abstractmethod
    def get(self, key: str, *, version: str | None = None) -> bytes:
        """Return the whole object (exactly ``version`` when given)."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        """Return bytes ``[start, end)`` of the object (exactly ``version`` when given)."""

    @abc.abstractmethod
    def put(self, key: str, data: Buffer) -> ObjectMeta:
        """Atomically create or replace the object; return its new metadata."""

    def map_range(
        self, key: str, start: int, end: int, *, version: str | None = None
    ) -> memoryview | None:
        """Bytes ``[start, end)`` as a read-only view of a memory mapping, or ``None``.

        Only a store whose objects are local files maps them (the page cache, no
        copy); every other store returns ``None`` and the caller uses ``get_range``.
        The view owns its mapping: it stays valid as long as the view (or a slice
        of it) is alive. Wrappers that pass bytes through unchanged forward it.
        """
        return None

    def map_object(self, key: str, *, version: str | None = None) -> memoryview | None:
        """The whole object as a read-only view of a memory mapping, or ``None``.

        As :meth:`map_range`, but nothing is read up front: pages come in (from the
        page cache, or the disk) as the view is read, so a reader of a few ranges of a
        large object maps it once and slices it, paying only for what it touches.
        The view is of the version opened (``version``, or the current one) and owns
        its mapping. Stores that cannot map return ``None``.
        """
        return None

    def open_write(self, key: str) -> ObjectWriter:
        """A writer of a new version of ``key``, visible once closed (atomically).

        This default collects the object in memory and calls ``put`` on close; stores
        that can write incrementally override it (every store dcstore ships does).
        """
        validate_key(key)
        return MemoryWriter(f"{self.url}: put {key!r}", lambda data: self.put(key, data))

    def open_read(self, key: str, *, version: str | None = None) -> ObjectReader:
        """A seekable reader of one version of ``key`` (the current one when None),
        fetched in ranged reads aligned to ``read_alignment``."""
        meta = self.head(key, version=version)
        return ObjectReader(
            meta,
            lambda start, end: self.get_range(key, start, end, version=meta.version),
            align=self.read_alignment,
            what=f"{self.url}: {key!r}",
        )

    def put_stream(self, key: str, chunks: Iterable[Buffer], size: int) -> ObjectMeta:
        """``put`` of the concatenation of ``chunks`` (exactly ``size`` bytes), written
        through ``open_write``: a stream of another length commits nothing. Each chunk
        is written before the next is pulled, so a producer may reuse one buffer."""
        with self.open_write(key) as writer:
            writer.expect_size(size)
            for view in sized(chunks, size, f"{self.url}: put {key!r}"):
                writer.write(view)
        assert writer.meta is not None
        return writer.meta

    @abc.abstractmethod
    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        """Return size and version of the object (exactly ``version`` when given)."""

    @abc.abstractmethod
    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """Yield every object whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL that reopens this backend, without secrets."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections; the backend reopens lazily if used again."""

    # -- declared capabilities ------------------------------------------------------------

    @property
    def read_alignment(self) -> int | None:
        """Reads starting and ending on multiples of this many bytes cost least (an
        encrypted store's segment size); None: any range is as cheap."""
        return None

    @property
    def encryption_key_id(self) -> str | None:
        """The id of the key new objects are encrypted under; None: stored as given."""
        return None

    @property
    def authenticates_reads(self) -> bool:
        """Whether every byte a read returns was authenticated on the way (AES-GCM): a
        reader's own checksums of those bytes would check nothing more."""
        return False

    @property
    def caches(self) -> bool:
        """Whether a cache tier in this stack may serve reads: checks of the storage
        itself (key rotation, retirement, ``verify``) refuse such a stack."""
        return False

    def sweep(self, older_than: float | None = None) -> int | None:
        """Reclaim the data of writes abandoned more than ``older_than`` seconds ago (the
        backend's own default when None); return how many writes were reclaimed, or None
        when this backend never leaves any behind."""
        return None

    def drop_cached(self, key: str, version: str) -> bool:
        """Forget every copy of ``version`` of ``key`` that a cache in this stack holds
        (one that failed to authenticate, say), so the next read of it fetches the
        origin's bytes. True if the stack has a cache (which holds none of it now), so
        a read again goes to the origin; no cache here: False."""
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def check_range(key: str, start: int, end: int, size: int) -> None:
    """Raise :class:`InvalidRangeError` unless ``0 <= start <= end <= size``."""
    if end < start:  # was "is outside object", as if the object were too small
        raise InvalidRangeError(
            f"range [{start}, {end}) of object {key!r} ends before it starts: give an end "
            f">= the start ({start})"
        )
    if not (0 <= start <= end <= size):
        raise InvalidRangeError(f"range [{start}, {end}) is outside object {key!r} of {size} bytes")


def check_version(url: str, key: str, expected: str | None, actual: str) -> None:
    """Raise :class:`VersionChangedError` unless ``expected`` is None or ``actual``."""
    if expected is not None and expected != actual:
        raise VersionChangedError(
            f"{url}: object {key!r} changed: it is version {actual}, the read asked for {expected}"
        )


class Wrapper(Backend):
    """A backend in front of another one (``inner``): retries, cache, encryption,
    instrumentation. Forwards the declared capabilities; a wrapper that changes one
    (encryption sets the alignment, the key id and authenticated reads) overrides it."""

    inner: Backend

    @property
    def read_alignment(self) -> int | None:
        return self.inner.read_alignment

    @property
    def encryption_key_id(self) -> str | None:
        return self.inner.encryption_key_id

    @property
    def authenticates_reads(self) -> bool:
        return self.inner.authenticates_reads

    @property
    def caches(self) -> bool:
        return self.inner.caches

    def sweep(self, older_than: float | None = None) -> int | None:
        return self.inner.sweep(older_than)

    def drop_cached(self, key: str, version: str) -> bool:
        return self.inner.drop_cached(key, version)
