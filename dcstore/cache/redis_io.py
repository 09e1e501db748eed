"""Large values on redis-py's pooled connections without redis-py's copies.

redis-py (with hiredis) turns every value into a new ``bytes`` and packs each
command into one more new buffer, so a 4 MiB SET costs two fresh 4 MiB copies;
replies are parsed into a new ``bytes`` per value. Here commands go out as
header + the caller's own buffer (zero copy), and MGET replies land in a reused
buffer (:mod:`dcstore.cache.resp`). Connections, AUTH, TLS, database selection
and cluster slot routing stay redis-py's.

The one private name used is ``Connection._sock`` (the connected socket, read directly
for MGET replies). It is fenced three ways: ``pyproject.toml`` accepts only the redis-py
majors it was tested with (5.3 up to 8.x), :func:`connected_socket` checks it at run time
(anything else falls back to redis-py's own MGET, slower but correct), and
``tests/test_cache_redis_fence.py`` asserts the fast path is the one taken. Measured
reason (bench/results/cache.md): it saves one copy of every cached byte on a hit.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from dcstore.backends.base import Buffer
from dcstore.cache.resp import Desync, ReplyError, pack_set, read_mget


@contextlib.contextmanager
def pooled(client: Any, cluster: bool, key: str) -> Iterator[Any]:
    """A pooled connection to the node serving ``key``; dropped if the block fails."""
    if cluster:
        pool = client.get_redis_connection(client.get_node_from_key(key)).connection_pool
    else:
        pool = client.connection_pool
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        conn = pool.get_connection("MGET")
    try:
        yield conn
    except ReplyError:
        raise  # a whole error reply was read: the connection is in sync
    except BaseException:
        conn.disconnect()  # a reply was not fully read: the connection is unusable
        raise
    finally:
        pool.release(conn)


def connected_socket(conn: Any) -> socket.socket | None:
    """redis-py's connected socket (private ``Connection._sock``), or None if this
    redis-py keeps it elsewhere (then callers use redis-py's documented API)."""
    sock = getattr(conn, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def mget_into(
    client: Any, cluster: bool, keys: list[str], buf: bytearray, pos: int, sizes: Sequence[int]
) -> tuple[list[tuple[int | None, int]], int] | None:
    """One MGET received in place by :func:`read_mget`; ``None`` when the server
    answered with an error (a cluster redirect) or the socket is not where this module
    expects it: then use redis-py's MGET."""
    try:
        with pooled(client, cluster, keys[0]) as conn:
            conn.send_command("MGET", *keys)
            sock = connected_socket(conn)
            if sock is None:
                conn.read_response()  # keep the connection in sync, then redis-py's MGET
                return None
            return read_mget(sock, buf, pos, sizes)
    except ReplyError:
        return None
    except Desync as exc:
        raise redis.ResponseError(f"unexpected MGET reply: {exc}") from exc


def set_values(
    client: Any, cluster: bool, items: Sequence[tuple[str, Buffer]], px: int | None
) -> None:
    """Pipelined ``SET key value [PX px]`` (keys in one hash slot), values sent zero-copy."""
    pieces: list[Buffer] = []
    for key, value in items:
        pieces.extend(pack_set(key.encode(), value, px))
    with pooled(client, cluster, items[0][0]) as conn:
        conn.send_packed_command(pieces)
        failure = None
        for _ in items:  # read every reply, so the connection stays in sync
            try:
                conn.read_response()
            except redis.ResponseError as exc:  # e.g. OOM: keep reading, then raise
                failure = failure or exc
        if failure is not None:
            raise failure
