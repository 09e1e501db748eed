#!/usr/bin/env python3
"""Readiness probe: `SELECT release_version FROM system.local` over CQL native protocol v4.

Standard library only, so start.sh works before any virtualenv exists. Prints the release
version and exits 0 when the query succeeds, 1 otherwise.
Usage: cql_probe.py HOST PORT [USER PASSWORD] [--tls]  (TLS without certificate checks)
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_QUERY, OP_RESULT = 0x07, 0x08
OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x0F, 0x10


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _request(sock: socket.socket, opcode: int, body: bytes) -> tuple[int, bytes]:
    sock.sendall(struct.pack(">BBhBi", 0x04, 0, 0, opcode, len(body)) + body)
    header = _recv(sock, 9)
    _, _, _, op, length = struct.unpack(">BBhBi", header)
    payload = _recv(sock, length)
    if op == OP_ERROR:
        code = struct.unpack(">i", payload[:4])[0]
        (mlen,) = struct.unpack(">H", payload[4:6])
        raise RuntimeError(
            f"server error {code:#x}: {payload[6 : 6 + mlen].decode(errors='replace')}"
        )
    return op, payload


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("connection closed")
        buf += part
    return bytes(buf)


def _cell_len(payload: bytes) -> int:
    # The value is a short ASCII version string ("5.0.8"): scan back for its int32 length prefix.
    for n in range(1, 64):
        if len(payload) >= n + 4 and struct.unpack(">i", payload[-n - 4 : -n])[0] == n:
            return n
    return 0


def probe(
    host: str,
    port: int,
    user: str = "cassandra",
    password: str = "cassandra",  # noqa: S107 - Cassandra's default superuser
    tls: bool = False,
) -> str:
    with _connect(host, port, tls) as sock:
        op, _ = _request(
            sock, OP_STARTUP, struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0")
        )
        if op == OP_AUTHENTICATE:
            token = b"\0" + user.encode() + b"\0" + password.encode()
            op, _ = _request(sock, OP_AUTH_RESPONSE, struct.pack(">i", len(token)) + token)
            if op != OP_AUTH_SUCCESS:
                raise RuntimeError(f"authentication failed (opcode {op:#x})")
        elif op != OP_READY:
            raise RuntimeError(f"unexpected STARTUP reply opcode {op:#x}")
        q = b"SELECT release_version FROM system.local"
        op, payload = _request(
            sock, OP_QUERY, struct.pack(">i", len(q)) + q + struct.pack(">HB", 0x0001, 0)
        )
        if op != OP_RESULT or struct.unpack(">i", payload[:4])[0] != 2:
            raise RuntimeError("query did not return rows")
        n = _cell_len(payload)
        return payload[-n:].decode() if n else "?"


def _connect(host: str, port: int, tls: bool) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    if not tls:
        return sock
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # readiness only; clients verify the certificate
    return ctx.wrap_socket(sock)


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--tls"]
    host, port = args[0], int(args[1])
    creds = args[2:4]
    try:
        print(probe(host, port, *creds, tls="--tls" in sys.argv))
    except (OSError, RuntimeError) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
