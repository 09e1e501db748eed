"""``TokenDataset`` and ``DocumentDataset``: a packed token corpus into PyTorch.

Usage::

    ds = TokenDataset("hdfs://nn:9000/corpus", block_size=2049, keys="file:///kek.json",
                      cache="redis://cache:6379/0", shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=8, num_workers=2)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in loader:            # uint16/uint32 [8, 2049]
            x, y = batch[:, :-1].long(), batch[:, 1:].long()

Guarantees (the same as ``ShardedDataset``'s, see :mod:`dcstore.tokens.spans` for items):

* Per epoch every block (document) is read once across ranks and workers, every rank
  yields the same number, the order is a pure function of (seed, epoch, rank, world,
  worker, workers); ``shuffle=True`` permutes shard order and then blocks inside
  windows of whole shards holding at least ``window`` blocks.
* ``state_dict()``/``load_state_dict()`` resume mid-epoch (torchdata's
  ``StatefulDataLoader`` protocol), with any number of workers.
* With ``torch.distributed`` initialised (and no ``rank``/``world_size`` given), the
  ranks agree on the corpus version (see :mod:`dcstore.loaders.agreement`): building the
  dataset is then a collective call on every rank. ``version=`` reads that version
  instead: the current one or the previous one the store keeps (e.g. the
  ``manifest_version`` of a resume state after a new pack).
* Reads pin the shard versions the manifest recorded: a shard replaced under the
  manifest is a ``VersionChangedError`` naming it, never a mix of versions.
* Workers receive the store and the manifest's address (a few hundred bytes), never
  key material and never the document table.
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from dcstore.backends.base import Backend
from dcstore.errors import ConfigError
from dcstore.loaders.agreement import agree_on_version
from dcstore.loaders.prefetch import Prefetcher
from dcstore.loaders.resumable import PlannedPasses
from dcstore.loaders.versions import for_shard_reads
from dcstore.store import CacheSpec, KeySpec, store_for
from dcstore.tokens import spans as item_spans
from dcstore.tokens.manifest import TokenManifest, load_token_manifest, pin_token_version
from dcstore.tokens.reader import DEFAULT_WINDOW_BYTES, fetch_tokens, read_items
from dcstore.units import whole_number

_DERIVED = ("spans", "_riders")


class _TokenItems(PlannedPasses, IterableDataset):  # type: ignore[type-arg]
    """Items (spans of the token stream) of a packed corpus, read by a plan."""

    def __init__(
        self, url_or_store: str | Backend, *, cache: CacheSpec | None, keys: KeySpec | None,
        shuffle: bool, seed: int, window: int, drop_last: bool, rank: int | None,
        world_size: int | None, prefetch_bytes: int, prefetch_threads: int, window_bytes: int,
        version: str | None,
    ) -> None:  # fmt: skip
        super().__init__()
        self._init_passes(
            shuffle=shuffle, seed=seed, window=window, shuffle_buffer=0, drop_last=drop_last,
            rank=rank, world_size=world_size,
        )  # fmt: skip
        self.store = store_for(url_or_store, cache=cache, keys=keys)
        current = load_token_manifest(self.store)
        self.manifest: TokenManifest
        if version is not None:
            self.manifest = pin_token_version(self.store, current, version)
        elif rank is None and world_size is None:  # the ranks of a job read one version
            self.manifest = agree_on_version(
                current,
                lambda v: pin_token_version(self.store, load_token_manifest(self.store), v),
                lambda: load_token_manifest(self.store),
            )
        else:
            self.manifest = current
        self.store = for_shard_reads(self.store, url_or_store)
        self.prefetcher = Prefetcher(threads=prefetch_threads, max_bytes=prefetch_bytes)
        self.window_bytes = window_bytes

    def __getstate__(self) -> dict[str, Any]:
        """Derived tables are rebuilt where unpickled (workers get the address only)."""
        return {k: v for k, v in self.__dict__.items() if k not in _DERIVED}

    @property
    @abc.abstractmethod
    def spans(self) -> item_spans.Spans:
        """The items, as spans of the token stream (a cached property in subclasses)."""

    def item_counts(self) -> np.ndarray:
        return self.spans.counts(self.manifest.starts)

    def dataset_version(self) -> str:
        return self.manifest.version

    def _max_tokens(self) -> int | None:
        return None

    @abc.abstractmethod
    def _item(self, index: int, tokens: np.ndarray) -> Any:
        """What the dataset hands out for item ``index`` given its tokens."""

    def __iter__(self) -> Iterator[Any]:
        """The pass's items. Not a generator: the pass begins when ``iter()`` is called, so
        a state taken before its first item (a ``DataLoader`` worker's) is this pass's."""
        active, plan = self._begin_pass()
        items = read_items(
            self.store, self.manifest, self.spans, plan, self.prefetcher, active.progress,
            self.window_bytes, self._max_tokens(),
        )  # fmt: skip
        return self._run(items)

    def _run(self, items: Iterator[tuple[int, np.ndarray]]) -> Iterator[Any]:
        for index, tokens in items:
            yield self._item(index, tokens)
        self._end_pass()

    def read(self, index: int) -> Any:
        """Item ``index`` read on its own: one ranged read of exactly its bytes (encrypted:
        of the segments they touch). Not an integer (``1.5``, ``True``): TypeError."""
        if isinstance(index, bool):  # operator.index takes it as 0 or 1
            raise TypeError(f"item index must be an integer, got {index!r}")
        index = operator.index(index)
        if not 0 <= index < len(self.spans):
            raise IndexError(f"item {index} out of range (dataset has {len(self.spans)})")
        starts, ends = self.spans.bounds(np.asarray([index]))
        end = int(ends[0])
        limit = self._max_tokens()
        if limit is not None:
            end = min(end, int(starts[0]) + limit)
        return self._item(index, fetch_tokens(self.store, self.manifest, int(starts[0]), end))

    @property
    def num_items(self) -> int:
        """Items in the whole dataset (every rank)."""
        return len(self.spans)


def _torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``dtype`` as a ``torch.dtype`` (a name such as ``"long"`` or ``"int32"`` is looked
    up), refused here when it is neither, not at the first block."""
    found = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if dtype is not None and not isinstance(found, torch.dtype):
        raise ConfigError(f"dtype must be a torch dtype (e.g. torch.long), got {dtype!r}")
    return found


def _check_holds_ids(dtype: torch.dtype | None, vocab_size: int, where: str) -> None:
    """Refuse a ``dtype`` that cannot hold every id below ``vocab_size`` (int8 wrapped
    the end-of-document id 256 of a byte vocabulary to 0, without a word)."""
    if dtype is None:
        return
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ConfigError(f"dtype must be an integer type for token ids, got {dtype}")
    if torch.iinfo(dtype).max < vocab_size - 1:
        raise ConfigError(
            f"{where}: dtype {dtype} cannot hold the corpus's ids (vocab_size {vocab_size}, "
            f"up to {vocab_size - 1}): use torch.long or torch.int32"
        )


class TokenDataset(_TokenItems):
    """Fixed-length blocks of ``block_size`` tokens of the corpus at ``url_or_store``.

    Blocks run over the concatenated stream (end-of-document ids included); with
    ``within_documents=True`` no block crosses a document boundary (each document's
    remainder is dropped). Blocks are tensors of the stored dtype (``torch.uint16``
    or ``torch.uint32``), zero-copy views of the reader's windows; ``dtype=torch.long``
    converts each one. For next-token training use ``block_size = context + 1``.
    """

    def __init__(
        self,
        url_or_store: str | Backend,
        *,
        block_size: int,
        within_documents: bool = False,
        dtype: torch.dtype | str | None = None,
        cache: CacheSpec | None = None,
        keys: KeySpec | None = None,
        shuffle: bool = False,
        seed: int = 0,
        window: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        prefetch_bytes: int = 64 * 1024 * 1024,
        prefetch_threads: int = 2,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        version: str | None = None,
    ):
        self.block_size = whole_number("block_size", block_size, minimum=1)
        self.within_documents = within_documents
        self.dtype = _torch_dtype(dtype)
        super().__init__(
            url_or_store, cache=cache, keys=keys, shuffle=shuffle, seed=seed, window=window,
            drop_last=drop_last, rank=rank, world_size=world_size,
            prefetch_bytes=prefetch_bytes, prefetch_threads=prefetch_threads,
            window_bytes=window_bytes, version=version,
        )  # fmt: skip
        _check_holds_ids(self.dtype, self.manifest.vocab_size, self.store.url)
        if self.num_items == 0:
            raise ConfigError(
                f"{self.store.url}: no block of {block_size} tokens in "
                f"{self.manifest.num_tokens} tokens"
                + (" within any document" if within_documents else "")
            )

    def item_settings(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "within_documents": self.within_documents}

    @cached_property
    def spans(self) -> item_spans.Spans:
        if self.within_documents:
            return item_spans.document_blocks(*self.manifest.document_spans(), self.block_size)
        return item_spans.stream_blocks(self.manifest.num_tokens, self.block_size)

    def _item(self, index: int, tokens: np.ndarray) -> torch.Tensor:
        block = torch.from_numpy(tokens)
        return block if self.dtype is None else block.to(self.dtype)

    @property
    def mean_sample_bytes(self) -> int:
        """The bytes of one block as handed out (``RingLoader`` sizes first slots from it)."""
        itemsize = self.manifest.itemsize if self.dtype is None else self.dtype.itemsize
        return self.block_size * itemsize

    def __repr__(self) -> str:
        return (
            f"TokenDataset({self.store.url!r}, blocks={self.num_items}, "
            f"block_size={self.block_size}, tokens={self.manifest.num_tokens}, "
            f"version={self.manifest.version!r})"
        )


class DocumentDataset(_TokenItems):
    """Documents for classification: each is a dict of ``input_ids`` and ``attention_mask``
    (``torch.long``, ``max_length``: truncated, or padded with ``pad_id`` and mask 0) and
    the values of ``columns`` that rode along (default: all of them), so
    ``default_collate`` makes a batch ready for a ``transformers`` model."""

    def __init__(
        self,
        url_or_store: str | Backend,
        *,
        max_length: int,
        pad_id: int = 0,
        columns: Sequence[str] | None = None,
        cache: CacheSpec | None = None,
        keys: KeySpec | None = None,
        shuffle: bool = False,
        seed: int = 0,
        window: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        prefetch_bytes: int = 64 * 1024 * 1024,
        prefetch_threads: int = 2,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        version: str | None = None,
    ):
        self.max_length = whole_number("max_length", max_length, minimum=1)
        # any int64, negative ones included (-100: the usual ignore index); was a
        # TypeError only when iterating
        self.pad_id = whole_number("pad_id", pad_id, minimum=-(2**63))
        if self.pad_id >= 2**63:
            raise ConfigError(f"pad_id must fit int64, got {self.pad_id}")
        super().__init__(
            url_or_store, cache=cache, keys=keys, shuffle=shuffle, seed=seed, window=window,
            drop_last=drop_last, rank=rank, world_size=world_size,
            prefetch_bytes=prefetch_bytes, prefetch_threads=prefetch_threads,
            window_bytes=window_bytes, version=version,
        )  # fmt: skip
        riders = [n for n in self.manifest.documents.column_names if n not in ("start", "length")]
        missing = sorted(set(columns or ()) - set(riders))
        if missing:
            raise ConfigError(f"{self.store.url}: no document column {missing} (has {riders})")
        self.columns = tuple(riders if columns is None else columns)

    @cached_property
    def spans(self) -> item_spans.Spans:
        return item_spans.documents(*self.manifest.document_spans())

    @cached_property
    def _riders(self) -> dict[str, list[Any]]:
        docs = self.manifest.documents
        return {name: docs.column(name).to_pylist() for name in self.columns}

    def _max_tokens(self) -> int:
        return self.max_length

    def _item(self, index: int, tokens: np.ndarray) -> dict[str, Any]:
        ids = torch.full((self.max_length,), self.pad_id, dtype=torch.long)
        mask = torch.zeros(self.max_length, dtype=torch.long)
        n = len(tokens)
        ids[:n] = torch.from_numpy(tokens.astype(np.int64))
        mask[:n] = 1
        item: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        for name, values in self._riders.items():
            item[name] = values[index]
        return item

    def __repr__(self) -> str:
        return (
            f"DocumentDataset({self.store.url!r}, documents={self.num_items}, "
            f"max_length={self.max_length}, version={self.manifest.version!r})"
        )
