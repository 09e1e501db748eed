"""A Backend wrapper that counts reads and can make the origin slow.

``InstrumentedBackend(inner, latency=0.02, bandwidth=200e6, log=path)`` sleeps
``latency`` seconds per read request plus ``bytes / bandwidth``, counts reads
and bytes in this process, and (with ``log``) appends ``<pid> <bytes>`` per
read to a file so several processes' origin traffic can be summed with
:func:`logged_bytes`. It counts ``head`` requests too (``heads``); writes,
``list_objects`` and ``delete`` pass through untouched. It pickles (counters restart in
the receiving process), so it can stand in as a deliberately slow origin under a
DataLoader.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dcstore.backends.base import Backend, Buffer, ObjectMeta, ObjectWriter, Wrapper


class InstrumentedBackend(Wrapper):
    """``inner`` with read counters and optional injected latency and bandwidth."""

    def __init__(
        self,
        inner: Backend,
        *,
        latency: float = 0.0,
        bandwidth: float = 0.0,
        log: str | os.PathLike[str] | None = None,
    ):
        self.inner, self.latency, self.bandwidth = inner, latency, bandwidth
        self.log = os.fspath(log) if log is not None else None
        self._lock = threading.Lock()
        self.gets = 0
        self.heads = 0
        self.ranges: list[tuple[str, int, int]] = []
        self.bytes_read = 0

    @property
    def reads(self) -> int:
        """Read requests (``get`` and ``get_range``) seen in this process."""
        return self.gets + len(self.ranges)

    def _record(self, nbytes: int) -> None:
        delay = self.latency + (nbytes / self.bandwidth if self.bandwidth else 0.0)
        if delay:
            time.sleep(delay)
        with self._lock:
            self.bytes_read += nbytes
        if self.log:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{os.getpid()} {nbytes}\n".encode())
            finally:
                os.close(fd)

    @property
    def url(self) -> str:
        return self.inner.url

    def get(self, key: str, *, version: str | None = None) -> bytes:
        data = self.inner.get(key, version=version)
        with self._lock:
            self.gets += 1
        self._record(len(data))
        return data

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        data = self.inner.get_range(key, start, end, version=version)
        with self._lock:
            self.ranges.append((key, start, end))
        self._record(len(data))
        return data

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        return self.inner.put(key, data)

    def open_write(self, key: str) -> ObjectWriter:
        return self.inner.open_write(key)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        meta = self.inner.head(key, version=version)
        with self._lock:
            self.heads += 1
        return meta

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self.inner.list_objects(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "inner": self.inner,
            "latency": self.latency,
            "bandwidth": self.bandwidth,
            "log": self.log,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        inner = state.pop("inner")
        self.__init__(inner, **state)  # type: ignore[misc]


def logged_bytes(log: str | os.PathLike[str]) -> int:
    """Bytes read by every process that logged to ``log`` (0 if nothing was logged)."""
    path = Path(log)
    if not path.exists():
        return 0
    return sum(int(line.split()[1]) for line in path.read_text().splitlines() if line)
