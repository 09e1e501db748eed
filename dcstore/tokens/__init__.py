"""Text and token data: pack a corpus into token shards, stream blocks or documents.

``pack_text`` / ``dcstore pack --text`` tokenize JSONL, Parquet or plain-text files
(a ``tokenizers`` tokenizer, a callable, or UTF-8 bytes) into fixed-size token shards
through any store, encrypted when keys are given (``TokenWriter`` for your own ids).
``TokenDataset`` streams fixed-length blocks, ``DocumentDataset`` padded documents
with their labels. The layout is in ``docs/tokens.md``. Torch is imported only
when a dataset is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dcstore.tokens.manifest import TOKENS_KEY, TokenManifest, TokenShard, load_token_manifest
from dcstore.tokens.pack import PackProgress, pack_text
from dcstore.tokens.writer import TokenWriter

if TYPE_CHECKING:
    from dcstore.tokens.dataset import DocumentDataset, TokenDataset

_LAZY = {"TokenDataset": "dcstore.tokens.dataset", "DocumentDataset": "dcstore.tokens.dataset"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dcstore.tokens' has no attribute {name!r}")


__all__ = [
    "TOKENS_KEY",
    "DocumentDataset",
    "PackProgress",
    "TokenDataset",
    "TokenManifest",
    "TokenShard",
    "TokenWriter",
    "load_token_manifest",
    "pack_text",
]
