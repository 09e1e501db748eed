"""The stack users run, for server tests: ``open_store(url, cache=<Redis>, keys=<key
file>)``, each store with a fresh Redis namespace so tests never share cached chunks."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from redis_server import shared_redis_url

from dcstore.backends.base import Backend
from dcstore.crypto import Keyring, write_key_file
from dcstore.store import open_store


@pytest.fixture(scope="module")
def stack_keys(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A key file for the module's stacks, as a ``file://`` URL."""
    path = tmp_path_factory.mktemp("stack-keys") / "kek.json"
    write_key_file(path, Keyring.generate("stack-kek"))
    return f"file://{path}"


def cache_url(namespace: str) -> str:
    """The shared Redis with its own namespace (1 MiB chunks: objects span chunks)."""
    url = shared_redis_url()
    return f"{url}{'&' if '?' in url else '?'}namespace={namespace}&chunk_bytes=1048576"


def full_stack(url: str, keys: str, **options: Any) -> tuple[Backend, str]:
    """``open_store`` with encryption, the Redis tier and retries; also its namespace."""
    namespace = f"stack-{uuid.uuid4().hex[:10]}"
    return open_store(url, cache=cache_url(namespace), keys=keys, retries=3, **options), namespace


def key_path(keys: str) -> Path:
    return Path(keys.removeprefix("file://"))
