"""End to end: a packed, encrypted dataset on HDFS read by ``ShardedDataset`` through a
multi-worker ``DataLoader`` (the workers unpickle the store and open their own client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures

from dcstore.backends.registry import open_backend
from dcstore.testing.conformance import payload

torch_data = pytest.importorskip("torch.utils.data")
pytestmark = [pytest.mark.server("hdfs"), pytest.mark.slow]

SAMPLES = 300


def _sample(i: int) -> dict[str, Any]:
    return {"__key__": f"s{i:05d}", "bin": payload(2000 + i, i), "cls": i % 5}


def _fields(sample: dict[str, Any]) -> tuple[str, bytes, int]:
    """Comparable fields; the DataLoader's default_convert turns bytes into int lists."""
    cls = sample["cls"]
    return (
        str(sample["__key__"]),
        bytes(sample["bin"]),
        int(cls if isinstance(cls, int) else bytes(cls)),
    )


def test_encrypted_dataset_on_hdfs(hdfs_base: str, tmp_path: Path) -> None:  # noqa: F811
    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import ShardedDataset, ShardWriter

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    keys = f"file://{keyfile}"
    url = f"{hdfs_base}/dataset"

    with ShardWriter(url, keys=keys, shard_size=128 * 1024) as writer:
        for i in range(SAMPLES):
            writer.write(_sample(i))
    raw = open_backend(url)
    shards = [m for m in raw.list() if m.key.endswith(".tar")]
    assert len(shards) >= 4
    first = raw.get(shards[0].key)
    assert payload(2000, 0)[:64] not in first, "shards are stored encrypted"

    # No .map(): forkserver workers receive the dataset pickled, and map stages are closures.
    ds = ShardedDataset(url, keys=keys, shuffle=True, seed=3)
    # forkserver: hdfs-native's runtime does not survive fork after use in this process.
    loader = torch_data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="forkserver"
    )
    expected = {_fields(_sample(i)) for i in range(SAMPLES)}
    orders = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen = [_fields(sample) for sample in loader]
        assert len(seen) == SAMPLES
        assert set(seen) == expected
        orders.append([s[0] for s in seen])
    assert orders[0] != orders[1], "shuffle differs per epoch"
    raw.close()


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
