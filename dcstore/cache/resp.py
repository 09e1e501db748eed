"""Receiving a RESP2/RESP3 ``MGET`` reply of known value sizes straight into one buffer.

redis-py + hiredis copy a large value several times (socket buffer -> parser
buffer -> a new ``bytes`` per value); the hit path then joins chunks into one
more new object. Here the reply lands once in a reused buffer and the values
are parsed in place; the caller makes the one copy it returns.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from dcstore.backends.base import Buffer

ERROR_ROOM = 512
"""Extra room so that an error reply always fits."""


class ReplyError(Exception):
    """The server answered with an error (e.g. ``MOVED``); the connection is still usable."""


class Desync(Exception):
    """The reply was not what was expected; the connection must be dropped."""


def reply_capacity(sizes: Sequence[int]) -> int:
    """Room for the reply to an MGET whose values all exist with ``sizes`` (or an
    error line such as a cluster redirect)."""
    exact = len(f"*{len(sizes)}\r\n") + sum(len(f"${n}\r\n") + n + 2 for n in sizes)
    return exact + ERROR_ROOM


def read_mget(
    sock: socket.socket, buf: bytearray, start: int, sizes: Sequence[int]
) -> tuple[list[tuple[int | None, int]], int]:
    """Receive the reply to ``MGET k1..kn`` into ``buf[start:]``.

    ``buf`` must hold ``start + reply_capacity(sizes)`` bytes. Returns, for each
    key, ``(offset of its value in buf, size)`` or ``(None, size)`` when it is
    missing or of another size (a damaged entry: read past, never returned, so the
    other values and the connection stay usable), and the offset after the reply.
    A reply of another shape raises :class:`Desync`.
    """
    view = memoryview(buf)
    cap = len(buf)
    got = pos = start

    def fill(upto: int) -> None:
        nonlocal got
        while got < upto:
            if got >= cap:
                raise Desync("reply larger than expected")
            n = sock.recv_into(view[got:cap])
            if not n:
                raise ConnectionError("connection closed by the server")
            got += n

    def skip(count: int) -> None:
        """Read past ``count`` bytes of the reply: they are received at ``pos`` and
        dropped, and what follows them is moved to ``pos`` (the room stays the reply's)."""
        nonlocal got
        while got - pos < count:
            count -= got - pos
            got = pos
            fill(pos + 1)
        rest = got - pos - count
        buf[pos : pos + rest] = buf[pos + count : got]
        got = pos + rest

    def line() -> bytes:
        nonlocal pos
        while True:
            end = buf.find(b"\r\n", pos, got)
            if end >= 0:
                text = bytes(view[pos:end])
                pos = end + 2
                return text
            fill(got + 1)

    first = line()
    if first.startswith(b"-"):
        raise ReplyError(first[1:].decode("utf-8", "replace"))
    if first != b"*%d" % len(sizes):
        raise Desync(f"unexpected reply header {first[:40]!r}")
    values: list[tuple[int | None, int]] = []
    for expected in sizes:
        head = line()
        if head in (b"$-1", b"_"):  # RESP2 / RESP3 null: a missing key
            values.append((None, expected))
            continue
        if not head.startswith(b"$") or not head[1:].isdigit():
            raise Desync(f"unexpected value header {head[:40]!r}")
        if int(head[1:]) != expected:  # damaged (truncated, overwritten): a miss
            skip(int(head[1:]) + 2)
            values.append((None, expected))
            continue
        fill(pos + expected + 2)
        if buf[pos + expected : pos + expected + 2] != b"\r\n":  # framing lost: not trusted
            raise Desync(f"value of {expected} bytes not followed by CRLF")
        values.append((pos, expected))
        pos += expected + 2
    return values, pos


def pack_set(key: bytes, value: Buffer, px: int | None) -> list[Buffer]:
    """``SET key value [PX px]`` as protocol pieces; ``value`` is not copied."""
    n = memoryview(value).nbytes
    argc = 5 if px is not None else 3
    head = b"*%d\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (argc, len(key), key, n)
    tail = b"\r\n"
    if px is not None:
        ttl = b"%d" % px
        tail += b"$2\r\nPX\r\n$%d\r\n%s\r\n" % (len(ttl), ttl)
    return [head, value, tail]
