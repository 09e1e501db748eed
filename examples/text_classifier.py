"""Train a small BERT-style text classifier on a corpus dcstore packs: no downloads at all.

What it shows, end to end:

1. a seeded, labelled corpus (JSONL ``{"text": ..., "label": int}``) written to ``--workdir``;
2. a WordPiece tokenizer (``tokenizers``) trained on that corpus, saved as ``tokenizer.json``;
3. ``dcstore.tokens.pack_text`` packing the corpus into token shards (encrypted with
   ``--keys``), the label riding along per document; a second, held-out corpus into
   ``--eval-store``;
4. ``DocumentDataset`` streaming padded documents (``input_ids``, ``attention_mask``,
   ``label``) through a plain ``torch.utils.data.DataLoader`` (through ``--cache``, e.g. a
   Redis hot tier, when given);
5. ``transformers.BertForSequenceClassification`` trained from scratch with AdamW, logging
   the running loss, batch accuracy and data-wait % (``dcstore.DataWaitMeter``), then the
   accuracy on the held-out store.

Run it::

    python examples/text_classifier.py --help
    python examples/text_classifier.py                                   # defaults
    python examples/text_classifier.py --keys /tmp/kek.json              # encrypted shards
    python examples/text_classifier.py --docs 600 --steps 40 --hidden 32 --layers 1  # CI-sized

The last line reads ``final: loss A (from B), eval accuracy C, data-wait D %, E s``; the
exit status is 1 when the loss did not go down (mean of the last logging window not below
the mean of the first one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dcstore import DataWaitMeter
from dcstore.crypto import Keyring, write_key_file
from dcstore.tokens import pack_text
from dcstore.tokens.dataset import DocumentDataset

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _words(text: str) -> list[str]:
    return text.split()


TOPICS: dict[str, list[str]] = {
    "sports": _words(
        "goal match striker referee league season coach stadium penalty keeper tournament "
        "midfield score dribble championship fans whistle tackle sprint trophy"
    ),
    "cooking": _words(
        "oven garlic simmer recipe butter flour saucepan roast basil onion whisk dough "
        "pepper skillet braise vinegar caramel knead spice broth"
    ),
    "space": _words(
        "orbit rocket galaxy telescope asteroid comet nebula astronaut planet lunar "
        "satellite cosmic gravity launch module crater stellar eclipse probe meteor"
    ),
    "finance": _words(
        "market stock dividend bond portfolio interest inflation equity investor "
        "bank revenue profit budget currency loan credit audit shares hedge yield"
    ),
}
"""Each class's characteristic words (the label is the index in this order)."""

FILLER = _words(
    "the a of and to in is that it was for on with as at by this from they we say her she "
    "or an will my one all would there their what so up out if about who get which go me "
    "when make can like time no just him know take people into year your good some could "
    "them see other than then now look only come its over think also back after use two "
    "how our work first well way even new want because any these give day most us"
)
"""Words every class shares."""


# --- 1. corpus ---------------------------------------------------------------------------


def make_document(rng: np.random.Generator, label: int, topic_share: float) -> str:
    """One text: filler words, a ``topic_share`` of its own topic's words, a few of another's."""
    names = list(TOPICS)
    own = TOPICS[names[label]]
    other = TOPICS[names[(label + int(rng.integers(1, len(names)))) % len(names)]]
    words = []
    for _ in range(int(rng.integers(8, 40))):
        r = rng.random()
        pool = own if r < topic_share else other if r < topic_share + 0.04 else FILLER
        words.append(str(rng.choice(pool)))
    return " ".join(words)


def write_corpus(directory: Path, docs: int, seed: int, topic_share: float) -> Path:
    """``docs`` labelled documents as ``directory/part-0.jsonl``; returns the directory."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "part-0.jsonl", "w", encoding="utf-8") as f:
        for _ in range(docs):
            label = int(rng.integers(len(TOPICS)))
            row = {"text": make_document(rng, label, topic_share), "label": label}
            f.write(json.dumps(row) + "\n")
    return directory


def read_texts(directory: Path) -> Iterator[str]:
    for path in sorted(directory.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


# --- 2. tokenizer ------------------------------------------------------------------------


def train_tokenizer(corpus: Path, vocab_size: int, out: Path) -> Any:
    """A BERT-style WordPiece tokenizer trained on ``corpus``, saved to ``out``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))  # noqa: S106 (not a password)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tokenizer.train_from_iterator(read_texts(corpus), trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer.save(str(out))
    return tokenizer


