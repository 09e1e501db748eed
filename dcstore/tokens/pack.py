"""``pack_text``: a corpus of JSONL / Parquet / text files -> a token dataset in any store.

Guarantees:

* The same inputs and tokenizer give the same token stream, whatever ``processes``:
  batches of documents are tokenized in parallel and written in input order.
* Everything :class:`~dcstore.tokens.writer.TokenWriter` guarantees (atomic
  commit, ids checked against the vocabulary, encryption when ``keys`` are given).
* Memory: about ``2 * processes`` batches of ``batch_documents`` documents, plus
  the writer's two shards.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcstore.backends.base import Backend
from dcstore.errors import ConfigError
from dcstore.store import CacheSpec, KeySpec
from dcstore.tokens.manifest import TokenManifest
from dcstore.tokens.sources import Document, Inputs, corpus_files, read_documents
from dcstore.tokens.tokenizer import TokenizerSpec, resolve_tokenizer
from dcstore.tokens.writer import DEFAULT_SHARD_BYTES, TokenWriter

DEFAULT_BATCH_DOCUMENTS = 512


@dataclass
class PackProgress:
    """What has been written so far (for a progress bar)."""

    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    total_bytes: int = 0
    """Bytes of the corpus files (the bar's end; text bytes are counted as UTF-8)."""


_ENCODE: Callable[[Sequence[str]], list[Any]] | None = None


def _init_worker(encode: Callable[[Sequence[str]], list[Any]]) -> None:
    global _ENCODE
    _ENCODE = encode


def _encode_in_worker(texts: Sequence[str]) -> list[Any]:
    assert _ENCODE is not None
    return _ENCODE(texts)


def _batches(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(docs)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _pool(spec: TokenizerSpec, processes: int) -> contextlib.AbstractContextManager[Any]:
    """Tokenizing processes (none for 1). Forked where the platform can, before the
    writer starts its thread, so a script without a ``__main__`` guard still works."""
    if processes <= 1:
        return contextlib.nullcontext(None)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return context.Pool(processes, _init_worker, (spec.encode,))


def _tokenized(
    spec: TokenizerSpec, batches: Iterator[list[Document]], pool: Any, ahead: int
) -> Iterator[tuple[list[Document], list[Any]]]:
    if pool is None:
        for batch in batches:
            yield batch, spec.encode([text for text, _ in batch])
        return
    """Batches and their ids in input order, at most ``ahead`` batches in flight."""
    pending: collections.deque[tuple[list[Document], Any]] = collections.deque()
    for batch in batches:
        pending.append((batch, pool.apply_async(_encode_in_worker, ([t for t, _ in batch],))))
        if len(pending) >= ahead:
            done, result = pending.popleft()
            yield done, result.get()
    while pending:
        done, result = pending.popleft()
        yield done, result.get()


def pack_text(
    inputs: Inputs,
    url_or_store: str | Backend,
    *,
    tokenizer: Any = "bytes",
    text_field: str = "text",
    columns: Sequence[str] = (),
    vocab_size: int | None = None,
    eod: int | str | None = None,
    cache: CacheSpec | None = None,
    keys: KeySpec | None = None,
    segment_size: int | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    processes: int | None = None,
    batch_documents: int = DEFAULT_BATCH_DOCUMENTS,
    on_progress: Callable[[PackProgress], None] | None = None,
    version: str | None = None,
) -> TokenManifest:
    """Tokenize the corpus files ``inputs`` (one path or several; directories walked) and
    commit them as a token dataset.

    ``tokenizer``: ``"bytes"`` (default), a ``tokenizers.Tokenizer``, a path to its
    ``tokenizer.json``, or a callable ``text -> ids`` (then ``vocab_size`` is needed).
    ``columns`` ride along per document (e.g. ``["label"]``). ``processes``: tokenizing
    processes (default: 1 for a ``tokenizers`` tokenizer, which uses its own threads;
    else the CPU count, at most 8). ``on_progress`` is called after each batch.
    ``version`` names the new version (:class:`TokenWriter`).
    """
    spec = resolve_tokenizer(tokenizer, vocab_size=vocab_size, eod=eod)
    files = corpus_files(inputs)
    if processes is None:
        processes = 1 if spec.native_threads else min(8, os.cpu_count() or 1)
    progress = PackProgress(total_bytes=sum(p.stat().st_size for p in files))
    docs = read_documents(files, text_field, columns)
    meta = {"tokenizer": _describe(tokenizer), "text_field": text_field}
    with _pool(spec, processes) as pool, TokenWriter(
        url_or_store, vocab_size=spec.vocab_size, eod=spec.eod, columns=columns,
        shard_bytes=shard_bytes, cache=cache, keys=keys, segment_size=segment_size,
        metadata=meta, version=version,
    ) as writer:  # fmt: skip
        for batch, ids in _tokenized(spec, _batches(docs, batch_documents), pool, 2 * processes):
            for (text, fields), doc_ids in zip(batch, ids, strict=True):
                writer.write(np.asarray(doc_ids), **fields)
                progress.text_bytes += len(text.encode("utf-8"))
            progress.documents += len(batch)
            progress.tokens = writer.tokens_written
            if on_progress is not None:
                on_progress(progress)
        if progress.documents == 0:  # read as "no block of N tokens in 0 tokens" later
            shown = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "")
            raise ConfigError(f"no documents in {shown}: nothing was written")
    assert writer.manifest is not None  # committed by the with block
    return writer.manifest


def _describe(tokenizer: Any) -> str:
    if isinstance(tokenizer, (str, os.PathLike)):
        return os.path.basename(os.fspath(tokenizer))
    return type(tokenizer).__module__ + "." + type(tokenizer).__qualname__
