"""End to end: a packed, encrypted dataset on HDFS read by ``ShardedDataset`` through a
multi-worker ``DataLoader`` (the workers unpickle the store and open their own client)."""

from __future__ import annotations

import gc
import os
import signal
import time
import warnings
from pathlib import Path

import pytest
from e2e_dataset import new_key_file, pack_encrypted, read_two_epochs
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures

from dcstore.backends.hdfs_fork import HdfsForkWarning
from dcstore.backends.registry import open_backend

pytest.importorskip("torch")
pytestmark = [pytest.mark.server("hdfs"), pytest.mark.slow]


def test_encrypted_dataset_on_hdfs(hdfs_base: str, tmp_path: Path) -> None:  # noqa: F811
    keys = new_key_file(tmp_path)
    url = f"{hdfs_base}/dataset"
    pack_encrypted(url, keys)
    # forkserver: hdfs-native's reads stall in a process forked after use (HdfsForkWarning).
    read_two_epochs(url, keys, context="forkserver")


def test_forked_child_frees_no_inherited_client(hdfs_base: str) -> None:  # noqa: F811
    """Freeing a client inherited through fork hangs in hdfs-native 0.14.7: the child warns
    and reconnects, and neither reconnecting, close() nor the GC frees the old client."""
    backend = open_backend(hdfs_base)
    backend.put("k", b"parent")
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
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                gc.collect()
                ok = backend.head("k").size == 6  # reconnects (NameNode only: no reads)
                backend.close()
            ok &= any(w.category is HdfsForkWarning for w in caught)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung freeing an inherited hdfs-native client")
        time.sleep(0.05)
    assert os.read(read, 1) == b"1"
    assert backend.get("k") == b"parent"
