"""An object overwritten during every attempt of an unpinned encrypted read: a whole
``get`` still returns one whole version (one unpinned read below, decrypted in memory);
a ranged or pinned read reports the change. Found by the full-stack conformance suite
over Cassandra (tests/test_cassandra.py::TestCassandraStoreConformance)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dcstore.backends.base import Buffer, ObjectMeta, Wrapper
from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource
from dcstore.errors import VersionChangedError


class AlwaysReplaced(Wrapper):
    """Every read that asks for a version finds the object replaced meanwhile."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner

    @property
    def url(self) -> str:
        return self.inner.url

    def _race(self, key: str, version: str | None) -> None:
        if version is not None:
            raise VersionChangedError(f"{self.url}: object {key!r} changed")

    def get(self, key: str, *, version: str | None = None) -> bytes:
        self._race(key, version)
        return self.inner.get(key)

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        self._race(key, version)
        return self.inner.get_range(key, start, end)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        return self.inner.head(key)

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        return self.inner.put(key, data)

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self.inner.list_objects(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


@pytest.mark.parametrize("size", [1000, 3 << 20])
def test_a_whole_get_returns_one_version_however_busy_the_writers(size: int) -> None:
    store = EncryptedBackend(AlwaysReplaced(MemoryBackend("memory://busy")),
                             StaticKeySource(Keyring.generate()), segment_size=65536)  # fmt: skip
    data = bytes(range(256)) * (size // 256)
    meta = store.put("k", data)
    assert store.get("k") == data
    with pytest.raises(VersionChangedError):
        store.get_range("k", 10, 20)
    with pytest.raises(VersionChangedError):
        store.get("k", version=meta.version)
