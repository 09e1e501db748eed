"""The end-to-end scenario every storage backend runs: pack an encrypted dataset with
``ShardWriter``, check the stored shards are ciphertext, then read it for two epochs
through ``ShardedDataset`` and a 2-worker ``DataLoader``: every sample exactly once,
a different order per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dcstore.backends.registry import open_backend
from dcstore.testing.conformance import payload

SAMPLES = 300


def sample(i: int) -> dict[str, Any]:
    return {"__key__": f"s{i:05d}", "bin": payload(2000 + i, i), "cls": i % 5}


def fields(item: dict[str, Any]) -> tuple[str, bytes, int]:
    """The comparable content of a sample (a module function, so it pickles to workers)."""
    return str(item["__key__"]), bytes(item["bin"]), int(item["cls"])


def new_key_file(tmp_path: Path) -> str:
    from dcstore.crypto import Keyring, write_key_file

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    return f"file://{keyfile}"


def pack_encrypted(url: str, keys: str, shard_size: int = 128 * 1024) -> tuple[str, bytes]:
    """Pack :data:`SAMPLES` samples; return the first shard's key and its stored bytes."""
    from dcstore.loaders import ShardWriter

    with ShardWriter(url, keys=keys, shard_size=shard_size) as writer:
        for i in range(SAMPLES):
            writer.write(sample(i))
    with open_backend(url) as raw:
        shards = [m.key for m in raw.list_objects() if m.key.endswith(".tar")]
        assert len(shards) >= 4, shards
        first = raw.get(shards[0])
    assert payload(2000, 0)[:64] not in first, "shards are stored encrypted"
    return shards[0], first


def read_two_epochs(
    url: str, keys: str, *, cache: str | None = None, context: str | None = None
) -> None:
    """Read every sample exactly once per epoch, in a different order each epoch."""
    import torch.utils.data

    from dcstore.loaders import ShardedDataset

    ds = ShardedDataset(url, keys=keys, cache=cache, shuffle=True, seed=3).map(fields)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context=context
    )
    expected = {fields(sample(i)) for i in range(SAMPLES)}
    orders = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen = [tuple(item) for item in loader]  # the DataLoader turns tuples into lists
        assert len(seen) == SAMPLES
        assert set(seen) == expected
        orders.append([s[0] for s in seen])
    assert orders[0] != orders[1], "shuffle differs per epoch"
