"""HdfsBackend against a real HDFS (MiniDFSCluster in CI): conformance and HDFS specifics."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator

import hdfs_native
import pytest
from full_stack import full_stack, stack_keys  # noqa: F401 - fixture
from hdfs_server import REPO, hdfs_base, hdfs_url, join  # noqa: F401 - fixtures

from dcstore.backends.base import Backend
from dcstore.backends.hdfs import HdfsBackend
from dcstore.backends.hdfs.errors import classify_error
from dcstore.backends.registry import open_backend
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    IntegrityError,
    KeyAccessError,
    NotFoundError,
    StorageFullError,
)
from dcstore.testing.conformance import BackendConformance

MiB = 1 << 20


class TestHdfsConformance(BackendConformance):
    """The backend alone, under a fresh base directory per test."""

    @pytest.fixture
    def backend(self, hdfs_base: str) -> Iterator[Backend]:  # noqa: F811
        backend = open_backend(hdfs_base)
        yield backend
        backend.close()


class TestHdfsStoreConformance(BackendConformance):
    """The stack users run: ``open_store`` with keys, the Redis tier and retries, with
    small blocks so objects span blocks."""

    large_object_size = 16 * MiB + 1
    state_machine_examples = 10

    @pytest.fixture
    def backend(self, hdfs_base: str, stack_keys: str) -> Iterator[Backend]:  # noqa: F811
        store, _ = full_stack(hdfs_base, stack_keys, block_size=MiB)
        yield store
        store.close()


@pytest.fixture
def hdfs(hdfs_base: str) -> Iterator[HdfsBackend]:  # noqa: F811
    backend = open_backend(hdfs_base)
    assert isinstance(backend, HdfsBackend)
    yield backend
    backend.close()


def _client(backend: HdfsBackend) -> hdfs_native.Client:
    return backend._fs()


def test_multi_block_ranges(hdfs_base: str) -> None:  # noqa: F811
    """Ranges across 1 MiB block boundaries come back exactly."""
    backend = open_backend(hdfs_base, block_size=MiB, replication=1)
    data = bytes(range(256)) * (3 * MiB // 256) + b"tail"
    backend.put("blocks", data)
    status = _client(backend).get_file_info(backend._path("blocks"))
    assert status.blocksize == MiB and status.replication == 1
    for start, end in [(MiB - 3, MiB + 3), (0, 2 * MiB + 1), (3 * MiB - 1, len(data))]:
        assert backend.get_range("blocks", start, end) == data[start:end]


def test_temporary_files_are_hidden_and_removed(hdfs: HdfsBackend) -> None:
    hdfs.put("dir/a", b"1")
    fs = _client(hdfs)
    # A temporary file left by a killed writer is not listed and not an object.
    with fs.create(hdfs._path("dir/.dcstore-tmp-left-behind")) as writer:
        writer.write(b"partial")
    assert [m.key for m in hdfs.list_objects()] == ["dir/a"]
    names = sorted(s.path.rsplit("/", 1)[-1] for s in fs.list_status(hdfs._path("dir")))
    # put cleaned up after itself: only the object and the planted file remain.
    assert names == [".dcstore-tmp-left-behind", "a"]


def test_version_is_monotonic_across_fast_overwrites(hdfs: HdfsBackend) -> None:
    versions = [hdfs.put("v", b"same").version for _ in range(15)]
    assert len(set(versions)) == 15
    mtimes = [int(v.split("-")[0]) for v in versions]
    assert mtimes == sorted(mtimes)
    assert hdfs.head("v").version == versions[-1]


def test_racing_overwrites_of_one_key_never_share_a_version(
    hdfs_base: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two writers committing one key at once both took ``previous mtime + 1``: with
    equal sizes, 80 of 400 racing puts shared a token with other bytes (writers whose
    clocks lag, as here), so a cache served one writer's bytes for the other's version."""
    import threading
    import time as real_time

    from dcstore.backends.hdfs import backend as hdfs_module

    lagging = real_time.time() - 60  # every writer's clock behind the NameNode's
    monkeypatch.setattr(hdfs_module.time, "time", lambda: lagging)
    rounds, barrier = 25, threading.Barrier(2)
    results: list[tuple[str, int]] = []

    def writer(number: int) -> None:
        store = open_backend(hdfs_base)
        for i in range(rounds):
            barrier.wait()
            tag = number * 1000 + i
            results.append((store.put("k", tag.to_bytes(8, "big") * 100).version, tag))
        store.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 * rounds
    assert len({version for version, _ in results}) == 2 * rounds
    store = open_backend(hdfs_base)
    names = [s.path.rsplit("/", 1)[-1] for s in _client(store).list_status(store._path(""))]
    assert names == ["k"]  # every lock released


