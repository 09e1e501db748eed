"""dcstore: storage and caching for AI training data.

One :class:`Backend` contract over local disk, HDFS, Cassandra and MongoDB;
AES-256-GCM encrypted shards; a Redis hot tier; and ``ShardedDataset``, a
prefetching PyTorch loader. Start with :func:`open_store` or
:class:`ShardedDataset`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dcstore.backends.base import Backend, ObjectMeta
from dcstore.backends.registry import open_backend
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    IntegrityError,
    InvalidKeyError,
    InvalidRangeError,
    KeyAccessError,
    NotFoundError,
    StorageFullError,
    VersionChangedError,
)
from dcstore.store import open_store

if TYPE_CHECKING:
    from dcstore.loaders import (
        DataWaitMeter,
        DeviceLoader,
        RingLoader,
        ShardedDataset,
        ShardedMapDataset,
        ShardWriter,
    )
    from dcstore.tokens import DocumentDataset, TokenDataset, TokenWriter, pack_text

__version__ = "0.1.0"

_LAZY = {
    name: "dcstore.loaders"
    for name in (
        "DataWaitMeter",
        "DeviceLoader",
        "RingLoader",
        "ShardWriter",
        "ShardedDataset",
        "ShardedMapDataset",
    )
}
_LAZY.update(
    {
        name: "dcstore.tokens"
        for name in ("DocumentDataset", "TokenDataset", "TokenWriter", "pack_text")
    }
)


def __getattr__(name: str) -> Any:
    """Import the loader (and torch) only when it is asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dcstore' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendUnavailableError",
    "ConfigError",
    "DataWaitMeter",
    "DcstoreError",
    "DeviceLoader",
    "DocumentDataset",
    "IntegrityError",
    "InvalidKeyError",
    "InvalidRangeError",
    "KeyAccessError",
    "NotFoundError",
    "ObjectMeta",
    "RingLoader",
    "ShardWriter",
    "ShardedDataset",
    "ShardedMapDataset",
    "StorageFullError",
    "TokenDataset",
    "TokenWriter",
    "VersionChangedError",
    "open_backend",
    "open_store",
    "pack_text",
]
