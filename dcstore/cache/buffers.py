"""Per-thread receive buffers that shared tiers read replies into, reused across reads."""

from __future__ import annotations

import threading

from dcstore.cache.tier import MiB

KEEP_BUFFER_BYTES = 80 * MiB
"""Receive buffers up to this size are kept per thread for reuse."""


class ReceiveBuffers:
    """One reusable ``bytearray`` per thread; a buffer larger than
    :data:`KEEP_BUFFER_BYTES` is handed out once and not kept."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, size: int) -> bytearray:
        """This thread's buffer, at least ``size`` bytes (1/8 headroom when it grows)."""
        buf: bytearray | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = bytearray(size + (size >> 3))
            if len(buf) <= KEEP_BUFFER_BYTES:
                self._local.buf = buf
        return buf
