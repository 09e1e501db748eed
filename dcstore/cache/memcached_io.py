"""A memcached ``get`` of large values received in place, without pymemcache's copies.

pymemcache reads replies 4 KiB at a time (with a socket timeout, each read is a poll
plus a recv) and joins the pieces into a new ``bytes`` per value. Here the reply lands
in the caller's reused buffer with large ``recv_into`` calls and values are returned as
offsets into it. The connection is one of pymemcache's pooled ones; a connection whose
reply was not read to the end is closed, never reused. Its timeout is enforced by the
kernel instead of a ``poll`` per read (:func:`kernel_timeouts`).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

RECV_BYTES = 1 << 20
"""Most bytes asked of one ``recv_into``."""
MAX_VALUE_BYTES = 1 << 30
"""memcached's largest possible item (``-I 1024m``): a longer announced value is garbage."""
MAX_HEADER_BYTES = 1024
"""A ``VALUE <key> <flags> <bytes>`` line is under 300 bytes (keys are at most 250)."""


def reply_capacity(keys: Sequence[bytes], sizes: Sequence[int]) -> int:
    """Bytes of a ``get`` reply holding every key with its expected size."""
    return sum(len(k) + n + 40 for k, n in zip(keys, sizes, strict=True)) + 8


def get_into(
    pooled: Any, keys: list[bytes], buf: bytearray, start: int
) -> tuple[dict[bytes, tuple[int, int]], bytearray, int]:
    """``get`` of ``keys`` on one server through a connection of ``pooled`` (a
    pymemcache ``PooledClient``), the reply received at ``buf[start:]``. Returns
    ``key -> (offset, length)`` of each value found, the buffer holding them (``buf``,
    or a larger copy if the reply outgrew it) and the end of the reply in it."""
    pool = pooled.client_pool
    client = pool.get()
    try:
        if client.sock is None:
            client._connect()
        if client.sock.gettimeout() is not None:
            kernel_timeouts(client.sock)
        client.sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        reply = _read_values(client.sock, buf, start)
    except BaseException:
        client.close()  # the reply may be half read: never reuse this connection
        pool.destroy(client)
        raise
    pool.release(client)
    return reply


def kernel_timeouts(sock: socket.socket) -> None:
    """Move the socket's timeout into the kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO``) and make
    it blocking: Python then skips its ``poll`` before every ``recv``; a timeout still
    raises an ``OSError`` (``EAGAIN``)."""
    timeout = sock.gettimeout()
    assert timeout is not None
    seconds = int(timeout)
    timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.settimeout(None)


def _read_values(
    sock: socket.socket, buf: bytearray, start: int
) -> tuple[dict[bytes, tuple[int, int]], bytearray, int]:
    found: dict[bytes, tuple[int, int]] = {}
    filled = pos = start
    while True:
        end_of_line = buf.find(b"\r\n", pos, filled)
        while end_of_line < 0:
            if filled - pos > MAX_HEADER_BYTES:
                raise MemcacheError("a get reply line is too long")
            buf, filled = _receive(sock, buf, filled, filled + 64)
            end_of_line = buf.find(b"\r\n", pos, filled)
        header = bytes(buf[pos:end_of_line])
        if header == b"END":
            if end_of_line + 2 != filled:
                raise MemcacheError("unexpected bytes after a get reply")
            return found, buf, filled
        parts = header.split()
        if len(parts) < 4 or parts[0] != b"VALUE":
            raise MemcacheError(f"unexpected get reply: {header[:80]!r}")
        value = end_of_line + 2
        length = int(parts[3])
        if not 0 <= length <= MAX_VALUE_BYTES:
            raise MemcacheError(f"a get reply announces a value of {length} bytes")
        while filled < value + length + 2:
            buf, filled = _receive(sock, buf, filled, value + length + 2)
        if buf[value + length : value + length + 2] != b"\r\n":
            raise MemcacheError("a get reply value is not followed by CRLF")
        found[parts[1]] = (value, length)
        pos = value + length + 2


def _receive(sock: socket.socket, buf: bytearray, filled: int, need: int) -> tuple[bytearray, int]:
    """Receive more of the reply after ``filled`` bytes, into ``buf`` (grown to ``need``)."""
    if need > len(buf):
        bigger = bytearray(max(need, 2 * len(buf)))
        bigger[:filled] = buf[:filled]
        buf = bigger
    n = sock.recv_into(memoryview(buf)[filled : filled + RECV_BYTES])
    if n == 0:
        raise MemcacheUnexpectedCloseError()
    return buf, filled + n
