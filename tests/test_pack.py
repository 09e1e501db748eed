"""``dcstore pack`` and ShardWriter: folders, webdataset tars, encryption, manifest."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from dcstore.cli.main import main
from dcstore.errors import ConfigError
from dcstore.loaders import ShardedDataset, ShardWriter, load_manifest
from dcstore.store import open_store


def make_folder(root: Path, n: int) -> None:
    for i in range(n):
        d = root / f"part{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{i:04d}.jpg").write_bytes(bytes([i % 256]) * (100 + i))
        (d / f"img{i:04d}.cls").write_text(str(i))


def test_pack_folder_then_read(tmp_path, capsys) -> None:
    make_folder(tmp_path / "src", 60)
    url = f"file://{tmp_path / 'out'}"
    args = ["--layout", "flat", "--group", "--shard-size", "4KiB", "-q"]
    assert main(["pack", str(tmp_path / "src"), url, *args]) == 0
    assert "packed 60 samples" in capsys.readouterr().out
    manifest = load_manifest(open_store(url))
    assert manifest.num_samples == 60 and len(manifest.shards) > 3
    assert all(s.size <= 4096 or s.num_samples == 1 for s in manifest.shards)
    got = {s["__key__"]: int(bytes(s["cls"])) for s in ShardedDataset(url)}
    assert got["part1/img0004"] == 4 and len(got) == 60


def test_shards_are_readable_by_tarfile_and_webdataset(tmp_path) -> None:
    make_folder(tmp_path / "src", 12)
    out = tmp_path / "out"
    args = ["--layout", "flat", "--group", "--no-shuffle", "--no-names", "-q"]
    assert main(["pack", str(tmp_path / "src"), f"file://{out}", *args]) == 0
    (shard,) = out.glob("shards/*/*.tar")
    with tarfile.open(shard) as tf:
        assert len(tf.getnames()) == 24
    wds = pytest.importorskip("webdataset")
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert len(samples) == 12 and samples[0]["cls"] == b"0"


def test_pack_existing_tars_and_encrypt(tmp_path) -> None:
    from dcstore.crypto import Keyring, write_key_file

    tars = tmp_path / "tars"
    tars.mkdir()
    for t in range(3):
        with tarfile.open(tars / f"shard-{t}.tar", "w") as tf:
            for i in range(10):
                for ext, payload in (("txt", f"t{t}s{i}".encode()), ("cls", b"%d" % i)):
                    info = tarfile.TarInfo(f"s{t}_{i:02d}.{ext}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    write_key_file(tmp_path / "kek.json", Keyring.generate())
    keys = f"file://{tmp_path / 'kek.json'}"
    url = f"file://{tmp_path / 'enc'}"
    assert main(["pack", str(tars), url, "--keys", keys, "-q"]) == 0
    texts = sorted(bytes(s["txt"]).decode() for s in ShardedDataset(url, keys=keys))
    assert len(texts) == 30 and texts[0] == "t0s0"
    assert main(["pack", str(tmp_path / "missing"), url, "-q"]) == 3


def test_writer_rejects_bad_samples(tmp_path) -> None:
    with pytest.raises(ConfigError, match="keep must be at least 1"):
        ShardWriter(f"file://{tmp_path}", keep=0)
    with ShardWriter(f"file://{tmp_path}") as writer:
        for bad in (
            {"bin": b"x"},
            {"__key__": "a.b", "bin": b"x"},
            {"__key__": "k"},
            {"__key__": "k", "bin": object()},
        ):
            with pytest.raises(ConfigError):
                writer.write(bad)
        writer.write({"__key__": "ok", "txt": "é", "cls": 3})
    sample = ShardedDataset(f"file://{tmp_path}").read(0)
    assert bytes(sample["txt"]).decode() == "é" and bytes(sample["cls"]) == b"3"


def test_new_version_replaces_old_atomically(tmp_path) -> None:
    url = f"file://{tmp_path}"
    for n in (5, 8):
        with ShardWriter(url) as writer:
            for i in range(n):
                writer.write({"__key__": f"v{n}_{i}", "bin": b"x"})
    ds = ShardedDataset(url)
    assert ds.manifest.num_samples == 8 and all(s["__key__"].startswith("v8") for s in ds)


@pytest.mark.parametrize(
    "name",
    ["a.jpg", "x" * 96 + ".jpg", "d/" * 60 + "k.jpg", "y" * 150 + ".jpg", "été/ü.jpg"],
)
def test_planned_header_length_matches_the_writer(name: str) -> None:
    from dcstore.loaders.packing import header_length
    from dcstore.loaders.tario import member_header

    assert header_length(name) == len(member_header(name, 12345))
