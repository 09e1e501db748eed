"""Authentication and TLS against a private Cassandra node (127.0.0.4) with
PasswordAuthenticator and a TLS-only native port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra_server import (  # noqa: F401 - fixtures
    PrivateNode,
    cassandra_hosts,
    cassandra_url,
    wait_started,
)

from dcstore.backends.registry import open_backend
from dcstore.errors import ConfigError, DcstoreError, KeyAccessError

pytestmark = [pytest.mark.server("cassandra"), pytest.mark.slow]

ADDRESS = "127.0.0.4"


@pytest.fixture(scope="module")
def secure_node(cassandra_url: str) -> Iterator[PrivateNode]:  # noqa: F811
    node = PrivateNode(
        "secure", ADDRESS, ADDRESS, "dcstore-secure", CASSANDRA_AUTH="1", CASSANDRA_TLS="1"
    )
    try:
        wait_started([node.start(fresh=True)])
        yield node
    finally:
        node.stop(kill=True, wipe=True)


def _url(**query: str) -> str:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"cassandra://cassandra@{ADDRESS}:9042/secure_ks?{qs}"


def test_password_file_and_verified_tls(secure_node: PrivateNode, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("cassandra\n")
    ca = secure_node.dir / "tls" / "cert.pem"
    backend = open_backend(
        _url(tls="true", tls_ca=str(ca), password_file=str(secret), replication_factor="1")
    )
    backend.put("a/b", b"over tls" * 1000)
    assert backend.get("a/b") == b"over tls" * 1000
    assert [m.key for m in backend.list_objects()] == ["a/b"]
    assert "cassandra@" in str(backend) and ":cassandra@" not in str(backend)
    backend.close()


def test_password_keyword_never_shows(secure_node: PrivateNode) -> None:
    ca = secure_node.dir / "tls" / "cert.pem"
    backend = open_backend(_url(tls="true", tls_ca=str(ca)), password="cassandra")
    backend.put("kw", b"x")  # connects and authenticates
    assert backend.get("kw") == b"x"
    assert "password" not in str(backend) and "password" not in repr(backend)
    backend.close()


def test_wrong_password_is_access_denied(secure_node: PrivateNode) -> None:
    ca = secure_node.dir / "tls" / "cert.pem"
    backend = open_backend(_url(tls="true", tls_ca=str(ca)), password="wrong-pw")
    with pytest.raises(KeyAccessError) as info:
        backend.head("a/b")
    assert "wrong-pw" not in str(info.value)


def test_untrusted_certificate_is_refused(secure_node: PrivateNode) -> None:
    backend = open_backend(_url(tls="true"), password="cassandra", connect_timeout=3)
    with pytest.raises(ConfigError, match="TLS handshake failed") as info:
        backend.head("a/b")
    assert "certificate" in str(info.value).lower() or "ssl" in str(info.value).lower()


def test_plaintext_client_cannot_talk_to_tls_port(secure_node: PrivateNode) -> None:
    backend = open_backend(_url(), password="cassandra", connect_timeout=3)
    with pytest.raises(DcstoreError):
        backend.head("a/b")
