"""EncryptedBackend stacked on memory and on local passes the shared conformance suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcstore.backends.base import Backend
from dcstore.backends.local import LocalBackend
from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import EncryptedBackend, FileKeySource, Keyring, write_key_file
from dcstore.testing.conformance import BackendConformance


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "kek.json"
    write_key_file(path, Keyring.generate("conformance-kek"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    return path


class TestEncryptedOnMemory(BackendConformance):
    stores_across_processes = False

    @pytest.fixture
    def backend(self, key_file: Path) -> Iterator[Backend]:
        inner = MemoryBackend(f"crypto-{uuid.uuid4().hex[:8]}")
        yield EncryptedBackend(inner, FileKeySource(key_file), segment_size=1 << 20)


class TestEncryptedOnLocal(BackendConformance):
    streaming_object_size = 1 << 30

    @pytest.fixture
    def backend(self, key_file: Path, tmp_path: Path) -> Iterator[Backend]:
        yield EncryptedBackend(LocalBackend(tmp_path / "root"), f"file://{key_file}")
