"""End to end: a packed, encrypted dataset on HDFS read by ``ShardedDataset`` through a
multi-worker ``DataLoader`` (the workers unpickle the store and open their own client)."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_dataset import new_key_file, pack_encrypted, read_two_epochs
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures

from dcstore.backends.registry import open_backend

pytest.importorskip("torch")
pytestmark = [pytest.mark.server("hdfs"), pytest.mark.slow]


def test_encrypted_dataset_on_hdfs(hdfs_base: str, tmp_path: Path) -> None:  # noqa: F811
    keys = new_key_file(tmp_path)
    url = f"{hdfs_base}/dataset"
    pack_encrypted(url, keys)
    # forkserver: hdfs-native's runtime does not survive fork after use in this process.
    read_two_epochs(url, keys, context="forkserver")


def test_fork_after_use_warns(hdfs_base: str) -> None:  # noqa: F811
    """A child forked after the driver was used gets a clear warning, not a silent hang."""
    import os

    from dcstore.backends.hdfs import HdfsForkWarning

    backend = open_backend(hdfs_base)
    list(backend.list())  # the driver runs in this process now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clone = open_backend(hdfs_base)
            clone._fs()
        os.write(write, b"1" if any(w.category is HdfsForkWarning for w in caught) else b"0")
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1" and status == 0
