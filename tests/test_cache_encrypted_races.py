"""Unpinned ranged reads of an encrypted store behind a cache tier, under overwrites.

Outside test: with a writer overwriting the object in a loop, ``get_range`` without
``version=`` of an encrypted store behind Redis raised ``VersionChangedError`` in about
a fifth of the reads (0 % without a cache): each attempt through the tier costs more
round trips to the origin, so all three attempts lost the race more often. Then it now
makes as many attempts again past the tiers, as a store without them does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from dcstore.backends.base import Buffer
from dcstore.cache.lru import LruTier
from dcstore.crypto import Keyring, write_key_file
from dcstore.errors import VersionChangedError
from dcstore.store import open_store


class OverwritingTier(LruTier):
    """An in-process tier that has the object overwritten at the origin whenever it is
    asked for chunks, as a busy writer elsewhere would between the version's lookup and
    the fill."""

    def __init__(self, overwrite: object) -> None:
        super().__init__()
        self.overwrite = overwrite
        self.overwrites = 0

    def _race(self) -> None:
        self.overwrites += 1
        self.overwrite(self.overwrites)  # type: ignore[operator]

    def get_many(
        self, keys: Sequence[str], sizes: Sequence[int], exact: bool = True
    ) -> list[Buffer | None]:
        self._race()
        return super().get_many(keys, sizes, exact)

    def get_slices(self, items: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        self._race()
        return super().get_slices(items)


def test_an_unpinned_ranged_read_outlasts_overwrites_through_the_cache(tmp_path: Path) -> None:
    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    keys = f"file://{keyfile}"
    url = str(tmp_path / "s")
    writer = open_store(url, keys=keys)  # no cache: the writer of another process
    writer.put("k", bytes([0]) * 300_000)
    tier = OverwritingTier(lambda n: writer.put("k", bytes([n % 256]) * 300_000))
    store = open_store(url, keys=keys, cache=tier)
    got = store.get_range("k", 1000, 200_000)
    assert len(got) == 199_000 and len(set(got)) == 1  # one whole version
    assert tier.overwrites >= 3  # every attempt through the tier lost the race
    # a pinned read still raises: the caller asked for that version
    version = writer.head("k").version
    writer.put("k", bytes([7]) * 300_000)
    with pytest.raises(VersionChangedError):
        store.get_range("k", 0, 10, version=version)