def test_a_commit_lock_waits_for_its_holder_and_breaks_a_dead_ones(hdfs: HdfsBackend) -> None:
    import threading
    import time

    from dcstore.backends.hdfs.commit_lock import STALE_AFTER_S, lock_path

    fs = _client(hdfs)
    hdfs.put("d/k", b"old")
    lock = lock_path(hdfs._path("d/k"))
    fs.create(lock).close()  # a live holder
    done = threading.Event()
    threading.Thread(target=lambda: (hdfs.put("d/k", b"new"), done.set())).start()
    assert not done.wait(0.5)  # waits for the holder
    fs.delete(lock, False)
    assert done.wait(10) and hdfs.get("d/k") == b"new"
    fs.create(lock).close()  # a holder that died long ago
    old_ms = int((time.time() - STALE_AFTER_S - 5) * 1000)
    fs.set_times(lock, old_ms, old_ms)
    hdfs.put("d/k", b"newer")  # breaks it
    assert hdfs.get("d/k") == b"newer"
    with pytest.raises(FileNotFoundError):
        fs.get_file_info(lock)
    fs.create(lock).close()
    fs.set_times(lock, old_ms, old_ms)
    hdfs.sweep(older_than=0)  # and sweep removes one left behind
    with pytest.raises(FileNotFoundError):
        fs.get_file_info(lock)


def test_delete_removes_the_directories_it_empties(hdfs: HdfsBackend) -> None:
    hdfs.put("a/b/c", b"deep")
    hdfs.put("a/x", b"sibling")
    hdfs.delete("a/b/c")  # "a/b" is empty now, "a" is not
    fs = _client(hdfs)
    assert [s.path.rsplit("/", 1)[-1] for s in fs.list_status(hdfs._path("a"))] == ["x"]
    hdfs.delete("a/x")
    assert list(fs.list_status(hdfs._root)) == []
    hdfs.put("a", b"now a file")  # found by hypothesis: put "b/d/e", delete it, put "b"
    assert hdfs.get("a") == b"now a file"


def test_put_over_an_empty_directory_tree(hdfs: HdfsBackend) -> None:
    fs = _client(hdfs)
    fs.mkdirs(hdfs._path("t/u/v"), create_parent=True)  # e.g. left by an older dcstore
    fs.mkdirs(hdfs._path("t/w"), create_parent=True)
    hdfs.put("t", b"file")
    assert hdfs.get("t") == b"file"
    assert [m.key for m in hdfs.list_objects()] == ["t"]


def test_put_over_a_prefix_of_objects_is_refused(hdfs: HdfsBackend) -> None:
    hdfs.put("p/q/r", b"kept")
    with pytest.raises(DcstoreError, match="prefix"):
        hdfs.put("p", b"x")
    assert hdfs.get("p/q/r") == b"kept"
    assert [m.key for m in hdfs.list_objects()] == ["p/q/r"]


def test_key_under_an_object_is_a_clear_error(hdfs: HdfsBackend) -> None:
    hdfs.put("f", b"file")
    with pytest.raises(DcstoreError, match="prefix"):
        hdfs.put("f/g", b"x")
    assert list(hdfs.list_objects("f/")) == []
    assert [m.key for m in hdfs.list_objects("f")] == ["f"]


def test_delete_of_a_prefix_keeps_the_objects(hdfs: HdfsBackend) -> None:
    hdfs.put("p/q", b"1")
    hdfs.delete("p")
    assert hdfs.get("p/q") == b"1"


def test_url_and_pickle_keep_options(hdfs_base: str) -> None:  # noqa: F811
    backend = open_backend(hdfs_base, replication=1, block_size=2 * MiB, timeout=30)
    assert backend.url.partition("?")[0] == hdfs_base.partition("?")[0]
    assert f"block_size={2 * MiB}&" in backend.url and "&replication=1&timeout=30.0" in backend.url
    clone = pickle.loads(pickle.dumps(backend))
    assert clone.url == backend.url
    reopened = open_backend(backend.url)
    reopened.put("x", b"1")
    assert clone.get("x") == b"1"


