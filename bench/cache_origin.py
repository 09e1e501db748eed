"""A deliberately slow origin for the cache benchmarks: latency and bandwidth injection.

``SlowOrigin(inner, latency=0.02, bandwidth=200e6, log=path)`` sleeps ``latency``
seconds per read request plus ``bytes / bandwidth``, and (with ``log``) appends
``<pid> <bytes>`` per read to a file so several processes' origin traffic can
be summed with :func:`origin_bytes`. It pickles (DataLoader workers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dcstore.backends.base import Backend, Buffer, ObjectMeta


class SlowOrigin(Backend):
    """``inner`` with injected read latency and bandwidth; every other call passes through."""

    def __init__(
        self, inner: Backend, latency: float = 0.02, bandwidth: float = 0.0, log: str | None = None
    ):
        self.inner, self.latency, self.bandwidth, self.log = inner, latency, bandwidth, log

    def _slow(self, nbytes: int) -> None:
        delay = self.latency + (nbytes / self.bandwidth if self.bandwidth else 0.0)
        if delay:
            time.sleep(delay)
        if self.log:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{os.getpid()} {nbytes}\n".encode())
            finally:
                os.close(fd)

    @property
    def url(self) -> str:
        return self.inner.url

    def get(self, key: str) -> bytes:
        data = self.inner.get(key)
        self._slow(len(data))
        return data

    def get_range(self, key: str, start: int, end: int) -> bytes:
        data = self.inner.get_range(key, start, end)
        self._slow(len(data))
        return data

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        return self.inner.put(key, data)

    def head(self, key: str) -> ObjectMeta:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)


def origin_bytes(log: str | os.PathLike[str]) -> int:
    """Bytes read from the origin by every process that logged to ``log``."""
    path = Path(log)
    if not path.exists():
        return 0
    return sum(int(line.split()[1]) for line in path.read_text().splitlines() if line)
