"""Tokenizers dcstore packs with: a Hugging Face ``tokenizers.Tokenizer``, a
``tokenizer.json`` file, the built-in ``"bytes"`` tokenizer, or any callable.

Every one becomes a :class:`TokenizerSpec`: a picklable batch function
``texts -> list of id sequences``, the vocabulary size and the end-of-document id.
Nothing is fetched from a hub: a ``tokenizers`` tokenizer is an object or a local file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcstore.errors import ConfigError

BYTES_VOCAB = 257
"""The ``"bytes"`` tokenizer: UTF-8 bytes 0-255, and 256 as end of document."""


def encode_bytes(texts: Sequence[str]) -> list[np.ndarray]:
    """UTF-8 bytes of each text, as ids."""
    return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]


@dataclass(frozen=True)
class _Single:
    """A per-text callable applied to a batch."""

    fn: Callable[[str], Sequence[int]]

    def __call__(self, texts: Sequence[str]) -> list[Any]:
        return [self.fn(t) for t in texts]


@dataclass(frozen=True)
class _HuggingFace:
    """A ``tokenizers.Tokenizer``'s ``encode_batch`` (its own threads do the work)."""

    tokenizer: Any

    def __call__(self, texts: Sequence[str]) -> list[Any]:
        return [np.asarray(e.ids, dtype=np.uint32) for e in self.tokenizer.encode_batch(texts)]


@dataclass(frozen=True)
class TokenizerSpec:
    """How to tokenize a batch of texts, the vocabulary size and the end-of-document id."""

    encode: Callable[[Sequence[str]], list[Any]]
    vocab_size: int
    eod: int | None
    native_threads: bool = False
    """True when ``encode`` parallelises itself (processes would only add copies)."""


def resolve_tokenizer(
    tokenizer: Any, *, vocab_size: int | None = None, eod: int | str | None = None
) -> TokenizerSpec:
    """A :class:`TokenizerSpec` for ``tokenizer`` (see the module docstring).

    ``eod`` is an id, a token string the tokenizer knows (e.g. ``"<|endoftext|>"``),
    or None; the ``"bytes"`` tokenizer's default is 256. A callable needs ``vocab_size``.
    """
    if tokenizer == "bytes":
        if eod not in (None, 256):
            raise ConfigError("the bytes tokenizer's end-of-document id is 256")
        return TokenizerSpec(encode_bytes, BYTES_VOCAB, 256)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _load_file(os.fspath(tokenizer))
    if type(tokenizer).__module__.startswith("tokenizers"):
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        eod_id: int | None = eod if not isinstance(eod, str) else None
        if isinstance(eod, str):
            eod_id = tokenizer.token_to_id(eod)
            if eod_id is None:
                raise ConfigError(f"the tokenizer has no token {eod!r} for end of document")
        return TokenizerSpec(
            _HuggingFace(tokenizer), vocab_size or size, eod_id, native_threads=True
        )
    if callable(tokenizer):
        if vocab_size is None:
            raise ConfigError("a tokenizer callable needs vocab_size")
        if isinstance(eod, str):
            raise ConfigError("with a tokenizer callable, eod is an id (an int)")
        return TokenizerSpec(_Single(tokenizer), vocab_size, eod)
    raise ConfigError(
        f"tokenizer must be 'bytes', a tokenizer.json path, a tokenizers.Tokenizer or a "
        f"callable, not {type(tokenizer).__name__}"
    )


def _load_file(path: str) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(
            "reading a tokenizer file needs the tokenizers package: pip install 'dcstore[text]'"
        ) from None
    if not os.path.isfile(path):
        raise ConfigError(
            f"{path}: no such tokenizer file (dcstore downloads nothing: for a Hugging Face "
            f"Hub model, save its tokenizer.json, e.g. Tokenizer.from_pretrained(name)"
            f".save(path), and pass that path; or 'bytes')"
        )
    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # the Rust side raises plain Exception
        raise ConfigError(f"{path}: not a tokenizers JSON file ({exc})") from None