# --- 3. pack -----------------------------------------------------------------------------


def ensure_keys(path: str | None) -> str | None:
    """The key file ``path``, generated (one fresh AES key) when it does not exist yet."""
    if path is None:
        return None
    local = path.removeprefix("file://")
    if not os.path.exists(local):
        write_key_file(local, Keyring.generate())
        print(f"generated key file {local}")
    return path


def pack(corpus: Path, url: str, tokenizer: Any, keys: str | None, shard_bytes: int) -> None:
    start = time.perf_counter()
    manifest = pack_text(
        [corpus], url, tokenizer=tokenizer, columns=["label"], keys=keys, shard_bytes=shard_bytes
    )
    print(
        f"packed {corpus} -> {url}: {len(manifest.documents)} documents, "
        f"{manifest.num_tokens} tokens ({manifest.dtype}), {len(manifest.shards)} shards"
        f"{', encrypted' if keys else ''} in {time.perf_counter() - start:.2f} s"
    )


# --- 4./5. train -------------------------------------------------------------------------


def build_model(
    vocab_size: int, pad_id: int, num_labels: int, args: argparse.Namespace
) -> torch.nn.Module:
    """A small BERT with a classification head, initialised from scratch."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=max(64, args.max_length),
        num_labels=num_labels,
        pad_token_id=pad_id,
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
    )
    return BertForSequenceClassification(config)


def epochs(ds: DocumentDataset, loader: DataLoader[Any]) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``loader`` forever, ``ds.set_epoch`` before each pass (what a loader
    without persistent workers needs; persistent workers advance to the same epoch)."""
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        yield from loader
        epoch += 1


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "input_ids": batch["input_ids"].to(device, non_blocking=True),
        "attention_mask": batch["attention_mask"].to(device, non_blocking=True),
        "labels": batch["label"].to(device, non_blocking=True),
    }


def wait_pct(meter: DataWaitMeter, since: int) -> float:
    """Data-wait % of step time over the steps the meter timed from step ``since`` on."""
    n = len(meter.steps)
    total = sum(meter.steps[since:n])
    return 100.0 * sum(meter.waits[since:n]) / total if total else 0.0


@dataclass
class TrainResult:
    losses: list[float]
    window: int

    @property
    def first(self) -> float:
        return float(np.mean(self.losses[: self.window]))

    @property
    def last(self) -> float:
        return float(np.mean(self.losses[-self.window :]))


