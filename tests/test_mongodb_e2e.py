"""End to end: a packed, encrypted dataset in MongoDB GridFS read by ``ShardedDataset``
through a multi-worker ``DataLoader`` (workers reconnect after fork)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from e2e_dataset import new_key_file, pack_encrypted, read_two_epochs
from ferretdb_server import mongodb_url  # noqa: F401 - fixture

pytest.importorskip("torch")
pytestmark = [pytest.mark.server("mongodb"), pytest.mark.slow]


def test_encrypted_dataset_in_gridfs(mongodb_url: str, tmp_path: Path) -> None:  # noqa: F811
    keys = new_key_file(tmp_path)
    sep = "&" if "?" in mongodb_url else "?"
    url = f"{mongodb_url}{sep}bucket=ds{uuid.uuid4().hex[:8]}&chunk_size=65536"
    pack_encrypted(url, keys)
    read_two_epochs(url, keys)
