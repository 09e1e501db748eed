"""MongoBackend logic that needs no server: URLs, options, secrets, pickling, error mapping."""

from __future__ import annotations

import pickle

import pytest
from pymongo import errors as pe

from dcstore.backends.mongodb import MongoBackend
from dcstore.backends.mongodb.errors import map_errors
from dcstore.backends.registry import open_backend
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    InvalidKeyError,
    KeyAccessError,
    StorageFullError,
)

UNREACHABLE = "mongodb://127.0.0.1:9/db?serverSelectionTimeoutMS=200&connectTimeoutMS=200"


def test_url_round_trip_and_defaults() -> None:
    b = open_backend("mongodb://h1:27017,h2:27018/shards?bucket=train&chunk_size=2097152")
    assert isinstance(b, MongoBackend)
    assert (b.hosts, b.database, b.bucket, b.chunk_size) == (
        ["h1:27017", "h2:27018"],
        "shards",
        "train",
        2 * 1024 * 1024,
    )
    assert b.driver_options["w"] == "majority"
    assert b.driver_options["serverSelectionTimeoutMS"] == 3000
    again = open_backend(b.url)
    assert again.url == b.url
    assert open_backend("mongodb://h/").url == "mongodb://h/dcstore?bucket=fs"


def test_driver_options_are_typed() -> None:
    b = open_backend(
        "mongodb://h/db?w=2&journal=true&readPreference=secondaryPreferred&replicaSet=rs0"
        "&tls=true&tlsCAFile=/ca.pem&authSource=admin&maxPoolSize=50"
    )
    expected = {
        "w": 2,
        "journal": True,
        "readPreference": "secondaryPreferred",
        "replicaSet": "rs0",
        "tls": True,
        "tlsCAFile": "/ca.pem",
        "authSource": "admin",
        "maxPoolSize": 50,
    }
    assert {name: b.driver_options[name] for name in expected} == expected
    assert "readPreference=secondaryPreferred" in b.url and "tls=true" in b.url


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://h/db?bogus=1",
        "mongodb://h/db?chunk_size=512",
        "mongodb://h/db?chunk_size=16777216",
        "mongodb://h/db?maxPoolSize=many",
        "mongodb://h/db?tls=maybe",
        "mongodb://h/bad.name",
        "mongodb:///db",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_backend(url)


def test_password_never_in_str_repr_or_pickle_url() -> None:
    b = open_backend(
        "mongodb://alice:s3cr%40t@h/db?tlsCertificateKeyFilePassword=keypass&authSource=admin"
    )
    for text in (str(b), repr(b), b.url):
        assert "s3cr" not in text and "keypass" not in text
        assert "alice@h" in text
    clone = pickle.loads(pickle.dumps(b))
    assert clone.url == b.url and clone._password == "s3cr@t"


def test_pickles_without_connecting_and_reconnects_lazily() -> None:
    b = open_backend(UNREACHABLE)
    clone = pickle.loads(pickle.dumps(b))
    assert clone._conn is None
    with pytest.raises(BackendUnavailableError):
        clone.head("k")


def test_keys_are_validated_before_any_io() -> None:
    b = open_backend(UNREACHABLE)
    for call in (
        lambda: b.get("../x"),
        lambda: b.get_range("/abs", 0, 1),
        lambda: b.put("a//b", b""),
        lambda: b.head(""),
        lambda: b.delete("a/./b"),
        lambda: b.list_objects("../"),
    ):
        with pytest.raises(InvalidKeyError):
            call()
    assert b._conn is None


def test_unreachable_server_is_unavailable_quickly() -> None:
    b = open_backend(UNREACHABLE)
    with pytest.raises(BackendUnavailableError) as info:
        b.get("some/key")
    assert isinstance(info.value, ConnectionError)
    assert "127.0.0.1:9" in str(info.value) and "'some/key'" in str(info.value)
    assert isinstance(info.value.__cause__, pe.ServerSelectionTimeoutError)


@pytest.mark.parametrize(
    "exc,expected",
    [
        (pe.ServerSelectionTimeoutError("no servers"), BackendUnavailableError),
        (pe.AutoReconnect("reset"), BackendUnavailableError),
        (pe.NetworkTimeout("timed out"), BackendUnavailableError),
        (pe.ConnectionFailure("refused"), BackendUnavailableError),
        (pe.NotPrimaryError("stepped down", {}), BackendUnavailableError),
        (pe.ExecutionTimeout("slow", 50), BackendUnavailableError),
        (pe.OperationFailure("shutting down", 91), BackendUnavailableError),
        (pe.OperationFailure("auth failed", 18), KeyAccessError),
        (pe.OperationFailure("not authorized", 13), KeyAccessError),
        (pe.OperationFailure("disk full", 14031), StorageFullError),
        (pe.OperationFailure("bad query", 2), DcstoreError),
        (
            pe.OperationFailure("DeleteAll] database is locked (5) (SQLITE_BUSY)", 1),
            BackendUnavailableError,
        ),
        (pe.ConfigurationError("bad option"), ConfigError),
        (pe.DocumentTooLarge("too big"), ConfigError),
        (pe.ProtocolError("message too large"), DcstoreError),
    ],
)
def test_error_mapping(exc: Exception, expected: type) -> None:
    with pytest.raises(expected) as info, map_errors("mongodb://h/db?bucket=fs", "get", "k"):
        raise exc
    assert info.value.__cause__ is exc
    assert "mongodb://h/db?bucket=fs: get 'k'" in str(info.value)
    if expected is DcstoreError:
        assert not isinstance(info.value, BackendUnavailableError)
