"""Send one MongoDB ``ping`` (OP_MSG) and exit 0 if the server answers ``ok: 1``.

Standard library only, so server scripts can wait for readiness before any
Python driver is installed. Usage: ``python3 ping.py HOST PORT [TIMEOUT_S]``.
"""

from __future__ import annotations

import socket
import struct
import sys


def _bson_ping() -> bytes:
    body = b"\x10ping\x00" + struct.pack("<i", 1)
    body += b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def ping(host: str, port: int, timeout: float) -> bool:
    """True if the server at ``host:port`` answers the ping command with ``ok: 1``."""
    payload = struct.pack("<I", 0) + b"\x00" + _bson_ping()
    message = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(message)
        header = _recv(sock, 16)
        length = struct.unpack("<i", header[:4])[0]
        reply = _recv(sock, length - 16)
    marker = reply.find(b"\x01ok\x00")
    if marker < 0:
        return False
    return struct.unpack("<d", reply[marker + 4 : marker + 12])[0] == 1.0


def _recv(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


if __name__ == "__main__":
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    try:
        ok = ping(sys.argv[1], int(sys.argv[2]), timeout)
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)
