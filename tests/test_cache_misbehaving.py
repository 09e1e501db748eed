"""A cache server that answers, but not as the protocol says, never fails a read.

Outside test: a server answering the Redis handshake (``HELLO``) with a non-map reply
made redis-py raise ``AttributeError`` inside its connect, which escaped the tier's
fault handling and failed ``get``/``get_range``/``open_read`` of a cached store.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import private_redis_fixture  # noqa: F401 - a fixture

from dcstore.store import open_store
from dcstore.testing.conformance import payload


@contextlib.contextmanager
def fake_server(reply: bytes) -> Iterator[int]:
    """A TCP server on a free loopback port answering ``reply`` to every packet it gets."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set() and conn.recv(65536):
                conn.sendall(reply)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


REDIS_REPLIES = [b"+OK\r\n", b":1\r\n", b"*1\r\n$1\r\nx\r\n", b"$3\r\nabc\r\n", b"garbage\r\n"]
MEMCACHED_REPLIES = [
    b"+OK\r\n",
    b"VALUE\r\n",
    b"VALUE k x y\r\n",
    b"VALUE k 0 -5\r\nEND\r\n",
    b"STORED\r\n",
    b"END\r\nEND\r\n",
    b"\x00\xff\r\n",
]


def _reads_from_the_origin(tmp_path: Path, cache: str, caplog: pytest.LogCaptureFixture) -> None:
    origin = open_store(str(tmp_path / "o"))
    origin.put("k", payload(70_000))
    store = open_store(str(tmp_path / "o"), cache=cache)
    caplog.set_level(logging.WARNING, logger="dcstore.cache")
    assert store.get("k") == payload(70_000)
    assert store.get_range("k", 100, 5100) == payload(70_000)[100:5100]
    with store.open_read("k") as f:
        assert f.read() == payload(70_000)
    assert any("reading from the origin" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("scheme", "reply"),
    [("redis", r) for r in REDIS_REPLIES] + [("memcached", r) for r in MEMCACHED_REPLIES],
    ids=repr,
)
def test_a_tier_answering_nonsense_is_a_tier_fault(
    scheme: str, reply: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fake_server(reply) as port:
        database = "/0" if scheme == "redis" else ""
        query = f"namespace=t{uuid.uuid4().hex[:8]}&socket_timeout=0.5"
        _reads_from_the_origin(tmp_path, f"{scheme}://127.0.0.1:{port}{database}?{query}", caplog)


def test_an_error_of_dcstore_itself_is_no_tier_fault() -> None:
    """The boundary: only what the client library raises in its own code is a fault;
    an exception raised in dcstore's code under the same block is a bug and propagates."""
    from dcstore.cache import open_cache_tier
    from dcstore.cache.network_tier import NetworkTier
    from dcstore.cache.tier import CacheUnavailableError

    for url in ("redis://127.0.0.1:1/0", "memcached://127.0.0.1:1"):
        tier = open_cache_tier(url)
        assert isinstance(tier, NetworkTier)
        with pytest.raises(AttributeError), tier._errors("get"):
            raise AttributeError("a bug of dcstore")
    # raised inside redis-py's own code: a fault of the store
    import redis.connection

    tier = open_cache_tier("redis://127.0.0.1:1/0")
    assert isinstance(tier, NetworkTier)
    with pytest.raises(CacheUnavailableError, match="TypeError"), tier._errors("get"):
        redis.connection.Connection(port="x").connect()  # type: ignore[arg-type]


def test_a_missing_or_refused_redis_password_is_named(
    private_redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside test: without a password, the warning was redis' own "HELLO must be called
    with the client already authenticated..." and never said that the URL had none."""
    from dcstore.backends.local import LocalBackend
    from dcstore.cache import CachedBackend

    secret = "pw-" + uuid.uuid4().hex
    server = private_redis(password=secret)
    LocalBackend(tmp_path / "o").put("k", payload(5000))
    caplog.set_level(logging.WARNING, logger="dcstore.cache")
    bare = CachedBackend(LocalBackend(tmp_path / "o"), server.url)
    assert bare.get("k") == payload(5000) and bare.stats()["errors"] == 1
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "the server requires a password" in warned and "password_file=" in warned
    assert "HELLO must be called" not in warned
    caplog.clear()
    wrong = "nope-" + uuid.uuid4().hex
    pwfile = tmp_path / "redis.pw"
    pwfile.write_text(wrong)
    for url in (
        server.url.replace("redis://", f"redis://:{wrong}@"),
        f"{server.url}{'&' if '?' in server.url else '?'}password_file={pwfile}",
    ):
        refused = CachedBackend(LocalBackend(tmp_path / "o"), url)
        assert refused.get("k") == payload(5000) and refused.stats()["errors"] == 1
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "refused the password from the URL" in warned
    assert f"refused the password from password_file {pwfile}" in warned
    assert wrong not in warned and secret not in warned


@pytest.mark.parametrize("reply", [[None], 7, [5, b"x"], "text"], ids=repr)
def test_redis_replies_of_the_wrong_shape_are_tier_faults(reply: object) -> None:
    """Review: after a normal handshake, an MGET answered with one value for two keys (or
    an integer) and a GETRANGE answered with an integer raised ValueError/TypeError in
    dcstore's own code, which failed the read instead of falling back to the origin."""
    from dcstore.cache import open_cache_tier
    from dcstore.cache.tier import CacheUnavailableError

    class Pipeline:
        def getrange(self, *args: object) -> None:
            pass

        def execute(self) -> object:
            return reply

    class Client:
        def execute_command(self, *args: object) -> object:
            return reply

        def pipeline(self, transaction: bool = False) -> Pipeline:
            return Pipeline()

    tier = open_cache_tier(f"redis://127.0.0.1:1/0?namespace=t{uuid.uuid4().hex[:8]}")
    tier._redis = lambda: Client()  # type: ignore[attr-defined, method-assign]
    with pytest.raises(CacheUnavailableError, match="MGET"), tier._errors("MGET"):  # type: ignore[attr-defined]
        tier._mget_slow(Client(), ["a", "b"], [1, 1])  # type: ignore[attr-defined]
    with pytest.raises(CacheUnavailableError, match="GETRANGE"):
        tier.get_slices([("a", 0, 5), ("b", 0, 5)])  # type: ignore[attr-defined]
