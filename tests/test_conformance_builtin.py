"""The conformance suite on the embedded backends (memory, local disk), and on the stack
users run over local disk (keys and the shared Redis tier: skipped without it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from full_stack import full_stack, stack_keys  # noqa: F401 - fixture

from dcstore.backends.base import Backend
from dcstore.backends.local import LocalBackend
from dcstore.backends.memory import MemoryBackend
from dcstore.store import open_store
from dcstore.testing.conformance import BackendConformance


class TestMemoryConformance(BackendConformance):
    stores_across_processes = False

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield MemoryBackend(f"conf-{uuid.uuid4().hex}")


class TestLocalConformance(BackendConformance):
    streaming_object_size = 3 << 30  # several GB through 256 MiB of memory

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


class TestLocalFullStackConformance(BackendConformance):
    """The stack users run on local disk: keys, the shared Redis tier, retries."""

    large_object_size = 1 << 20

    @pytest.fixture
    def backend(self, tmp_path, stack_keys: str) -> Iterator[Backend]:  # noqa: F811
        store, _ = full_stack(str(tmp_path / "store"), stack_keys)
        with store:
            yield store