def test_conf_dir_and_default_fs(hdfs_url: str) -> None:  # noqa: F811
    """A URL without host takes fs.defaultFS from the configuration directory."""
    port = hdfs_url.partition("?")[0].rstrip("/").rsplit(":", 1)[-1]
    conf_dir = REPO / ".servers" / "hdfs" / f"nn-{port}" / "conf"
    if not (conf_dir / "core-site.xml").exists():
        pytest.skip(f"no client configuration at {conf_dir} (server not started by start.sh)")
    base = f"/dcstore-test/{uuid.uuid4().hex[:12]}"
    backend = open_backend(f"hdfs://{base}", conf_dir=str(conf_dir))
    backend.put("k", b"via conf_dir")
    assert open_backend(join(hdfs_url, base)).get("k") == b"via conf_dir"


def test_unknown_option_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        open_backend("hdfs://127.0.0.1:9/x?colour=blue")
    with pytest.raises(ConfigError):
        open_backend("hdfs://127.0.0.1:9/x", replication=-1)
    with pytest.raises(ConfigError, match="conf_dir '/nonexistent' is not a directory"):
        open_backend("hdfs://mycluster/x?conf_dir=/nonexistent")  # was: "No NameNode hosts"
    with pytest.raises(ConfigError, match=r"no port given.*hdfs://127\.0\.0\.1:9000"):
        open_backend("hdfs://127.0.0.1/x").head("a")  # was: 'InvalidArgument("No NameNode ...")'
    with pytest.raises(ConfigError, match="key=value"):
        open_backend("hdfs://127.0.0.1:9/x", hadoop_conf="nonsense")
    with pytest.raises(ConfigError, match="keywords"):
        HdfsBackend("hdfs://127.0.0.1:9/x?replication=2")
    with pytest.raises(ConfigError, match="viewfs"):
        HdfsBackend("file:///tmp/x")


def test_hadoop_conf_survives_the_url() -> None:
    backend = open_backend(
        "hdfs://127.0.0.1:9/x?hadoop_conf=dfs.client.use.datanode.hostname%3Dtrue"
    )
    assert isinstance(backend, HdfsBackend)
    assert backend._hadoop_config()["dfs.client.use.datanode.hostname"] == "true"
    again = open_backend(backend.url)
    assert isinstance(again, HdfsBackend) and again._extra == backend._extra


def test_unreachable_namenode_is_unavailable() -> None:
    backend = open_backend("hdfs://127.0.0.1:1/x", failover_attempts=1)
    with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1"):
        backend.head("k")


@pytest.mark.parametrize(
    "exc,expected",
    [
        (FileNotFoundError("/x"), NotFoundError),
        (OSError("Connection refused (os error 111)"), BackendUnavailableError),
        (
            RuntimeError('RPCError("org.apache.hadoop.ipc.StandbyException", "x")'),
            BackendUnavailableError,
        ),
        (
            RuntimeError(
                'RPCError("org.apache.hadoop.hdfs.server.namenode.SafeModeException", '
                '"Cannot create file. Name node is in safe mode.\\n\\tat org...")'
            ),
            BackendUnavailableError,
        ),
        (
            RuntimeError('RPCError("org.apache.hadoop.security.AccessControlException", "no")'),
            KeyAccessError,
        ),
        (
            RuntimeError(
                'RPCError("org.apache.hadoop.hdfs.protocol.DSQuotaExceededException", "full")'
            ),
            StorageFullError,
        ),
        (
            RuntimeError(
                'RPCError("org.apache.hadoop.ipc.RemoteException", "File /x could only be '
                'written to 0 of the 1 minReplication nodes.")'
            ),
            BackendUnavailableError,
        ),
        (RuntimeError('DataTransferError("DataNode read failed")'), BackendUnavailableError),
        (RuntimeError('ChecksumError("bad")'), IntegrityError),
        (RuntimeError('InvalidPath("p")'), ConfigError),
        (
            RuntimeError(
                'RPCError("org.apache.hadoop.security.AccessControlException", '
                '"/base/b (is not a directory)\\n\\tat org...")'
            ),
            NotFoundError,
        ),
        (RuntimeError('RPCError("java.lang.IllegalStateException", "odd")'), DcstoreError),
    ],
)
def test_error_classification(exc: Exception, expected: type) -> None:
    error, message = classify_error(exc)
    assert error is expected
    assert "\n" not in message and "\\n" not in message
