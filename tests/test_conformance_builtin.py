"""The conformance suite on the embedded backends: memory and local disk."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from dcstore.backends.base import Backend
from dcstore.backends.local import LocalBackend
from dcstore.backends.memory import MemoryBackend
from dcstore.store import open_store
from dcstore.testing.conformance import BackendConformance


class TestMemoryConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield MemoryBackend(f"conf-{uuid.uuid4().hex}")


class TestLocalConformance(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path) -> Iterator[Backend]:
        yield LocalBackend(tmp_path / "store")


class TestRetryingLocalConformance(BackendConformance):
    """The stack ``open_store`` builds without cache or keys."""

    large_object_size = 1 << 20

    @pytest.fixture
    def backend(self, tmp_path) -> Iterator[Backend]:
        with open_store(str(tmp_path / "store")) as store:
            yield store
