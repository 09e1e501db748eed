"""One way driver errors become dcstore errors (dcstore/backends/error_map.py): one
message shape, ``url`` / ``key`` attributes that survive pickling and retries, and the
loader naming the shard on an error raised below it without rebuilding it."""

from __future__ import annotations

import pickle

import pytest

from dcstore import ShardedDataset, ShardWriter
from dcstore.backends.error_map import mapped_errors
from dcstore.backends.memory import MemoryBackend
from dcstore.errors import BackendUnavailableError, DcstoreError, NotFoundError
from dcstore.retry import RetryPolicy


class DriverTimeout(Exception):
    pass


def classify(exc: Exception) -> tuple[type[DcstoreError], str] | None:
    if isinstance(exc, DriverTimeout):
        return BackendUnavailableError, f"timed out ({exc})"
    return None


def test_a_driver_error_becomes_one_line_with_url_and_key() -> None:
    with (
        pytest.raises(BackendUnavailableError) as info,
        mapped_errors("hdfs://nn:9000/data", "get", "shards/000001.tar", classify),
    ):
        raise DriverTimeout("after 5 s")
    exc = info.value
    assert str(exc) == "hdfs://nn:9000/data: get 'shards/000001.tar': timed out (after 5 s)"
    assert (exc.url, exc.key) == ("hdfs://nn:9000/data", "shards/000001.tar")
    assert isinstance(exc.__cause__, DriverTimeout) and isinstance(exc, ConnectionError)
    copy = pickle.loads(pickle.dumps(exc))  # e.g. from a DataLoader worker
    assert (type(copy), copy.url, copy.key, str(copy)) == (type(exc), exc.url, exc.key, str(exc))


def test_what_the_table_does_not_know_and_dcstore_errors_pass_through() -> None:
    with pytest.raises(KeyError), mapped_errors("u", "get", "k", classify):
        raise KeyError("not a driver error")
    mine = NotFoundError("already located", url="u", key="k")
    with pytest.raises(NotFoundError) as info, mapped_errors("v", "get", "other", classify):
        raise mine
    assert info.value is mine


def test_giving_up_after_retries_keeps_the_location() -> None:
    policy = RetryPolicy(attempts=2, base_delay=0)

    def fail() -> None:
        raise BackendUnavailableError("u: get 'k': down", url="u", key="k")

    with pytest.raises(BackendUnavailableError) as info:
        policy.call("get", fail)
    assert (info.value.url, info.value.key) == ("u", "k")
    assert "gave up after 2 attempts" in str(info.value)


def test_the_loader_names_the_shard_on_the_same_exception() -> None:
    store = MemoryBackend("memory://errors")
    with ShardWriter(store, shard_size=1000) as writer:
        for i in range(20):
            writer.write({"__key__": f"s{i:03d}", "bin": bytes(200)})
    shard = next(m.key for m in store.list_objects() if m.key.endswith(".tar"))
    store.delete(shard)
    with pytest.raises(NotFoundError) as info:
        list(ShardedDataset(store))
    assert info.value.key == shard and info.value.url == store.url
    assert shard in str(info.value) and len(str(info.value).splitlines()) == 1
