"""Token datasets on the stack users run: encrypted, behind the shared Redis tier, over
every real server (HDFS, Cassandra, MongoDB), packed and read as users do."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from cassandra_server import cassandra_hosts, cassandra_url  # noqa: F401 - fixtures
from ferretdb_server import mongodb_url  # noqa: F401 - fixture
from full_stack import cache_url, stack_keys  # noqa: F401 - fixture
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures
from torch.utils.data import DataLoader

from dcstore.store import open_store
from dcstore.tokens import TokenWriter
from dcstore.tokens.dataset import DocumentDataset, TokenDataset


@pytest.fixture(params=["hdfs", "cassandra", "mongodb"])
def server_store(request: pytest.FixtureRequest) -> str:
    if request.param == "hdfs":
        return f"{str(request.getfixturevalue('hdfs_base')).rstrip('/')}/tok{uuid.uuid4().hex[:8]}"
    if request.param == "cassandra":
        return f"{request.getfixturevalue('cassandra_url')}/tok{uuid.uuid4().hex[:8]}"
    return f"{request.getfixturevalue('mongodb_url')}?bucket=tok{uuid.uuid4().hex[:10]}"


def test_blocks_and_documents_on_the_full_stack(
    server_store: str,
    stack_keys: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    cache = cache_url(uuid.uuid4().hex[:8])
    store = open_store(server_store, keys=stack_keys)
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50_000, int(rng.integers(10, 3000))) for _ in range(60)]
    with TokenWriter(store, vocab_size=50_001, eod=50_000, columns=["label"],
                     shard_bytes=64 * 1024) as writer:  # fmt: skip
        for i, doc in enumerate(docs):
            writer.write(doc, label=i % 4)
    stream = np.concatenate([np.append(d, 50_000) for d in docs])
    ds = TokenDataset(server_store, block_size=257, keys=stack_keys, cache=cache, shuffle=True)
    for epoch in range(2):  # the second epoch from the Redis tier: the same blocks
        ds.set_epoch(epoch)
        got = sorted(b.numpy().tobytes() for batch in DataLoader(ds, batch_size=8,
                     num_workers=2) for b in batch)  # fmt: skip
        want = sorted(stream[i * 257 : (i + 1) * 257].astype("<u2").tobytes()
                      for i in range(len(stream) // 257))  # fmt: skip
        assert got == want
    i = len(stream) // 257 - 1
    assert ds.read(i).numpy().tolist() == stream[i * 257 : (i + 1) * 257].tolist()
    documents = DocumentDataset(server_store, max_length=64, keys=stack_keys, cache=cache)
    items = list(documents)
    assert [it["label"] for it in items] == [i % 4 for i in range(60)]
    assert items[7]["input_ids"].tolist() == np.append(docs[7], 50_000)[:64].tolist()
