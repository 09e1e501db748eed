"""open_backend: schemes, options and malformed URLs give ConfigError naming the problem."""

from __future__ import annotations

import pickle

import pytest

from dcstore import ConfigError, open_backend
from dcstore.backends.local import LocalBackend
from dcstore.backends.memory import MemoryBackend
from dcstore.backends.options import parse_url
from dcstore.backends.registry import known_schemes
from dcstore.store import open_store


def test_plain_path_and_file_url(tmp_path) -> None:
    assert isinstance(open_backend(str(tmp_path)), LocalBackend)
    backend = open_backend(f"file://{tmp_path}")
    assert backend.url == f"file://{tmp_path}"
    assert isinstance(open_backend("memory://x"), MemoryBackend)


def test_unknown_scheme_lists_accepted() -> None:
    with pytest.raises(ConfigError, match=r"unknown storage scheme 'ftp'.*file.*memory"):
        open_backend("ftp://host/x")


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "memcached://h:11211"])
def test_a_cache_url_given_as_a_store_says_where_it_goes(url: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown storage scheme.*hot tier.*cache=.*--cache"):
        open_backend(url)


def test_unknown_option_lists_accepted(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) colour.*accepted: fsync"):
        open_backend(f"file://{tmp_path}?colour=blue")
    with pytest.raises(ConfigError, match="colour"):
        open_backend(str(tmp_path), colour="blue")


def test_bad_option_value(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"fsync.*true or false"):
        open_backend(f"file://{tmp_path}?fsync=maybe")


@pytest.mark.parametrize("url", ["", "c:data", "file://remotehost/x", "file://", "http://[::1"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_backend(url)


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://127.0.0.1:99999/db",
        "mongodb://127.0.0.1:abc/db",
        "cassandra://h1:9042,h2:99999/ks",  # the driver connected to 99999 % 65536
        "hdfs://[::1]:0/x",
    ],
)
def test_a_port_outside_1_to_65535_is_a_config_error(url: str) -> None:
    """Drivers raised a bare ValueError (a traceback from the CLI) or wrapped it around."""
    with pytest.raises(ConfigError, match=r"port '\w+' is not 1\.\.65535"):
        open_backend(url)
    with pytest.raises(ConfigError, match=r"is not 1\.\.65535"):
        open_store("memory://p", cache=url.replace(url.split(":")[0], "redis", 1))


def test_byte_options_take_sizes_as_people_write_them() -> None:
    """chunk_bytes=1MiB was refused as "must be an integer" (pack --shard-size takes 64KiB)."""
    from dcstore.cache.spec import open_cache_tier

    tier = open_cache_tier("lru://?max_bytes=64MiB&chunk_bytes=1MiB&max_object_bytes=2097152")
    assert (tier.max_bytes, tier.policy.chunk_bytes, tier.policy.max_object_bytes) == (
        64 << 20,
        1 << 20,
        2 << 20,
    )
    with pytest.raises(ConfigError, match=r"option 'chunk_bytes': bad size 'lots': use e\.g\."):
        open_cache_tier("lru://?chunk_bytes=lots")
    # ttl=0 meant "no expiry" without a word, where ttl=-5 said "must be positive"
    with pytest.raises(ConfigError, match=r"ttl must be positive \(omit it for no expiry\)"):
        open_cache_tier("lru://?ttl=0")
    assert open_cache_tier("lru://?ttl=2.5").policy.ttl == 2.5
    assert open_cache_tier("lru://").policy.ttl is None


def test_a_bad_bucket_or_driver_option_is_a_config_error() -> None:
    """cp a "mongodb://h/db?bucket=b/k" took db as the key, b/k as the bucket, and said copied."""
    pytest.importorskip("pymongo")
    with pytest.raises(ConfigError, match="invalid GridFS bucket name 'b/k'"):
        open_backend("mongodb://127.0.0.1:27017/db?bucket=b/k")
    store = open_backend("mongodb://127.0.0.1:27017/db?readPreference=bogus")
    with pytest.raises(ConfigError, match=r"bad MongoDB option \(Not a valid read preference"):
        list(store.list_objects())  # pymongo's ValueError was a traceback


def test_missing_driver_names_the_extra(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("dcstore.backends.hdfs") or name == "hdfs_native":
            raise ModuleNotFoundError("No module named 'hdfs_native'", name="hdfs_native")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(__import__("sys").modules, "dcstore.backends.hdfs", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'dcstore\[hdfs\]'"):
        open_backend("hdfs://127.0.0.1:9000/x")


def test_password_stays_out_of_safe_url() -> None:
    parsed = parse_url("redis://user:s3cret@host:6379/0?a=1")
    assert parsed.password == "s3cret"
    assert "s3cret" not in parsed.safe() and "s3cret" not in repr(parsed)
    assert parsed.safe() == "redis://user@host:6379/0?a=1"


def test_known_schemes() -> None:
    assert {"file", "memory", "hdfs", "cassandra", "mongodb"} <= set(known_schemes())


def test_memory_pickle_carries_snapshot() -> None:
    backend = MemoryBackend("snap-test")
    backend.put("k", b"v")
    state = pickle.dumps(backend)
    backend.delete("k")
    clone = pickle.loads(state)
    assert clone.get("k") == b"v"


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://h:27017/db?bucket=a&bucket=b",
        "redis://h:6379/0?namespace=a&ttl=5&namespace=a",
    ],
)
def test_an_option_given_twice_is_refused(url: str) -> None:
    """Outside pass: a repeated option was silently last-wins."""
    with pytest.raises(ConfigError, match="is given more than once"):
        parse_url(url)


def test_a_path_from_home_is_expanded() -> None:
    """Outside pass: ``open_store("~/data")`` was a folder named ``~`` in the working
    directory (the CLI got the shell's expansion, the Python API did not)."""
    import os

    assert parse_url("~/data").path == os.path.join(os.path.expanduser("~"), "data")
    assert parse_url("./~/data").path == "./~/data"  # a folder named ~, said so
