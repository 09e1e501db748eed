"""``ShardedMapDataset``: map-style access to a packed dataset, one range read per sample.

For samplers that need ``dataset[i]`` (weighted, curriculum, evaluation
subsets). Each item is one ``get_range`` of the sample's bytes through the
manifest offsets (encrypted stores decrypt only the covering segments).
Streaming with :class:`~dcstore.loaders.ShardedDataset` is much faster for
whole epochs; use this when the access pattern is random.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from dcstore.backends.base import Backend
from dcstore.loaders.manifest import MANIFEST_KEY, Manifest
from dcstore.loaders.reader import SampleOptions, read_sample
from dcstore.loaders.versions import for_shard_reads, open_dataset
from dcstore.store import CacheSpec, KeySpec


class ShardedMapDataset(Dataset):  # type: ignore[type-arg]
    """``ds[i]`` is global sample ``i`` (a webdataset dict), passed through ``transform``.

    ``zero_copy``, ``verify_checksums`` and ``version`` are as for
    :class:`ShardedDataset`; the ranks of a job do not agree on a version here (a map-style
    dataset may be built on some ranks only): give every rank the same ``version=``.
    """

    def __init__(
        self,
        url_or_store: str | Backend,
        *,
        cache: CacheSpec | None = None,
        keys: KeySpec | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        manifest_key: str = MANIFEST_KEY,
        zero_copy: bool = False,
        verify_checksums: bool = True,
        version: str | None = None,
    ):
        self.store: Backend
        self.manifest: Manifest
        self.store, self.manifest = open_dataset(
            url_or_store, cache=cache, keys=keys, manifest_key=manifest_key, version=version
        )
        self.store = for_shard_reads(self.store, url_or_store)
        self.transform = transform
        self.sample_options = SampleOptions(zero_copy=zero_copy, verify=verify_checksums)

    def __repr__(self) -> str:
        return (
            f"ShardedMapDataset({self.store.url!r}, samples={self.manifest.num_samples}, "
            f"version={self.manifest.version!r})"
        )

    def __len__(self) -> int:
        return self.manifest.num_samples

    @property
    def classes(self) -> list[str]:
        """Class names from the manifest (``cls`` is an index here); empty without a table."""
        return list(self.manifest.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> ``cls`` index, like torchvision's ``ImageFolder.class_to_idx``."""
        return self.manifest.class_to_idx

    def __getitem__(self, index: int) -> Any:
        """Sample ``index`` (negative: from the end, as a list); not an integer: TypeError."""
        position = operator.index(index)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"sample {index} out of range (dataset has {len(self)})")
        sample = read_sample(self.store, self.manifest, position, self.sample_options)
        return self.transform(sample) if self.transform is not None else sample
