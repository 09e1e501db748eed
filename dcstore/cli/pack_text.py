"""``dcstore pack --text SRC DEST``: a corpus of JSONL / Parquet / text files -> token shards."""

from __future__ import annotations

import argparse
import sys
import time

from dcstore.cli.common import (
    human_size,
    naming_what_a_failed_pack_left,
    note_foreign_objects,
    open_from_args,
    protection,
    transfer_progress,
)


def eod_arg(text: str) -> int | str:
    """An end-of-document id (digits) or a token the tokenizer knows."""
    return int(text) if text.isdigit() else text


def run(args: argparse.Namespace) -> int:
    from dcstore.loaders.writer import new_version
    from dcstore.tokens.manifest import SHARDS_PREFIX, TOKENS_KEY, load_token_manifest
    from dcstore.tokens.pack import PackProgress, pack_text

    store = open_from_args(args.dest, args)
    note_foreign_objects(store, TOKENS_KEY)
    start = time.perf_counter()
    with transfer_progress(not args.quiet) as progress:
        task = progress.add_task(f"tokenizing {args.src}", total=None)
        done = 0

        def advance(p: PackProgress) -> None:
            nonlocal done
            progress.update(task, total=p.total_bytes)
            progress.advance(task, p.text_bytes - done)
            done = p.text_bytes

        version = new_version()
        with naming_what_a_failed_pack_left(
            store,
            args.dest,
            version,
            shards_prefix=SHARDS_PREFIX,
            manifest_key=TOKENS_KEY,
            current=lambda s: load_token_manifest(s).version,
        ):
            manifest = pack_text(
                [args.src], store, tokenizer=args.tokenizer, text_field=args.text_field,
                columns=args.column, eod=args.eod, shard_bytes=args.shard_size,
                processes=args.workers, on_progress=advance, version=version,
            )  # fmt: skip
        # text bytes advance the bar; the files' JSON/Parquet framing is counted at the end
        total = next(t.total for t in progress.tasks if t.id == task)
        progress.update(task, completed=total)
    seconds = max(time.perf_counter() - start, 1e-9)
    docs = len(manifest.documents)
    print(
        f"packed {docs} documents, {manifest.num_tokens} tokens ({manifest.dtype}) into "
        f"{len(manifest.shards)} token shards at {store.url}, version {manifest.version}, "
        f"{protection(store)}, {human_size(done / seconds)}/s of text, "
        f"{manifest.num_tokens / seconds:,.0f} tokens/s",
        file=sys.stdout,
    )
    return 0


def add_text_options(p: argparse.ArgumentParser) -> None:
    """The options of ``pack --text``."""
    text = p.add_argument_group("text corpora (--text)")
    text.add_argument(
        "--text",
        action="store_true",
        help="SRC is a corpus: JSONL (one document per line), Parquet (one per row) or "
        "plain-text files (one per file; CSV/TSV refused), tokenized into token shards "
        "(docs/tokens.md)",
    )
    text.add_argument(
        "--tokenizer",
        default="bytes",
        metavar="T",
        help="bytes (default: UTF-8 bytes, end of document 256) or a tokenizers "
        "tokenizer.json file (nothing is downloaded)",
    )
    text.add_argument(
        "--text-field", default="text", metavar="NAME", help="JSONL/Parquet text field"
    )
    text.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME",
        help="a per-document field stored with it (e.g. label); repeatable",
    )
    text.add_argument(
        "--eod",
        type=eod_arg,
        metavar="TOKEN",
        help="end-of-document token appended to each document: an id or a token of the "
        "tokenizer (e.g. '<|endoftext|>'; default: none, bytes: 256)",
    )
