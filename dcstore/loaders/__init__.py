"""Loaders: pack samples into encrypted tar shards, stream them into PyTorch.

``ShardWriter`` / ``dcstore pack`` write a dataset (tar shards + a Parquet
manifest committed last); ``ShardedDataset`` streams it into a
``DataLoader`` (planned, prefetched, resumable, DDP-safe); ``RingLoader``
hands batches over in reusable shared memory instead; ``DeviceLoader``
feeds a GPU and measures data-wait. Torch is imported only when
``ShardedDataset`` or ``DeviceLoader`` is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dcstore.loaders.manifest import MANIFEST_KEY, Manifest, ShardInfo, load_manifest
from dcstore.loaders.plan import WorkerPlan, plan_epoch
from dcstore.loaders.writer import ShardWriter

if TYPE_CHECKING:
    from dcstore.loaders.dataset import ShardedDataset
    from dcstore.loaders.device import DataWaitMeter, DeviceLoader
    from dcstore.loaders.mapstyle import ShardedMapDataset
    from dcstore.loaders.ringloader import RingLoader

_LAZY = {
    "ShardedDataset": "dcstore.loaders.dataset",
    "DeviceLoader": "dcstore.loaders.device",
    "DataWaitMeter": "dcstore.loaders.device",
    "ShardedMapDataset": "dcstore.loaders.mapstyle",
    "RingLoader": "dcstore.loaders.ringloader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dcstore.loaders' has no attribute {name!r}")


__all__ = [
    "MANIFEST_KEY",
    "DataWaitMeter",
    "DeviceLoader",
    "Manifest",
    "RingLoader",
    "ShardInfo",
    "ShardWriter",
    "ShardedDataset",
    "ShardedMapDataset",
    "WorkerPlan",
    "load_manifest",
    "plan_epoch",
]
