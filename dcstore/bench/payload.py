"""Deterministic benchmark objects and verification of the bytes read back.

Object ``i`` of a set is ``size`` pseudo-random bytes from SFC64 seeded with
``(seed, size, i)``: incompressible (so compressing stores are not flattered),
distinct per object (so a store returning the wrong object is caught), and
regenerated identically in any process from the seed alone. Contents are
built lazily, once per process, and shared by every thread.
"""

from __future__ import annotations

import threading

import numpy as np

from dcstore.errors import IntegrityError


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
        self._contents: dict[int, memoryview] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_contents", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._contents = {}
        self._lock = threading.Lock()

    def key(self, index: int) -> str:
        return f"{self.prefix}/obj-{index:06d}"

    def all_keys(self) -> list[str]:
        return [self.key(i) for i in range(self.count)]

    def content(self, index: int) -> memoryview:
        """The bytes of object ``index`` (a read-only view; built on first use)."""
        view = self._contents.get(index)
        if view is None:
            words = np.random.SFC64([self.seed, self.size, index]).random_raw(-(-self.size // 8))
            view = memoryview(words).cast("B")[: self.size].toreadonly()
            if self.keep:
                with self._lock:
                    view = self._contents.setdefault(index, view)
        return view

    def verify(self, index: int, data: bytes, start: int = 0, end: int | None = None) -> int:
        """Check ``data`` equals bytes ``[start, end)`` of object ``index``; return its length.

        Raises :class:`IntegrityError` naming the key and the first differing offset.
        """
        end = self.size if end is None else end
        expected = np.frombuffer(self.content(index)[start:end], dtype=np.uint8)
        actual = np.frombuffer(data, dtype=np.uint8)
        if actual.shape != expected.shape:
            raise IntegrityError(
                f"{self.key(index)} [{start}, {end}): read {actual.size} bytes, "
                f"expected {expected.size}"
            )
        if not np.array_equal(actual, expected):
            first = int(np.flatnonzero(actual != expected)[0])
            raise IntegrityError(
                f"{self.key(index)} [{start}, {end}): bytes read differ from bytes written "
                f"at offset {start + first}"
            )
        return int(actual.size)
