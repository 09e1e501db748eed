"""Deterministic benchmark objects and verification of the bytes read back.

Object ``i`` of a set is ``size`` pseudo-random bytes from SFC64 seeded with
``(seed, size, i)``: incompressible (so compressing stores are not flattered),
distinct per object (so a store returning the wrong object is caught), and
regenerated identically in any process from the seed alone. Contents are
built lazily, once per process, and shared by every thread.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from dcstore.errors import IntegrityError

_BLOCK = 1 << 20


class ObjectSet:
    """``count`` objects of ``size`` bytes stored under ``prefix``."""

    def __init__(self, prefix: str, size: int, count: int, seed: int, *, keep: bool = True):
        if count < 1:
            raise ValueError("an object set needs at least one object")
        self.prefix = prefix.rstrip("/")
        self.size = size
        self.count = count
        self.seed = seed
        self.keep = keep
        """Keep built contents in memory (False: rebuild on every use; for huge sets)."""
        self._contents: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_contents", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._contents = {}
        self._lock = threading.Lock()

    def key(self, index: int) -> str:
        return f"{self.prefix}/obj-{index:06d}"

    def all_keys(self) -> list[str]:
        return [self.key(i) for i in range(self.count)]

    def content(self, index: int) -> bytes:
        """The bytes of object ``index`` (built on first use; kept unless ``keep=False``)."""
        data = self._contents.get(index)
        if data is None:
            words = np.random.SFC64([self.seed, self.size, index]).random_raw(-(-self.size // 8))
            data = words.data.cast("B")[: self.size].tobytes()
            if self.keep:
                with self._lock:
                    data = self._contents.setdefault(index, data)
        return data

    def build(self) -> ObjectSet:
        """Build every object's contents now (before timing starts); return self."""
        if self.keep:
            for index in range(self.count):
                self.content(index)
        return self

    def verify(self, index: int, data: bytes, start: int = 0, end: int | None = None) -> int:
        """Check ``data`` equals bytes ``[start, end)`` of object ``index``; return its length.

        Whole objects compare with one ``memcmp``; ranges in 1 MiB numpy blocks, so a
        check allocates little. Raises :class:`IntegrityError` naming the key and the
        first differing offset.
        """
        end = self.size if end is None else end
        expected = self.content(index)
        actual = memoryview(data).cast("B")
        if actual.nbytes != end - start:
            raise IntegrityError(
                f"{self.key(index)} [{start}, {end}): read {actual.nbytes} bytes, "
                f"expected {end - start}"
            )
        if start == 0 and end == self.size and data == expected:
            return actual.nbytes
        want = memoryview(expected)[start:end]
        for lo in range(0, actual.nbytes, _BLOCK):
            a = np.frombuffer(actual[lo : lo + _BLOCK], dtype=np.uint8)
            b = np.frombuffer(want[lo : lo + _BLOCK], dtype=np.uint8)
            if not np.array_equal(a, b):
                first = lo + int(np.flatnonzero(a != b)[0])
                raise IntegrityError(
                    f"{self.key(index)} [{start}, {end}): bytes read differ from bytes "
                    f"written at offset {start + first}"
                )
        return actual.nbytes
