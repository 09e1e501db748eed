"""The Python API raises the CLI's error types: one class per mistake, a message that
names the URL and never a secret (the CLI maps the same classes to its exit codes)."""

from __future__ import annotations

import socket

import pytest

from dcstore import open_store
from dcstore.errors import BackendUnavailableError, ConfigError, NotFoundError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "url,named",
    [
        ("gopher://user:s3cret@host/x", "gopher://user@host/x"),
        ("file://host/data", "file://host/data"),
        ("memory://m?bogus=1", "memory://m"),
        (
            "cassandra://user:s3cret@127.0.0.1/ks?password=s3cret&nope=1",
            "cassandra://user@127.0.0.1/ks",
        ),
    ],
)
def test_bad_url_is_a_config_error_naming_it(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    message = str(info.value)
    assert message.startswith(named + ": ") and "s3cret" not in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "url,message",
    [
        ("mongodb://127.0.0.1:1/db?bucket=", "bucket= is empty"),  # was GridFS's fs, silently
        ("hdfs://127.0.0.1:1/x?timeout=-5", "timeout must be > 0, got -5"),
        ("hdfs://127.0.0.1:1/x?failover_attempts=0", "failover_attempts must be >= 1, got 0"),
        ("hdfs://127.0.0.1:1/h2/../x", "'.' and '..' are not resolved"),  # was: at the 1st put
    ],
)
def test_a_bad_option_value_is_named(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url)


def test_missing_local_store_is_not_found(tmp_path) -> None:
    store = open_store(str(tmp_path / "absent"))
    with pytest.raises(NotFoundError, match=f"file://{tmp_path}/absent: .*no such store"):
        store.get("shard-000.tar")
    with pytest.raises(NotFoundError):
        store.head("shard-000.tar")


@pytest.mark.parametrize(
    "url",
    [
        "cassandra://user:s3cret@127.0.0.1:{port}/ks?connect_timeout=1",
        "mongodb://user:s3cret@127.0.0.1:{port}/db?serverSelectionTimeoutMS=300",
    ],
)
def test_unreachable_server_is_unavailable(url: str) -> None:
    port = closed_port()
    store = open_store(url.format(port=port), retries=1)
    with pytest.raises(BackendUnavailableError) as info:
        list(store.list_objects())
    message = str(info.value)
    assert f"user@127.0.0.1:{port}" in message and "s3cret" not in message
    assert len(message.splitlines()) == 1
