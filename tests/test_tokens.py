"""Token datasets: pack a corpus, stream blocks and documents, exactly once, resumable,
encrypted, pinned to the versions packed; bad input named and nothing committed."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from dcstore import ShardedDataset
from dcstore.backends.local import LocalBackend
from dcstore.crypto import Keyring, write_key_file
from dcstore.errors import (
    ConfigError,
    IntegrityError,
    KeyAccessError,
    NotFoundError,
    VersionChangedError,
)
from dcstore.store import open_store
from dcstore.tokens import (
    TOKENS_KEY,
    TokenManifest,
    TokenWriter,
    load_token_manifest,
    pack_text,
)
from dcstore.tokens.dataset import DocumentDataset, TokenDataset
from dcstore.tokens.spans import document_blocks, stream_blocks

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def corpus(path: Path, docs: int = 300, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = [
        {"text": " ".join(rng.choice(WORDS, rng.integers(1, 60))), "label": int(i % 3)}
        for i in range(docs)
    ]
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "part-0.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def stream_of(rows: list[dict]) -> np.ndarray:
    """The bytes tokenizer's stream: each text's UTF-8 bytes, then 256."""
    parts = [np.append(np.frombuffer(r["text"].encode(), np.uint8).astype(np.int64), 256)
             for r in rows]  # fmt: skip
    return np.concatenate(parts)


@pytest.fixture
def packed(tmp_path: Path) -> tuple[str, list[dict]]:
    rows = corpus(tmp_path / "corpus")
    url = f"file://{tmp_path}/store"
    pack_text([tmp_path / "corpus"], url, columns=["label"], shard_bytes=2000, processes=1)
    return url, rows


@pytest.fixture
def numbered(tmp_path: Path) -> str:
    """Token ``t`` of the stream is ``t`` (so a block names itself): 40,000 tokens in
    documents of 1-999 tokens, shards of 1,500 tokens."""
    url = f"file://{tmp_path}/numbered"
    rng = np.random.default_rng(1)
    with TokenWriter(url, vocab_size=1 << 16, shard_bytes=3000) as writer:
        at = 0
        while at < 40_000:
            n = min(int(rng.integers(1, 1000)), 40_000 - at)
            writer.write(np.arange(at, at + n))
            at += n
    return url


def block_ids(blocks, size: int = 16) -> list[int]:
    ids = []
    for b in blocks:
        first = int(b[0])
        assert b.numpy().astype(np.int64).tolist() == list(range(first, first + size))
        ids.append(first // size)
    return ids


@pytest.fixture
def keys(tmp_path: Path) -> str:
    write_key_file(tmp_path / "kek.json", Keyring.generate())
    return str(tmp_path / "kek.json")


def test_the_stream_is_the_documents_with_end_of_document_ids(packed, tmp_path: Path) -> None:
    _url, rows = packed
    manifest = load_token_manifest(LocalBackend(str(tmp_path / "store")))
    expected = stream_of(rows)
    assert manifest.dtype == "uint16" and manifest.eod == 256 and manifest.vocab_size == 257
    assert manifest.num_tokens == len(expected)
    assert all(s.tokens == manifest.shard_tokens == 1000 for s in manifest.shards[:-1])
    on_disk = np.concatenate(
        [np.fromfile(tmp_path / "store" / s.key, dtype="<u2") for s in manifest.shards]
    )
    assert (on_disk == expected).all()
    starts, lengths = manifest.document_spans()
    assert lengths.tolist() == [len(r["text"].encode()) + 1 for r in rows]
    assert (starts[1:] == starts[:-1] + lengths[:-1]).all()
    assert manifest.documents.column("label").to_pylist() == [r["label"] for r in rows]
    assert all(s.version for s in manifest.shards)  # pinned at pack time


@pytest.mark.parametrize("within", [False, True])
def test_blocks_match_the_stream(packed, within: bool) -> None:
    url, rows = packed
    expected = stream_of(rows)
    ds = TokenDataset(url, block_size=17, within_documents=within)
    starts, ends = ds.spans.bounds(np.arange(ds.num_items))
    if within:  # no block crosses a document: a 256 only at a block's end
        assert all(256 not in expected[s : e - 1] for s, e in zip(starts, ends, strict=True))
    else:
        assert ds.num_items == len(expected) // 17
    got = list(ds)
    assert len(got) == ds.num_items
    for block, s, e in zip(got, starts, ends, strict=True):
        assert block.dtype == torch.uint16
        assert block.numpy().astype(np.int64).tolist() == expected[s:e].tolist()
    assert (ds.read(3).numpy() == got[3].numpy()).all()
    assert (ds.read(np.int64(3)).numpy() == got[3].numpy()).all()
    for index in (1.5, True, "3"):  # review: 1.5 read item 1
        with pytest.raises(TypeError):
            ds.read(index)
    assert TokenDataset(url, block_size=17, dtype=torch.long).read(0).dtype == torch.long
    assert TokenDataset(url, block_size=17, dtype="int32").read(0).dtype == torch.int32
    with pytest.raises(ConfigError, match=r"dtype must be a torch dtype .* got 'lng'"):
        TokenDataset(url, block_size=17, dtype="lng")  # not at the first block
    for narrow in (torch.int8, torch.uint8):  # vocab_size 257: id 256 wrapped to 0
        with pytest.raises(ConfigError, match=f"dtype {narrow} cannot hold .*up to 256"):
            TokenDataset(url, block_size=17, dtype=narrow)
    with pytest.raises(ConfigError, match="must be an integer type for token ids"):
        TokenDataset(url, block_size=17, dtype=torch.float16)


def test_spans_counts_per_shard() -> None:
    shard_starts = np.array([0, 10, 20, 25])
    assert stream_blocks(25, 4).counts(shard_starts).tolist() == [3, 2, 1]  # starts 0..20
    blocks = document_blocks(np.array([0, 9, 21]), np.array([9, 12, 4]), 4)
    assert blocks.starts.tolist() == [0, 4, 9, 13, 17, 21]
    assert blocks.counts(shard_starts).tolist() == [3, 2, 1]


@pytest.mark.parametrize(
    ("world", "workers", "drop_last"), [(1, 2, False), (3, 2, True), (3, 2, False), (2, 3, False)]
)
def test_every_block_once_and_equal_steps_across_ranks(
    numbered: str, world: int, workers: int, drop_last: bool
) -> None:
    total = 40_000 // 16
    per_rank, seen = [], Counter()
    for rank in range(world):
        ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=3, rank=rank,
                          world_size=world, drop_last=drop_last)  # fmt: skip
        ids = block_ids(DataLoader(ds, batch_size=None, num_workers=workers))
        assert len(ids) == len(ds)
        per_rank.append(len(ids))
        seen.update(ids)
    assert len(set(per_rank)) == 1  # DDP ranks run the same number of steps
    if drop_last:
        assert sum(per_rank) == total // world * world and max(seen.values()) == 1
    else:  # padded like DistributedSampler: every block, fewer than `world` twice
        assert set(seen) == set(range(total)) and sum(per_rank) - total < world


def test_order_is_deterministic_and_changes_per_epoch(numbered: str) -> None:
    def epoch(seed: int, e: int) -> list[int]:
        ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=seed)
        ds.set_epoch(e)
        return block_ids(ds)

    assert epoch(1, 0) == epoch(1, 0)
    assert epoch(1, 0) != epoch(1, 1) != epoch(2, 1)
    assert sorted(epoch(1, 0)) == sorted(epoch(1, 1)) == list(range(2500))
    assert block_ids(TokenDataset(numbered, block_size=16)) == list(range(2500))


@pytest.mark.parametrize("workers_after", [2, 1])
def test_resume_mid_epoch_with_a_stateful_loader(numbered: str, workers_after: int) -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=5)
    loader = StatefulDataLoader(ds, batch_size=4, num_workers=2)
    first, state = [], None
    for i, batch in enumerate(loader):
        first.extend(block_ids(batch))
        if i == 30:
            state = loader.state_dict()
            break
    resumed_ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=5)
    if workers_after == 2:
        resumed = StatefulDataLoader(resumed_ds, batch_size=4, num_workers=2)
        resumed.load_state_dict(state)
    else:  # another worker count: the dataset state, merged
        resumed_ds.load_state_dict(TokenDataset.state_from_loader(state))
        resumed = StatefulDataLoader(resumed_ds, batch_size=4, num_workers=workers_after)
    rest = [i for batch in resumed for i in block_ids(batch)]
    assert sorted(first + rest) == list(range(2500))


@pytest.mark.parametrize("left", [2, 1, 0])
def test_a_checkpoint_in_the_last_batches_resumes_exactly(numbered: str, left: int) -> None:
    """A checkpoint in an epoch's last ``num_workers - 1`` batches (or after its last): a
    worker done with its share no longer reads it again from the next epoch on resume."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=5)
    batches = sum(-(-len(ds.plan(w, 3)) // 64) for w in range(3))
    loader = StatefulDataLoader(ds, batch_size=64, num_workers=3)
    first, state = [], None
    for i, batch in enumerate(loader):
        first.extend(block_ids(batch))
        if i + 1 == batches - left:
            state = loader.state_dict()
            break
    for workers_after in (None, 0, 2, 5):  # None: the same loader's state, loaded as such
        resumed_ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=5)
        if workers_after is None:
            resumed = StatefulDataLoader(resumed_ds, batch_size=64, num_workers=3)
            resumed.load_state_dict(state)
        else:
            resumed_ds.load_state_dict(TokenDataset.state_from_loader(state))
            resumed = StatefulDataLoader(resumed_ds, batch_size=64, num_workers=workers_after)
        rest = [i for batch in resumed for i in block_ids(batch)]
        assert sorted(first + rest) == list(range(2500)), workers_after


@pytest.mark.parametrize("steps", [1, 41])
def test_persistent_workers_resume_in_their_second_epoch(numbered: str, steps: int) -> None:
    """Persistent workers start their next epoch on their own; a checkpoint early in it (a
    worker yet to hand out a batch of it is at its start: its pass begins at ``iter()``)
    or in its last batches resumes exactly."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader() -> StatefulDataLoader:
        ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=5)
        return StatefulDataLoader(ds, batch_size=64, num_workers=3, persistent_workers=True)

    first_run = loader()
    assert sorted(i for batch in first_run for i in block_ids(batch)) == list(range(2500))
    first = []
    for i, batch in enumerate(first_run):  # epoch 1, advanced by the workers themselves
        first.extend(block_ids(batch))
        if i + 1 == steps:
            state = first_run.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [i for batch in resumed for i in block_ids(batch)]
    assert sorted(first + rest) == list(range(2500))


def test_documents_are_padded_truncated_and_labelled(packed) -> None:
    url, rows = packed
    ds = DocumentDataset(url, max_length=24, pad_id=0)
    items = list(ds)
    assert len(items) == len(rows) == len(ds)
    for item, row in zip(items, rows, strict=True):
        ids = ([*list(row["text"].encode()), 256])[:24]
        assert item["input_ids"].tolist() == ids + [0] * (24 - len(ids))
        assert item["attention_mask"].tolist() == [1] * len(ids) + [0] * (24 - len(ids))
        assert item["label"] == row["label"]
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["input_ids"].shape == (8, 24) and batch["label"].tolist() == [0, 1, 2] * 2 + [0, 1]
    with pytest.raises(ConfigError, match="no document column"):
        DocumentDataset(url, max_length=8, columns=["topic"])


def test_workers_receive_an_address_not_the_tables(packed) -> None:
    url, _ = packed
    ds = DocumentDataset(url, max_length=8)
    list(ds)  # spans, riders and the document table are loaded here
    size = len(pickle.dumps(ds))  # the shard table, never the documents or their spans
    assert size < 2048 + 120 * len(ds.manifest.shards), size
    assert size < len(pickle.dumps(ds.manifest.documents)), size
    clone = pickle.loads(pickle.dumps(ds))
    assert [i["label"] for i in clone] == [i["label"] for i in ds]


def test_encrypted_at_rest_and_read_with_keys_only(tmp_path: Path, keys: str) -> None:
    rows = corpus(tmp_path / "corpus")
    url = f"file://{tmp_path}/store"
    pack_text([tmp_path / "corpus"], url, keys=keys, columns=["label"], shard_bytes=4096)
    for path in (tmp_path / "store" / "tokens").rglob("*.bin"):
        data = path.read_bytes()
        assert b"alpha" not in data and "alpha".encode("utf-16-le") not in data
    plain = stream_of(rows)
    ds = TokenDataset(url, block_size=64, keys=keys, shuffle=True)
    assert sorted(b.numpy().tobytes() for b in ds) == sorted(
        plain[i * 64 : (i + 1) * 64].astype("<u2").tobytes() for i in range(len(plain) // 64)
    )
    with pytest.raises(KeyAccessError):
        TokenDataset(url, block_size=64)


def test_tampered_or_replaced_shards_are_named(tmp_path: Path, keys: str) -> None:
    corpus(tmp_path / "corpus")
    url = f"file://{tmp_path}/store"
    manifest = pack_text([tmp_path / "corpus"], url, keys=keys, shard_bytes=4096)
    victim = tmp_path / "store" / manifest.shards[1].key
    before = victim.stat()
    with open(victim, "r+b") as f:  # flip a ciphertext bit in place, same object version
        f.seek(before.st_size - 40)
        byte = f.read(1)[0]
        f.seek(before.st_size - 40)
        f.write(bytes([byte ^ 1]))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(IntegrityError, match=manifest.shards[1].key):
        list(TokenDataset(url, block_size=64, keys=keys))
    # replaced under the manifest (a valid object, another version): refused, named
    LocalBackend(str(tmp_path / "store")).put(manifest.shards[2].key, b"\0" * 100)
    ds = TokenDataset(url, block_size=64, keys=keys)
    with pytest.raises(VersionChangedError, match=manifest.shards[2].key):
        ds.read(ds.manifest.shard_tokens * 2 // 64 + 1)


def test_bad_ids_and_bad_corpora_commit_nothing(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/store"
    with TokenWriter(url, vocab_size=100, eod=99) as w:
        w.write([1, 2, 3])
    before = load_token_manifest(LocalBackend(str(tmp_path / "store")))
    with pytest.raises(ConfigError, match="outside the vocabulary"), TokenWriter(
        url, vocab_size=100
    ) as w:  # fmt: skip
        w.write([5, 100])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ConfigError, match=r"a\.jsonl:2"):
        pack_text([tmp_path / "bad"], url)
    (tmp_path / "bad" / "a.jsonl").write_text('{"body": "no text"}\n')
    with pytest.raises(ConfigError, match=r"no field 'text' \(has \['body'\]\)"):
        pack_text([tmp_path / "bad"], url)
    with pytest.raises(NotFoundError, match="nowhere"):
        pack_text([tmp_path / "nowhere"], url)
    # not UTF-8, plain or gzipped (a UnicodeDecodeError traceback naming nothing), or not
    # gzip at all, or cut short ("Not a gzipped file", naming no file)
    lines = b'{"text": "ok"}\n{"text": "caf\xe9"}\n'
    (tmp_path / "bad" / "a.jsonl").write_bytes(lines)
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "a.jsonl.gz").write_bytes(b"not gzip\n")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "a.txt.gz").write_bytes(gzip.compress(b"text" * 100)[:20])
    for folder, message in [
        ("bad", r"a\.jsonl:2: not UTF-8 text \(invalid continuation byte at byte 13\)"),
        ("gz", r"a\.jsonl\.gz:2: not UTF-8 text"),
        ("fake", r"a\.jsonl\.gz: cannot be read \(Not a gzipped file"),
        ("cut", r"a\.txt\.gz: cannot be read \(Compressed file ended"),
    ]:
        with pytest.raises(ConfigError, match=message):
            pack_text([tmp_path / folder], url)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.jsonl").write_bytes(b"\n")  # packed 0 documents, said nothing
    with pytest.raises(ConfigError, match=r"no documents in .*a\.jsonl: nothing was written"):
        pack_text([tmp_path / "empty"], url)
    after = load_token_manifest(LocalBackend(str(tmp_path / "store")))
    assert after.version == before.version and after.num_tokens == 4


def packed_versions(store: LocalBackend, count: int) -> list[str]:
    """``count`` packs into ``store``, the n-th of tokens 0 .. n + 2: their versions."""
    versions = []
    for n in range(count):
        with TokenWriter(store, vocab_size=10, shard_bytes=4) as w:
            w.write(list(range(n + 3)))
        versions.append(w.version)
    return versions


def test_a_new_version_keeps_the_previous_one_and_drops_older(tmp_path: Path) -> None:
    store = LocalBackend(str(tmp_path / "store"))
    versions = packed_versions(store, 3)
    kept = {k.key.split("/")[1] for k in store.list_objects("tokens/")}
    assert kept == set(versions[1:])
    assert load_token_manifest(store).version == versions[2]
    assert [m.key for m in store.list_objects("token-versions/")] == [
        f"token-versions/{versions[1]}.parquet"  # the replaced manifest, kept with its shards
    ]
    url = f"file://{tmp_path / 'store'}"
    earlier = TokenDataset(url, block_size=1, version=versions[1])
    assert earlier.manifest.version == versions[1] and [int(b[0]) for b in earlier] == [0, 1, 2, 3]
    assert len(TokenDataset(url, block_size=1, version=versions[2])) == 5
    gone = f"no dataset version '{versions[0]}' here .*kept: {versions[1]}"
    with pytest.raises(NotFoundError, match=gone):
        TokenDataset(url, block_size=1, version=versions[0])
    with pytest.raises(ConfigError, match="not a dataset version name"):
        DocumentDataset(url, max_length=4, version="../tokens")


def test_a_resume_state_of_other_blocks_or_items_is_refused(tmp_path: Path) -> None:
    """It was taken: block_size 37 -> 512 resumed with 0 of 114 blocks, a TokenDataset's
    state in a DocumentDataset with 0 documents, without a word."""
    url = f"file://{tmp_path / 'store'}"
    with TokenWriter(url, vocab_size=1000, shard_bytes=64) as w:
        for d in range(20):
            w.write(list(range(d, d + 40)))
    ds = TokenDataset(url, block_size=37, shuffle=True, seed=5)
    read = iter(ds)
    for _ in range(5):
        next(read)
    state = ds.state_dict()
    for other, differ in [
        (TokenDataset(url, block_size=512, shuffle=True, seed=5), r"block_size=37 \(here 512\)"),
        (
            TokenDataset(url, block_size=37, within_documents=True, shuffle=True, seed=5),
            r"within_documents=False \(here True\)",
        ),
        (
            DocumentDataset(url, max_length=16, shuffle=True, seed=5),
            r"kind='TokenDataset' \(here 'DocumentDataset'\)",
        ),
    ]:
        with pytest.raises(ConfigError, match=f"resume state was made with .*{differ}"):
            other.load_state_dict(state)
    same = TokenDataset(url, block_size=37, shuffle=True, seed=5)
    same.load_state_dict(state)
    assert len(list(same)) == len(ds) - 5


def test_a_resume_state_made_before_a_new_pack_resumes_on_its_version(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    with TokenWriter(url, vocab_size=1000, shard_bytes=64) as w:
        w.write(list(range(300)))
    first = TokenDataset(url, block_size=10, shuffle=True, seed=4)
    read = iter(first)
    before = [int(next(read)[0]) for _ in range(12)]
    state = first.state_dict()
    with TokenWriter(url, vocab_size=1000, shard_bytes=64) as w:  # a new version commits
        w.write(list(range(500, 700)))
    with pytest.raises(ConfigError, match="resume state is for dataset version"):
        TokenDataset(url, block_size=10, shuffle=True, seed=4).load_state_dict(state)
    resumed = TokenDataset(
        url, block_size=10, shuffle=True, seed=4, version=state["manifest_version"]
    )
    resumed.load_state_dict(state)
    after = [int(b[0]) for b in resumed]
    assert sorted(before + after) == list(range(0, 300, 10))


def test_damaged_manifests_are_integrity_errors(packed, tmp_path: Path) -> None:
    url, _ = packed
    store = LocalBackend(str(tmp_path / "store"))
    good = store.get(TOKENS_KEY)
    store.put(TOKENS_KEY, good[: len(good) // 2])
    with pytest.raises(IntegrityError, match=r"tokens\.parquet"):
        TokenDataset(url, block_size=8)
    table = pq.read_table(pa.BufferReader(good))
    meta = dict(table.schema.metadata)
    meta[b"dcstore.shards"] = b'[["tokens/x/000000.bin", -5, null, null]]'
    with pytest.raises(IntegrityError, match="damaged token manifest"):
        sink = pa.BufferOutputStream()
        pq.write_table(table.replace_schema_metadata(meta), sink)
        TokenManifest.from_parquet(sink.getvalue().to_pybytes())
    with pytest.raises(NotFoundError, match="pack --text"):
        TokenDataset(f"file://{tmp_path}/empty", block_size=8)


def test_parquet_and_text_inputs_and_a_callable_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    pq.write_table(pa.table({"body": ["a b", "c"], "y": [1, 0]}), tmp_path / "c" / "p.parquet")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "one.txt").write_text("a c a")
    vocab = {"a": 1, "b": 2, "c": 3}

    def split(text: str) -> list[int]:
        return [vocab[w] for w in text.split()]

    url = f"file://{tmp_path}/store"
    m = pack_text([tmp_path / "c"], url, tokenizer=split, vocab_size=4, eod=0, text_field="body",
                  columns=["y"], processes=2)  # fmt: skip
    assert [b.tolist() for b in TokenDataset(url, block_size=1)] == [[1], [2], [0], [3], [0]]
    assert m.documents.column("y").to_pylist() == [1, 0]
    pack_text([tmp_path / "t"], url, tokenizer=split, vocab_size=4)
    assert [b.tolist() for b in TokenDataset(url, block_size=3)] == [[1, 3, 1]]
    with pytest.raises(ConfigError, match="needs vocab_size"):
        pack_text([tmp_path / "t"], url, tokenizer=split)


def test_a_text_files_bytes_are_its_tokens_line_endings_too(tmp_path: Path) -> None:
    """Plain-text files were read with universal newlines: \\r\\n and \\r became \\n."""
    text = b"windows line\r\nold mac line\rend\n"
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_bytes(text)
    with gzip.open(tmp_path / "t" / "b.txt.gz", "wb") as f:
        f.write(text)
    url = f"file://{tmp_path}/store"
    pack_text([tmp_path / "t"], url)
    stored = next(iter(TokenDataset(url, block_size=2 * (len(text) + 1))))
    assert bytes(stored.tolist()[: len(text)]) == text
    assert bytes(stored.tolist()[len(text) + 1 : -1]) == text


def test_a_tokenizers_tokenizer_from_its_file(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    rows = corpus(tmp_path / "corpus", docs=50)
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        [r["text"] for r in rows], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOD]"])
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    url = f"file://{tmp_path}/store"
    m = pack_text([tmp_path / "corpus"], url, tokenizer=str(tmp_path / "tokenizer.json"),
                  eod="[EOD]")  # fmt: skip
    assert m.eod == tok.token_to_id("[EOD]") and m.vocab_size == tok.get_vocab_size()
    first = rows[0]["text"].split()
    ds = DocumentDataset(url, max_length=len(first) + 1)
    assert ds.read(0)["input_ids"].tolist() == [tok.token_to_id(w) for w in first] + [m.eod]
    with pytest.raises(ConfigError, match="no token"):
        pack_text([tmp_path / "corpus"], url, tokenizer=tok, eod="<|nope|>")
    # a Hub model name is not a file: the error says how to get one
    with pytest.raises(ConfigError, match=r"gpt2: no such tokenizer file.*downloads nothing.*save"):
        pack_text([tmp_path / "corpus"], url, tokenizer="gpt2")


class CountingLocal(LocalBackend):
    """A local store that counts the bytes read from it (never mapped, always counted)."""

    read_bytes = 0

    def get_range(self, key, start, end, *, version=None):
        type(self).read_bytes += end - start
        return super().get_range(key, start, end, version=version)

    def get(self, key, *, version=None):
        data = super().get(key, version=version)
        type(self).read_bytes += len(data)
        return data

    def map_range(self, key, start, end, *, version=None):
        return None


def test_random_access_reads_only_the_segments_a_block_touches(tmp_path: Path) -> None:
    from dcstore.crypto import EncryptedBackend

    segment = 64 * 1024
    store = EncryptedBackend(CountingLocal(str(tmp_path / "s")), Keyring.generate(),
                             segment_size=segment)  # fmt: skip
    with TokenWriter(store, vocab_size=1 << 16, shard_bytes=4 << 20) as writer:
        writer.write(np.arange(3 << 20) % (1 << 16))  # 6 MiB of ids, two shards
    ds = TokenDataset(store, block_size=2048)
    for i in (0, 777, ds.num_items - 1, (2 << 20) // 2048):  # first, middle, last, 2nd shard
        CountingLocal.read_bytes = 0
        block = ds.read(i)
        assert block.numpy().tolist() == [(i * 2048 + k) % (1 << 16) for k in range(2048)]
        assert CountingLocal.read_bytes <= 2 * (segment + 16) + 4096, (i, CountingLocal.read_bytes)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA")])],
)  # fmt: skip
def test_blocks_through_a_ring_and_onto_the_device(numbered: str, device: str) -> None:
    from dcstore import DeviceLoader, RingLoader

    ds = TokenDataset(numbered, block_size=16, shuffle=True, seed=2)
    seen = []
    for batch in DeviceLoader(RingLoader(ds, batch_size=8, num_workers=2), device):
        assert batch.device.type == device and batch.dtype == torch.uint16
        seen.extend(block_ids(batch.cpu()))
    assert sorted(seen) == list(range(2500))


def test_a_ring_sizes_its_first_slots_from_the_block_size(numbered: str) -> None:
    """``mean_sample_bytes`` (a block as handed out) sizes each worker's first slot, made
    before the workers start: the first batches need no buffer handed over, even with
    the smallest default slot (``slot_bytes=1``)."""
    from dcstore import RingLoader

    ds = TokenDataset(numbered, block_size=1000, dtype=torch.int32, shuffle=True, seed=1)
    assert ds.mean_sample_bytes == 1000 * 4
    ring = RingLoader(ds, batch_size=4, num_workers=2, slot_bytes=1)
    batches = iter(ring)
    firsts = [next(batches), next(batches)]  # one from each worker
    assert ring.stats["buffers"] == 0
    assert all(b.shape == (4, 1000) and b.dtype == torch.int32 for b in firsts)
    assert sorted(i for b in [*firsts, *batches] for i in block_ids(b, 1000)) == list(range(40))


@pytest.mark.parametrize("block_size", [2048, 2049])  # segment-aligned blocks, and straddlers
def test_an_encrypted_epoch_fetches_each_segment_once(tmp_path: Path, block_size: int) -> None:
    from dcstore.crypto import EncryptedBackend

    segment = 64 * 1024
    store = EncryptedBackend(CountingLocal(str(tmp_path / "s")), Keyring.generate(),
                             segment_size=segment)  # fmt: skip
    with TokenWriter(store, vocab_size=1 << 16, shard_bytes=1 << 20) as writer:
        writer.write(np.arange(3_000_000) % (1 << 16))  # ~5.7 MiB, six shards
    stored = sum(m.size for m in store.inner.list_objects("tokens/"))
    CountingLocal.read_bytes = 0
    for rank in range(3):  # rank shares start mid-segment
        ds = TokenDataset(store, block_size=block_size, shuffle=True, rank=rank, world_size=3,
                          window_bytes=128 * 1024, drop_last=True)  # fmt: skip
        assert sum(1 for _ in ds) == len(ds)
    # once, but for a segment shared at a rank boundary (two ranks, at most 2 per rank) or
    # at a shard boundary by a block that starts in one shard and ends in the next
    shards = len(ds.manifest.shards)
    extra = (2 * 3 + (shards if block_size % 2048 else 0)) * (segment + 16) + 20_000
    assert CountingLocal.read_bytes <= stored + extra, CountingLocal.read_bytes / stored


def test_empty_documents_are_empty_items(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/s"
    with TokenWriter(url, vocab_size=10, columns=["label"]) as writer:
        for i, doc in enumerate([[], [1, 2], [], [3], []]):
            writer.write(doc, label=i)
    ds = DocumentDataset(url, max_length=3, shuffle=True)
    got = {item["label"]: item["attention_mask"].sum().item() for item in ds}
    assert got == {0: 0, 1: 2, 2: 0, 3: 1, 4: 0}


def test_a_smaller_segment_size_makes_random_access_cheaper(tmp_path: Path, keys: str) -> None:
    def pack(name: str, **options) -> str:
        url = f"file://{tmp_path}/{name}"
        with TokenWriter(url, vocab_size=1 << 16, keys=keys, **options) as writer:
            writer.write(np.arange(2 << 20) % (1 << 16))  # 4 MiB of ids
        return url

    small = pack("small", segment_size=64 * 1024)
    default = pack("default")
    counts = {}
    for url in (small, default):
        CountingLocal.read_bytes = 0
        inner = CountingLocal(url.removeprefix("file://"))
        ds = TokenDataset(inner, keys=keys, block_size=2048)
        block = ds.read(300)
        assert block.numpy().tolist() == [(300 * 2048 + k) % (1 << 16) for k in range(2048)]
        counts[url] = CountingLocal.read_bytes
    assert counts[small] < 200 * 1024 < 4 << 20 <= counts[default], counts
    with pytest.raises(ConfigError, match="needs keys"):
        TokenWriter(f"file://{tmp_path}/x", vocab_size=10, segment_size=4096)


def test_the_cli_packs_text_with_a_segment_size(tmp_path: Path, keys: str, capsys) -> None:
    from dcstore.cli.main import main
    from dcstore.crypto.format import parse_header

    corpus(tmp_path / "corpus")
    out = tmp_path / "store"
    args = ["pack", "--text", str(tmp_path / "corpus"), str(out), "--column", "label", "-q"]
    assert main([*args, "--keys", keys, "--segment-size", "64KiB"]) == 0
    assert "300 documents" in capsys.readouterr().out
    shard = next((out / "tokens").rglob("*.bin")).read_bytes()
    assert parse_header(shard, "shard").segment_size == 64 * 1024
    labels = [d["label"] for d in DocumentDataset(str(out), max_length=4, keys=keys)]
    assert labels[:4] == [0, 1, 2, 0]
    assert main([*args, "--segment-size", "64KiB"]) == 2  # no keys: refused, one line
    assert "needs --keys" in capsys.readouterr().err


@pytest.mark.parametrize("first", [True, False])
def test_a_text_pack_that_fails_names_the_shards_it_left(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, first: bool
) -> None:
    """A failed `pack --text` left its token shards without a word (the image pack names
    them); the first into a store: gc refuses a store without a corpus, so say rm -r."""
    from dcstore.cli.main import main
    from dcstore.tokens import writer

    corpus(tmp_path / "corpus")
    url = f"file://{tmp_path / 'store'}"
    args = ["pack", "--text", str(tmp_path / "corpus"), url, "-q", "--shard-size", "1KiB"]
    if not first:
        assert main(args) == 0
    kept = {m.key for m in LocalBackend(str(tmp_path / "store")).list_objects("tokens/")}
    real = writer.TokenWriter._flush
    flushed = 0

    def failing(self: writer.TokenWriter) -> None:
        nonlocal flushed
        flushed += 1
        if flushed == 4:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(writer.TokenWriter, "_flush", failing)
    capsys.readouterr()
    assert main(args) == 130
    err = capsys.readouterr().err
    left = {m.key for m in LocalBackend(str(tmp_path / "store")).list_objects("tokens/")} - kept
    (version,) = {key.split("/")[1] for key in left}
    if first:
        assert f"`dcstore rm -r {url} tokens/{version}/` removes them" in err
        assert main(["rm", "-r", url, f"tokens/{version}/"]) == 0
    else:
        assert f"stay until `dcstore gc {url}` removes them" in err
        assert main(["gc", url]) == 0
    assert {m.key for m in LocalBackend(str(tmp_path / "store")).list_objects("tokens/")} == kept


def test_a_text_pack_stopped_after_its_commit_says_it_committed(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a pack interrupted while dropping older versions, after its commit, said
    the current version was unchanged."""
    from dcstore.cli.main import main
    from dcstore.tokens import writer

    (tmp_path / "c.jsonl").write_text('{"text": "a document"}\n' * 50)
    url = f"file://{tmp_path / 'store'}"
    args = ["pack", "--text", str(tmp_path / "c.jsonl"), url, "-q"]
    assert main(args) == 0 and main(args) == 0

    def interrupted(store: Any, keep: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_drop_versions", interrupted)
    capsys.readouterr()
    assert main(args) == 130
    current = load_token_manifest(LocalBackend(str(tmp_path / "store"))).version
    err = capsys.readouterr().err
    assert f"version {current} was committed and is current" in err, err


def test_key_rotation_records_the_shards_new_versions_in_every_kept_manifest(
    tmp_path: Path, keys: str, capsys
) -> None:
    """Outside pass: `keys rotate` rewrote every token shard's header (a new object version)
    but left tokens.parquet and the archived manifest pinning the old versions: every read
    and `verify` then failed (`ShardChangedError`), and the old key could be retired."""
    from dcstore.cli.main import main

    url = f"file://{tmp_path / 'store'}"
    old, new = [list(range(n, n + 30)) for n in (0, 100)]
    versions = []
    for tokens in (old, new):
        with TokenWriter(url, vocab_size=1000, shard_bytes=20, keys=keys) as w:
            w.write(tokens)
        versions.append(w.version)
    assert main(["keys", "new", "--keys", keys]) == 0
    assert main(["keys", "rotate", url, "--keys", keys]) == 0
    out = capsys.readouterr().out
    assert "recorded the new shard versions in 2 dataset manifest(s)" in out
    assert main(["verify", url, "--keys", keys]) == 0
    for version, tokens in zip(versions, (old, new), strict=True):
        dataset = TokenDataset(url, block_size=30, keys=keys, version=version)
        assert dataset.read(0).tolist() == tokens


def test_dcstore_versions_lists_a_token_corpus(tmp_path: Path, capsys) -> None:
    from dcstore.cli.main import main

    url = f"file://{tmp_path / 'store'}"
    versions = []
    for n in (30, 50):
        with TokenWriter(url, vocab_size=1000, shard_bytes=40) as w:
            w.write(list(range(n)))
        versions.append(w.version)
    capsys.readouterr()
    assert main(["versions", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in lines] == [
        [versions[1], "current", "50", "tokens"],
        [versions[0], "kept", "30", "tokens"],
    ]
    assert main(["versions", url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["versions"]
    assert [(r["tokens"], r["shards"], r["bytes"]) for r in rows] == [(50, 3, 100), (30, 2, 60)]
    assert main(["versions", url, "--manifest", "other.parquet"]) == 3  # not the corpus's key


def test_each_dataset_kind_names_the_other_when_opened_as_the_wrong_one(
    packed, tmp_path: Path
) -> None:
    from dcstore import ShardedDataset
    from dcstore.loaders import ShardWriter

    url, _ = packed
    with pytest.raises(NotFoundError, match=r"a token dataset .*TokenDataset or DocumentDataset"):
        ShardedDataset(url)
    samples = f"file://{tmp_path}/samples"
    with ShardWriter(samples) as writer:
        writer.write({"__key__": "a", "txt": "one sample"})
    with pytest.raises(NotFoundError, match=r"a sample dataset .*ShardedDataset"):
        TokenDataset(samples, block_size=8)
    with pytest.raises(NotFoundError, match="no token dataset here"):
        TokenDataset(f"file://{tmp_path}/empty", block_size=8)


def test_gc_removes_token_shards_no_kept_version_references(tmp_path: Path, capsys) -> None:
    from dcstore.cli.main import main

    store = LocalBackend(str(tmp_path / "store"))
    versions = packed_versions(store, 2)
    kept = sorted(m.key for m in store.list_objects("tokens/"))
    store.put("tokens/20200101T000000Z-deadbeef/000000.bin", b"\0\0")  # as a crashed pack leaves
    url = f"file://{tmp_path / 'store'}"
    assert main(["gc", url, "--dry-run"]) == 0
    assert "would remove tokens/20200101T000000Z-deadbeef/000000.bin" in capsys.readouterr().out
    assert main(["gc", url]) == 0
    assert sorted(m.key for m in store.list_objects("tokens/")) == kept  # both versions' shards
    assert len(TokenDataset(url, block_size=1, version=versions[0])) == 3
    assert len(TokenDataset(url, block_size=1)) == 4


def test_token_packs_and_gc_never_remove_an_object_no_pack_wrote(tmp_path: Path, capsys) -> None:
    """Review: gc (and a pack dropping old versions) removed anything under tokens/ and
    token-versions/ that no kept version referenced, a user's own objects included."""
    from dcstore.cli.main import main

    store = LocalBackend(str(tmp_path / "store"))
    mine = ["tokens/mine.bin", "tokens/old/000000.bin", "token-versions/notes.parquet"]
    for key in mine:
        store.put(key, b"mine")
    (tmp_path / "c.jsonl").write_text('{"text": "abc"}\n')
    url = f"file://{tmp_path / 'store'}"
    assert main(["pack", "--text", str(tmp_path / "c.jsonl"), url, "-q"]) == 0
    assert "holds objects that are not a dataset's ('token-versions/notes" in (
        capsys.readouterr().err
    )
    packed_versions(store, 3)  # drops older versions
    store.put("tokens/20200101T000000Z-deadbeef/000000.bin", b"\0\0")  # a crashed pack's
    assert main(["gc", url]) == 0
    assert "removed 1 object(s)" in capsys.readouterr().out
    assert all(store.get(key) == b"mine" for key in mine)


def test_a_users_table_where_the_token_manifest_goes_is_refused_not_replaced(
    tmp_path: Path,
) -> None:
    """A pack replaced a tokens.parquet that was the user's own Parquet table (taken
    for a damaged manifest), losing it; a damaged manifest is still replaced."""
    import io

    store = LocalBackend(str(tmp_path / "store"))
    table = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2, 3]}), table)
    store.put("tokens.parquet", table.getvalue())
    with pytest.raises(ConfigError, match=r"not a token manifest but another table.*nothing"):
        TokenWriter(store, vocab_size=256)
    assert store.get("tokens.parquet") == table.getvalue()
    assert [m.key for m in store.list_objects()] == ["tokens.parquet"]
    store.put("tokens.parquet", b"PAR1 damaged")
    with TokenWriter(store, vocab_size=256) as writer:
        writer.write([1, 2, 3])
    assert len(TokenDataset(store, block_size=1)) == 3


def test_verify_checks_every_shard_of_a_plaintext_corpus(tmp_path: Path, capsys) -> None:
    """Size, version and ids inside the vocabulary: a truncated shard, a replaced one and
    one corrupted in place (same version) each fail, named; the others pass."""
    from dcstore.cli.main import EXIT_INTEGRITY, main

    root = tmp_path / "store"
    with TokenWriter(LocalBackend(str(root)), vocab_size=1000, shard_bytes=8) as w:
        w.write(list(range(20)))  # 5 shards of 4 tokens
    url = f"file://{root}"
    assert main(["verify", url]) == 0
    assert "checked 5 object(s)" in capsys.readouterr().err
    shards = sorted((root / "tokens" / w.version).iterdir())
    shards[1].write_bytes(shards[1].read_bytes()[:6])  # truncated
    shards[2].write_bytes(shards[2].read_bytes())  # replaced: a new object version
    st = shards[3].stat()
    with open(shards[3], "r+b") as f:  # silent corruption: same size and version
        f.write(np.array([999, 1000], "<u2").tobytes())
    os.utime(shards[3], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(["verify", url]) == EXIT_INTEGRITY
    out = capsys.readouterr()
    failed = [line for line in out.out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 3 and "checked 5 object(s)" in out.err
    assert shards[1].name in failed[0] and shards[2].name in failed[1]
    assert shards[3].name in failed[2] and "id 1000, outside the vocabulary of 1000" in failed[2]


def mixed_store(root: Path, **keys) -> tuple[list[str], list[str]]:
    """Two packs of a sample dataset and two of a token corpus into ``root``, a crashed
    pack's shard of each left there: the versions of each, oldest first."""
    from dcstore.loaders import ShardWriter

    store = open_store(f"file://{root}", **keys)
    samples, tokens = [], []
    for n in (2, 3):
        with ShardWriter(store) as writer:
            for i in range(n):
                writer.write({"__key__": f"s{i}", "txt": f"sample {i}"})
        samples.append(writer.version)
        with TokenWriter(store, vocab_size=1000, shard_bytes=8) as w:
            w.write(list(range(4 * n)))
        tokens.append(w.version)
    store.put("shards/20200101T000000Z-deadbeef/000000.tar", b"crashed")
    store.put("tokens/20200101T000000Z-deadbeef/000000.bin", b"\0\0")
    return samples, tokens


def test_verify_versions_and_gc_handle_a_corpus_packed_beside_a_dataset(
    tmp_path: Path, capsys
) -> None:
    """Review: in a store holding both (pack allows it), verify checked only the sample
    dataset (a corrupt token shard: "0 failed", exit 0; --prefix tokens/ checked 0) and
    versions listed only its versions."""
    from dcstore.cli.main import EXIT_INTEGRITY, main

    root = tmp_path / "store"
    url = f"file://{root}"
    samples, tokens = mixed_store(root)
    assert main(["gc", url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "shards/20200101T000000Z-deadbeef/000000.tar" in out
    assert "tokens/20200101T000000Z-deadbeef/000000.bin" in out
    assert main(["gc", url]) == 0
    assert "removed 2 object(s)" in capsys.readouterr().out
    left = {m.key.split("/")[1] for m in LocalBackend(str(root)).list_objects()
            if m.key.startswith(("shards/", "tokens/"))}  # fmt: skip
    assert left == {*samples, *tokens}  # both kept versions of each, whole
    assert len(TokenDataset(url, block_size=1, version=tokens[0])) == 8
    assert len(ShardedDataset(url, version=samples[0])) == 2

    assert main(["versions", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sample dataset (manifest.parquet):"
    assert [line.split()[:4] for line in lines[1:3]] == [
        [samples[1], "current", "3", "samples"], [samples[0], "kept", "2", "samples"]
    ]  # fmt: skip
    assert lines[3] == "token corpus (tokens.parquet):"
    assert [line.split()[:4] for line in lines[4:]] == [
        [tokens[1], "current", "12", "tokens"], [tokens[0], "kept", "8", "tokens"]
    ]  # fmt: skip
    assert main(["versions", url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["versions"]
    assert [(r["dataset"], r["version"]) for r in rows] == [
        ("samples", samples[1]), ("samples", samples[0]),
        ("tokens", tokens[1]), ("tokens", tokens[0]),
    ]  # fmt: skip

    assert main(["verify", url]) == 0
    assert "checked 4 object(s)" in capsys.readouterr().err  # 1 + 3 shards, current versions
    shard = root / "tokens" / tokens[1] / "000002.bin"
    st = shard.stat()
    shard.write_bytes(np.array([999, 1000, 1, 2], "<u2").tobytes())  # same size and version
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    for prefix in ([], ["--prefix", "tokens/"]):
        assert main(["verify", url, *prefix]) == EXIT_INTEGRITY
        out = capsys.readouterr()
        assert f"FAILED  tokens/{tokens[1]}/000002.bin" in out.out
        assert f"checked {3 if prefix else 4} object(s)" in out.err


def test_verify_with_keys_checks_the_shards_of_both_manifests(tmp_path: Path, capsys) -> None:
    """With keys, only the sample dataset's manifest was read for shards gone or replaced."""
    from dcstore.cli.main import EXIT_INTEGRITY, main

    write_key_file(tmp_path / "k.json", Keyring.generate())
    keys = {"keys": str(tmp_path / "k.json")}
    root = tmp_path / "store"
    samples, tokens = mixed_store(root, **keys)
    url = f"file://{root}"
    assert main(["gc", url, "--keys", keys["keys"]]) == 0
    assert main(["verify", url, "--keys", keys["keys"]]) == 0
    (root / "tokens" / tokens[1] / "000001.bin").unlink()
    (root / "shards" / samples[1] / "000000.tar").unlink()
    capsys.readouterr()
    assert main(["verify", url, "--keys", keys["keys"]]) == EXIT_INTEGRITY
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2
    assert f"shards/{samples[1]}/000000.tar" in failed[0]
    assert f"tokens/{tokens[1]}/000001.bin" in failed[1]


def test_pack_text_takes_one_path_as_one_input(tmp_path: Path, monkeypatch) -> None:
    """Review: one str was iterated as characters ("s: no such corpus file"; an absolute
    path walked "/")."""
    rows = corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    for n, source in enumerate(["corpus", str(tmp_path / "corpus"), Path("corpus/part-0.jsonl")]):
        manifest = pack_text(source, f"file://{tmp_path}/s{n}", processes=1)
        assert manifest.num_tokens == len(stream_of(rows))
    with pytest.raises(NotFoundError, match=r"^nothing: no such corpus file"):
        pack_text("nothing", f"file://{tmp_path}/s", processes=1)


def test_a_first_pack_beside_the_other_kind_of_dataset_says_so(tmp_path: Path, capsys) -> None:
    """Review: a corpus packed into a store holding a sample dataset was noted as packed
    beside "objects that are not a dataset's ('manifest.parquet' first)"."""
    from dcstore.cli.main import main
    from dcstore.loaders import ShardWriter

    (tmp_path / "c.jsonl").write_text('{"text": "abc"}\n')
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "1.bin").write_bytes(b"x")
    text = ["pack", "--text", str(tmp_path / "c.jsonl")]
    images = ["pack", str(tmp_path / "imgs")]
    for name, first, second, kinds in (
        ("s", images, text, ("sample dataset ('manifest.parquet')", "token corpus")),
        ("t", text, images, ("token corpus ('tokens.parquet')", "sample dataset")),
    ):
        url = f"file://{tmp_path / name}"
        assert main([*first, url, "-q"]) == 0
        capsys.readouterr()
        assert main([*second, url, "-q"]) == 0
        err = capsys.readouterr().err
        assert f"holds a {kinds[0]}; the {kinds[1]} is packed beside it" in err
        assert "not a dataset's" not in err
    LocalBackend(str(tmp_path / "u")).put("notes.txt", b"mine")
    with ShardWriter(f"file://{tmp_path / 'u'}") as writer:
        writer.write({"__key__": "a", "txt": "one sample"})
    assert main([*text, f"file://{tmp_path / 'u'}", "-q"]) == 0
    err = capsys.readouterr().err
    assert "holds a sample dataset" in err
    assert "not a dataset's ('notes.txt' first); the token corpus is packed beside them" in err


@pytest.mark.parametrize("name", ["c.csv", "c.TSV", "c.csv.gz"])
def test_pack_text_refuses_a_csv_file(tmp_path: Path, capsys, name: str) -> None:
    """Review: a CSV was packed as one plain-text document, header included (exit 0), and
    with --column it said "a plain-text file has no columns"."""
    from dcstore.cli.main import main

    data = b'text,label\n"row 0, with comma",0\n"row 1",1\n'
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    for extra in ([], ["--column", "label"]):
        assert main(["pack", "--text", str(tmp_path / name), str(tmp_path / "t"), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / name}: CSV and TSV files are not read as a corpus" in err
        assert "JSONL (.jsonl, .json, .ndjson) and Parquet (.parquet)" in err
        assert not (tmp_path / "t").exists()
    with pytest.raises(ConfigError, match="CSV and TSV"):
        pack_text(tmp_path, f"file://{tmp_path}/u", processes=1)  # found walking a folder


@pytest.mark.parametrize(
    ("make", "message"),
    [(lambda url: TokenDataset(url, block_size="8"), "block_size must be a whole number .*'8'"),
     (lambda url: TokenDataset(url, block_size=8.0), "block_size must be a whole number .*8.0"),
     (lambda url: TokenDataset(url, block_size=0), "block_size must be >= 1, got 0"),
     (lambda url: DocumentDataset(url, max_length="16"), "max_length must be a whole number >= 1"),
     (lambda url: DocumentDataset(url, max_length=16, pad_id="0"),
      "pad_id must be a whole number >= -9223372036854775808, got '0'"),
     (lambda url: DocumentDataset(url, max_length=16, pad_id=2**63), "pad_id must fit int64")],
)  # fmt: skip
def test_token_dataset_sizes_of_the_wrong_kind_are_refused_at_once(
    tmp_path: Path, make: Any, message: str
) -> None:
    """Newcomer: block_size="8" or 8.0 and max_length="16" were bare TypeErrors, and
    pad_id="0" one only when iterating."""
    url = f"file://{tmp_path}/store"
    corpus(tmp_path / "corpus", docs=5)
    pack_text(tmp_path / "corpus", url, processes=1)
    with pytest.raises(ConfigError, match=f"^{message}"):
        make(url)
    assert DocumentDataset(url, max_length=16, pad_id=np.int64(3)).pad_id == 3
    assert DocumentDataset(url, max_length=16, pad_id=-100).pad_id == -100  # ignore index
