"""End to end: a packed, encrypted dataset in MongoDB GridFS read by ``ShardedDataset``
through a multi-worker ``DataLoader`` (workers reconnect after fork)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from ferretdb_server import mongodb_url  # noqa: F401 - fixture

from dcstore.backends.registry import open_backend
from dcstore.testing.conformance import payload

torch_data = pytest.importorskip("torch.utils.data")
pytestmark = [pytest.mark.server("mongodb"), pytest.mark.slow]

SAMPLES = 300


def _sample(i: int) -> dict[str, Any]:
    return {"__key__": f"s{i:05d}", "bin": payload(2000 + i, i), "cls": i % 5}


def _fields(sample: dict[str, Any]) -> tuple[str, bytes, int]:
    return str(sample["__key__"]), bytes(sample["bin"]), int(sample["cls"])


def test_encrypted_dataset_in_gridfs(mongodb_url: str, tmp_path: Path) -> None:  # noqa: F811
    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import ShardedDataset, ShardWriter

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    keys = f"file://{keyfile}"
    sep = "&" if "?" in mongodb_url else "?"
    url = f"{mongodb_url}{sep}bucket=ds{uuid.uuid4().hex[:8]}&chunk_size=65536"

    with ShardWriter(url, keys=keys, shard_size=128 * 1024) as writer:
        for i in range(SAMPLES):
            writer.write(_sample(i))
    raw = open_backend(url)
    shards = [m for m in raw.list() if m.key.endswith(".tar")]
    assert len(shards) >= 4
    first = raw.get(shards[0].key)
    assert payload(2000, 0)[:64] not in first, "shards are stored encrypted"

    ds = ShardedDataset(url, keys=keys, shuffle=True, seed=3).map(_fields)
    loader = torch_data.DataLoader(ds, batch_size=None, num_workers=2)
    expected = {_fields(_sample(i)) for i in range(SAMPLES)}
    orders = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen = [tuple(item) for item in loader]  # the DataLoader turns tuples into lists
        assert len(seen) == SAMPLES
        assert set(seen) == expected
        orders.append([s[0] for s in seen])
    assert orders[0] != orders[1], "shuffle differs per epoch"
    raw.close()