def train(
    model: torch.nn.Module, ds: DocumentDataset, args: argparse.Namespace, device: torch.device
) -> tuple[TrainResult, DataWaitMeter]:
    loader = DataLoader(
        ds,
        batch_size=args.batch_size,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,  # no worker start-up per epoch
        pin_memory=device.type == "cuda",
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, args.steps // 10))
    )
    meter = DataWaitMeter(warmup=1)
    source = epochs(ds, loader)
    losses: list[float] = []
    window_start, correct, seen = 0, 0, 0
    model.train()
    try:
        for step, batch in enumerate(meter.wrap(source), start=1):
            inputs = to_device(batch, device)
            out = model(**inputs)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(out.loss.item())
            correct += int((out.logits.argmax(-1) == inputs["labels"]).sum())
            seen += len(inputs["labels"])
            if step % args.log_every == 0 or step == args.steps:
                print(
                    f"step {step:5d}/{args.steps}  epoch {ds.epoch}  "
                    f"loss {np.mean(losses[window_start:]):.4f}  acc {correct / seen:.3f}  "
                    f"data-wait {wait_pct(meter, max(1, window_start)):.1f} %",
                    flush=True,
                )
                window_start, correct, seen = step, 0, 0
            if step == args.steps:
                break
    finally:
        source.close()  # shuts the loader's workers down
    return TrainResult(losses, window=min(args.log_every, max(1, len(losses) // 2))), meter


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: DocumentDataset, device: torch.device) -> float:
    """Accuracy of ``model`` over every document of ``ds``."""
    model.eval()
    correct = seen = 0
    for batch in DataLoader(ds, batch_size=256, num_workers=0):
        inputs = to_device(batch, device)
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        correct += int((logits.logits.argmax(-1) == inputs["labels"]).sum())
        seen += len(inputs["labels"])
    return correct / seen


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = p.add_argument
    add("--workdir", type=Path, help="corpus, tokenizer and stores (default: a temp dir)")
    add("--store", help="training store URL (default: file://<workdir>/store)")
    add("--eval-store", help="held-out store URL (default: file://<workdir>/eval-store)")
    add("--keys", help="key file: encrypt the shards (generated when missing)")
    add("--cache", help="hot tier for reading, e.g. redis://host:6379/0 or memory")
    add("--docs", type=int, default=4000, help="training documents (%(default)s)")
    add("--eval-docs", type=int, help="held-out documents (default: docs / 4, >= 100)")
    add("--topic-share", type=float, default=0.25, help="share of topic words (%(default)s)")
    add("--vocab", type=int, default=2000, help="WordPiece vocabulary, at most (%(default)s)")
    add("--shard-bytes", type=int, default=64 * 1024, help="token shard size (%(default)s)")
    add("--max-length", type=int, default=64, help="tokens per document (%(default)s)")
    add("--hidden", type=int, default=64, help="hidden size (%(default)s)")
    add("--layers", type=int, default=2, help="transformer layers (%(default)s)")
    add("--heads", type=int, default=2, help="attention heads (%(default)s)")
    add("--steps", type=int, default=300, help="training steps (%(default)s)")
    add("--batch-size", type=int, default=32, help="documents per batch (%(default)s)")
    add("--lr", type=float, default=3e-3, help="peak AdamW learning rate (%(default)s)")
    add("--dropout", type=float, default=0.1, help="BERT dropout (%(default)s)")
    add("--log-every", type=int, default=0, help="log interval (default: steps / 10)")
    add("--workers", type=int, default=1, help="DataLoader worker processes (%(default)s)")
    add("--threads", type=int, default=0, help="torch CPU threads (default: the CPUs, <= 8)")
    add("--seed", type=int, default=0, help="corpus, shuffle and model seed (%(default)s)")
    args = p.parse_args(argv)
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    if args.steps < 2:
        p.error("--steps must be at least 2")
    args.log_every = args.log_every or max(1, args.steps // 10)
    args.eval_docs = args.eval_docs or max(100, args.docs // 4)
    return args


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run(args: argparse.Namespace, workdir: Path) -> int:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or min(8, cpu_count()))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    store = args.store or f"file://{workdir / 'store'}"
    eval_store = args.eval_store or f"file://{workdir / 'eval-store'}"
    keys = ensure_keys(args.keys)

    corpus = write_corpus(workdir / "corpus", args.docs, args.seed, args.topic_share)
    held_out = write_corpus(workdir / "eval", args.eval_docs, args.seed + 1, args.topic_share)
    tokenizer = train_tokenizer(corpus, args.vocab, workdir / "tokenizer.json")
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    pad_id = tokenizer.token_to_id("[PAD]")
    print(f"workdir {workdir}; tokenizer: {vocab_size} tokens, [PAD] = {pad_id}")
    pack(corpus, store, tokenizer, keys, args.shard_bytes)
    pack(held_out, eval_store, tokenizer, keys, args.shard_bytes)

    common: dict[str, Any] = {
        "max_length": args.max_length, "pad_id": pad_id, "keys": keys, "cache": args.cache
    }  # fmt: skip
    ds = DocumentDataset(store, shuffle=True, seed=args.seed, **common)
    print(ds)
    model = build_model(vocab_size, pad_id, len(TOPICS), args).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters on {device}, {torch.get_num_threads()} threads")

    result, meter = train(model, ds, args, device)
    print(meter.format())
    accuracy = evaluate(model, DocumentDataset(eval_store, **common), device)
    wait = meter.summary()["data_wait_pct"]
    print(
        f"final: loss {result.last:.4f} (from {result.first:.4f}), eval accuracy "
        f"{accuracy:.3f}, data-wait {wait:.1f} %, {time.perf_counter() - started:.1f} s"
    )
    if not (math.isfinite(result.last) and result.last < result.first):
        print("error: the loss did not go down", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args, args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="dcstore-text-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
