"""End to end: a packed, encrypted dataset on HDFS read by ``ShardedDataset`` through a
multi-worker ``DataLoader`` (the workers unpickle the store and open their own client)."""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import pytest
from e2e_dataset import SAMPLES, fields, new_key_file, pack_encrypted, read_two_epochs
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures

from dcstore.backends.registry import open_backend

pytest.importorskip("torch")
pytestmark = [pytest.mark.server("hdfs"), pytest.mark.slow]


def test_encrypted_dataset_on_hdfs(hdfs_base: str, tmp_path: Path) -> None:  # noqa: F811
    keys = new_key_file(tmp_path)
    url = f"{hdfs_base}/dataset"
    pack_encrypted(url, keys)
    read_two_epochs(url, keys, context="forkserver")


def test_default_fork_loader_after_the_parent_read_does_not_stall(
    hdfs_base: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The README's loader with fork workers, after a look at the dataset in the parent:
    each worker waits out hdfs-native's DataNode connection cache (3 s) instead of
    stalling 60 s per read on a connection bound to the parent's runtime."""
    import torch.utils.data

    from dcstore.loaders import ShardedDataset

    keys = new_key_file(tmp_path)
    url = f"{hdfs_base}/dataset"
    pack_encrypted(url, keys)
    ds = ShardedDataset(url, keys=keys, shuffle=True, seed=1)
    assert len(ds) == SAMPLES and ds.read(0)["__key__"] == "s00000"  # touched in the parent
    loader = torch.utils.data.DataLoader(
        ds.map(fields),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=40,  # watchdog: a stalled read takes the 60 s socket timeout
    )
    assert sorted(key for key, _, _ in loader) == [f"s{i:05d}" for i in range(SAMPLES)]


def test_forked_child_frees_no_inherited_client(hdfs_base: str) -> None:  # noqa: F811
    """Freeing a client inherited through fork hangs in hdfs-native 0.14.7: the child
    reconnects and reads, and neither reconnecting, close() nor the GC frees the old client."""
    backend = open_backend(hdfs_base)
    backend.put("k", b"parent")
    assert backend.get("k") == b"parent"  # leaves a DataNode connection in the driver's cache
    gc.disable()  # until the fork: keep the garbage below for the child's collector
    cycle: list[object] = [open_backend(hdfs_base)]
    cycle[0].put("c", b"garbage")  # type: ignore[attr-defined]
    cycle.append(cycle)  # a used client reachable only from garbage
    del cycle
    read, write = os.pipe()
    pid = os.fork()
    gc.enable()
    if pid == 0:  # pragma: no cover - child
        try:
            gc.collect()
            ok = backend.get("k") == b"parent"  # reconnects, reads on a fresh connection
            backend.close()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 45  # a stalled read takes the 60 s socket timeout
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung freeing an inherited hdfs-native client")
        time.sleep(0.05)
    assert os.read(read, 1) == b"1"
    assert backend.get("k") == b"parent"
