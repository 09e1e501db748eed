"""A pack that could not add a version to the dataset already there (encrypted, packed
without keys or with another key file; plaintext, packed with keys) is refused before it
writes anything, for sample datasets (CLI, ``ShardWriter``, parallel ``pack_plan``) and
token datasets alike. Before, it wrote every shard, failed at the commit with a message
about a manifest it could not parse, and left the shards behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from pack_sources import make_imagefolder

from dcstore.cli.main import main
from dcstore.crypto import Keyring, write_key_file
from dcstore.errors import ConfigError, KeyAccessError
from dcstore.loaders import ShardedDataset, ShardWriter, load_manifest
from dcstore.loaders.ingest import plan_source
from dcstore.loaders.packing import pack_plan
from dcstore.store import open_store
from dcstore.tokens import pack_text
from dcstore.tokens.dataset import TokenDataset
from dcstore.tokens.manifest import TOKENS_KEY


def key_file(path: Path) -> str:
    write_key_file(path, Keyring.generate())
    return f"file://{path}"


def objects(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, str]:
    """Two key files: the dataset's and another project's."""
    return key_file(tmp_path / "ours.kek"), key_file(tmp_path / "theirs.kek")


def test_sample_packs_are_refused_before_writing(tmp_path: Path, keys: tuple[str, str]) -> None:
    ours, theirs = keys
    make_imagefolder(tmp_path / "images", ["a", "b"], 12)
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert main(["pack", str(tmp_path / "images"), str(enc), "-q", "--keys", ours]) == 0
    assert main(["pack", str(tmp_path / "images"), str(plain), "-q"]) == 0
    before = objects(enc), objects(plain)

    with pytest.raises(KeyAccessError, match=r"manifest\.parquet\) is encrypted: pack with"):
        ShardWriter(str(enc))
    with pytest.raises(KeyAccessError, match=r"theirs\.kek .*nothing was written"):
        ShardWriter(str(enc), keys=theirs)
    with pytest.raises(ConfigError, match="is not encrypted: pack without keys"):
        ShardWriter(str(plain), keys=ours)
    with pytest.raises(KeyAccessError, match="is encrypted"):  # the parallel pack checks once
        pack_plan(
            open_store(str(enc)), plan_source(tmp_path / "images"), workers=2,
            min_bytes_per_worker=0,
        )  # fmt: skip
    assert main(["pack", str(tmp_path / "images"), str(enc), "-q"]) != 0  # the CLI: an error
    assert (objects(enc), objects(plain)) == before  # nothing written anywhere

    current = load_manifest(open_store(str(enc), keys=ours)).version  # the right keys still pack
    assert main(["pack", str(tmp_path / "images"), str(enc), "-q", "--keys", ours]) == 0
    assert load_manifest(open_store(str(enc), keys=ours)).previous == (current,)
    assert len(list(ShardedDataset(str(enc), keys=ours))) == 24


def test_token_packs_are_refused_before_writing(tmp_path: Path, keys: tuple[str, str]) -> None:
    ours, theirs = keys
    (tmp_path / "docs").mkdir()
    for i in range(5):
        (tmp_path / "docs" / f"{i}.txt").write_text(f"document {i} " * 50)
    docs = [tmp_path / "docs"]
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    pack_text(docs, str(enc), keys=ours)
    pack_text(docs, str(plain))
    before = objects(enc), objects(plain)

    with pytest.raises(KeyAccessError, match=r"tokens\.parquet\) is encrypted"):
        pack_text(docs, str(enc))
    with pytest.raises(KeyAccessError, match=r"theirs\.kek"):
        pack_text(docs, str(enc), keys=theirs)
    with pytest.raises(ConfigError, match="is not encrypted"):
        pack_text(docs, str(plain), keys=ours)
    assert main(["pack", "--text", str(docs[0]), str(enc), "-q"]) != 0
    assert (objects(enc), objects(plain)) == before

    pack_text(docs, str(enc), keys=ours)  # the right keys still pack, and drop nothing kept
    assert len(TokenDataset(str(enc), block_size=16, keys=ours)) > 0


def test_a_damaged_token_manifest_is_still_replaced(tmp_path: Path, keys: tuple[str, str]) -> None:
    """The check refuses other keys, not damage: a pack replaces a damaged manifest, as
    before (a truncated encrypted one, read with the right keys)."""
    ours, _ = keys
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("words " * 100)
    url = str(tmp_path / "enc")
    pack_text([tmp_path / "docs"], url, keys=ours)
    manifest = tmp_path / "enc" / TOKENS_KEY
    manifest.write_bytes(manifest.read_bytes()[:-40])
    pack_text([tmp_path / "docs"], url, keys=ours)
    assert len(TokenDataset(url, block_size=16, keys=ours)) > 0


def test_clean_up_drops_what_the_keys_cannot_decode(tmp_path: Path, keys: tuple[str, str]) -> None:
    """Plaintext left under an encrypted dataset (by a mistaken pack before the check
    above) or a damaged orphan no longer blocks the clean-up that drops it: the next pack's
    (token datasets) and ``dcstore gc`` (both) delete it by key; a referenced shard stays."""
    ours, _ = keys
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("words " * 100)
    corpus = str(tmp_path / "corpus")
    pack_text([tmp_path / "docs"], corpus, keys=ours)
    raw = open_store(corpus)  # no keys: writes the plaintext a mistaken pack left
    raw.put("tokens/20260101T000000Z-00000000/000000.bin", b"plaintext tokens " * 100)
    raw.put("tokens/20260101T000001Z-00000000/000000.bin", b"DCSE" + bytes(200))  # damaged
    pack_text([tmp_path / "docs"], corpus, keys=ours)  # used to fail after its commit
    left = {m.key.split("/")[1] for m in raw.list_objects("tokens/")}
    assert len(left) == 2 and not any(v.startswith("20260101") for v in left)

    make_imagefolder(tmp_path / "images", ["a", "b"], 6)
    ds = tmp_path / "ds"
    assert main(["pack", str(tmp_path / "images"), str(ds), "-q", "--keys", ours]) == 0
    open_store(str(ds)).put("shards/20260101T000000Z-00000000/000000.tar", b"plain " * 99)
    assert main(["gc", str(ds), "--keys", ours]) == 0
    assert not (ds / "shards" / "20260101T000000Z-00000000").exists()
    assert len(list(ShardedDataset(str(ds), keys=ours))) == 12
