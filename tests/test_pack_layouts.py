"""``dcstore pack`` layouts with real image files: ImageFolder, flat + sidecars, webdataset
tars, JSONL/CSV/Parquet index; naming, extension normalisation, collisions, class balance."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pack_sources import decode, image_bytes, make_imagefolder, make_tar, write_image

from dcstore.cli.main import main
from dcstore.errors import ConfigError
from dcstore.loaders import ShardedDataset, ShardedMapDataset, ShardWriter, load_manifest
from dcstore.store import open_store


def pack(src: Path, dest: Path, *args: str) -> int:
    return main(["pack", str(src), f"file://{dest}", "-q", "--workers", "1", *args])


def samples(dest: Path, **kwargs) -> list[dict]:
    return list(ShardedDataset(f"file://{dest}", **kwargs))


def test_imagefolder_gives_labels_and_a_class_table(tmp_path: Path, capsys) -> None:
    written = ["dog", "cat", "bird"]
    make_imagefolder(tmp_path / "images", written, 4)
    assert pack(tmp_path / "images", tmp_path / "ds") == 0
    assert "(imagefolder, 3 classes)" in capsys.readouterr().out
    ds = ShardedDataset(f"file://{tmp_path / 'ds'}")
    assert ds.classes == ["bird", "cat", "dog"]  # sorted, like torchvision's ImageFolder
    assert ds.class_to_idx == {"bird": 0, "cat": 1, "dog": 2}
    assert ShardedMapDataset(f"file://{tmp_path / 'ds'}").classes == ds.classes
    got = list(ds)
    assert len(got) == 12
    for sample in got:
        folder = bytes(sample["path.txt"]).decode().split("/")[0]
        assert sample["__key__"].startswith(folder + "/")
        assert ds.classes[int(bytes(sample["cls"]))] == folder
        i = int(sample["__key__"].rsplit("_", 1)[1])
        assert bytes(sample["jpg"]) == image_bytes(written.index(folder) * 1000 + i)
        decode(sample["jpg"])


def test_imagefolder_packs_images_only_and_says_what_it_skipped(tmp_path: Path, capsys) -> None:
    make_imagefolder(tmp_path / "images", ["cat", "dog"], 3)
    (tmp_path / "images" / "cat" / "notes.txt").write_text("not a picture")
    (tmp_path / "images" / "dog" / "Thumbs.db").write_bytes(b"\0" * 8)
    assert pack(tmp_path / "images", tmp_path / "ds") == 0
    err = capsys.readouterr().err
    assert (
        "skipped 2 file(s) that are not images in class folders (cat/notes.txt and 1 more)" in err
    )
    got = samples(tmp_path / "ds")
    assert len(got) == 6 and all("jpg" in s for s in got)
    # Folders with no image at all (audio, say) are packed whole, with labels.
    for name in ("a", "b"):
        (tmp_path / "audio" / name).mkdir(parents=True)
        (tmp_path / "audio" / name / "x.wav").write_bytes(name.encode())
    assert pack(tmp_path / "audio", tmp_path / "ds2") == 0
    assert sorted(bytes(s["cls"]) for s in samples(tmp_path / "ds2")) == [b"0", b"1"]


def test_files_beside_the_class_folders_are_skipped_like_torchvision(
    tmp_path: Path, capsys
) -> None:
    make_imagefolder(tmp_path / "images", ["cat", "dog"], 3)
    (tmp_path / "images" / "README.txt").write_text("where these came from")
    assert pack(tmp_path / "images", tmp_path / "ds") == 0
    err = capsys.readouterr()
    assert "(imagefolder, 2 classes)" in err.out
    assert "skipped 1 file(s) beside the class folders (README.txt); only files in" in err.err
    assert "--group" not in err.err  # newcomer: it said --group packs it; it did not
    assert pack(tmp_path / "images", tmp_path / "ds1", "--group") == 0
    assert "skipped 1 file(s) beside the class folders (README.txt)" in capsys.readouterr().err
    assert len(samples(tmp_path / "ds1")) == 6
    got = samples(tmp_path / "ds")
    assert len(got) == 6 and sorted({bytes(s["cls"]) for s in got}) == [b"0", b"1"]
    # An image beside the folders makes the layout ambiguous: every file, flat.
    write_image(tmp_path / "images" / "loose.jpg", 9)
    assert pack(tmp_path / "images", tmp_path / "ds2") == 0
    assert "(flat)" in capsys.readouterr().out


def test_split_folders_packed_as_classes_get_a_note(tmp_path: Path, capsys) -> None:
    make_imagefolder(tmp_path / "data", ["train", "val"], 2)
    assert pack(tmp_path / "data", tmp_path / "ds") == 0
    assert "look like dataset splits" in capsys.readouterr().err


def test_one_file_is_one_sample_and_extensions_are_normalised(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    write_image(src / "photo.2023.jpg", 1)
    write_image(src / "photo.2024.jpg", 2)
    write_image(src / "x.JPEG", 3)
    write_image(src / "sub" / "y.PNG", 4, "PNG")
    (src / ".DS_Store").write_bytes(b"hidden files are skipped")
    assert pack(src, tmp_path / "ds", "--no-shuffle") == 0
    got = {s["__key__"]: s for s in samples(tmp_path / "ds")}
    assert sorted(got) == ["photo_2023", "photo_2024", "sub/y", "x"]
    assert bytes(got["photo_2023"]["path.txt"]) == b"photo.2023.jpg"
    assert bytes(got["photo_2024"]["jpg"]) == image_bytes(2)
    assert sorted(k for k in got["x"] if not k.startswith("__")) == ["jpeg", "path.txt"]
    assert bytes(got["x"]["path.txt"]) == b"x.JPEG"
    assert bytes(got["sub/y"]["png"]) == image_bytes(4, "PNG")
    assert load_manifest(open_store(f"file://{tmp_path / 'ds'}")).classes == ()


@pytest.mark.parametrize(
    ("files", "group", "message"),
    [
        (["a.JPG", "a.jpg"], True, "a.JPG and a.jpg both map to field 'jpg'"),
        (["a.JPG", "a.jpg"], False, "a.JPG and a.jpg both map to sample 'a'"),
        (["x.jpg", "x.json"], False, "pass --group"),
        (["a.b.jpg", "a_b.jpg"], False, "a.b.jpg and a_b.jpg both map to sample 'a_b'"),
    ],
)
def test_collisions_are_one_line_errors_and_write_nothing(
    tmp_path: Path, capsys, files: list[str], group: bool, message: str
) -> None:
    for i, name in enumerate(files):
        write_image(tmp_path / "src" / name, i)
    flags = ["--group"] if group else []
    assert pack(tmp_path / "src", tmp_path / "ds", *flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    "files",
    [["a.JPG", "a.jpg"], ["red/0.jpg", "red/0.JPG", "blue/0.jpg"], ["x.jpg", "x.json"],
     ["a.b.jpg", "a_b.jpg"]],
)  # fmt: skip
def test_a_collision_suggests_group_only_where_group_packs_the_files(
    tmp_path: Path, capsys, files: list[str]
) -> None:
    """Review: x.jpg and x.JPG were told to pass --group, which then failed (both are
    field 'jpg'); the hint names --group only when packing with it works."""
    for i, name in enumerate(files):
        write_image(tmp_path / "src" / name, i)
    assert pack(tmp_path / "src", tmp_path / "ds") == 2
    err = capsys.readouterr().err
    assert "rename one" in err
    grouped = pack(tmp_path / "src", tmp_path / "ds", "--group")
    assert ("--group" in err) == (grouped == 0), err


def test_flat_folder_with_sidecars_groups_into_one_sample(tmp_path: Path) -> None:
    src = tmp_path / "flat"
    for i in range(5):
        write_image(src / f"img{i}.jpg", i)
        (src / f"img{i}.json").write_text(json.dumps({"caption": f"picture {i}"}))
        (src / f"img{i}.cls").write_text(str(i % 2))
    assert pack(src, tmp_path / "ds", "--group") == 0
    got = {s["__key__"]: s for s in samples(tmp_path / "ds")}
    assert sorted(got) == [f"img{i}" for i in range(5)]
    s3 = got["img3"]
    assert json.loads(bytes(s3["json"])) == {"caption": "picture 3"}
    assert bytes(s3["cls"]) == b"1" and decode(s3["jpg"]) == decode(image_bytes(3))
    assert bytes(s3["path.txt"]).decode().split("\n") == ["img3.cls", "img3.jpg", "img3.json"]


def test_webdataset_shards_are_repacked_sample_for_sample(tmp_path: Path) -> None:
    for t in range(3):
        members = {}
        for i in range(6):
            members[f"s{t}_{i}.jpg"] = image_bytes(t * 10 + i)
            members[f"s{t}_{i}.cls"] = b"%d" % (i % 3)
        make_tar(tmp_path / "tars" / f"shard-{t:02d}.tar", members)
    assert pack(tmp_path / "tars", tmp_path / "ds", "--shard-size", "4KiB") == 0
    got = {s["__key__"]: s for s in samples(tmp_path / "ds")}
    assert len(got) == 18 and bytes(got["s2_4"]["jpg"]) == image_bytes(24)
    assert bytes(got["s2_4"]["cls"]) == b"1" and "path.txt" not in got["s2_4"]
    make_tar(tmp_path / "tars" / "dup.tar", {"s0_0.jpg": image_bytes(0)})
    assert pack(tmp_path / "tars", tmp_path / "ds2") == 2


@pytest.mark.parametrize("name", ["../up.jpg", "/abs.jpg", "a/../../b.jpg"])
def test_a_tar_member_that_would_escape_is_refused(tmp_path: Path, name: str, capsys) -> None:
    """Sample keys are tar member names: one that would extract outside its folder is
    refused when packing a tar (and by ShardWriter), never written into our shards."""
    make_tar(tmp_path / "tars" / "evil.tar", {"ok.jpg": image_bytes(0), name: image_bytes(1)})
    assert pack(tmp_path / "tars", tmp_path / "ds") == 2
    assert "keys are tar member names, relative and without '..'" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
    writer = ShardWriter(str(tmp_path / "w"))
    with pytest.raises(ConfigError, match=r"without '\.\.' segments"):
        writer.write({"__key__": name.removesuffix(".jpg"), "jpg": b"x"})
    writer.abort()


@pytest.mark.parametrize("name", ["a\\..\\..\\w.txt", "new\nline.txt", "red\x1b[31m.txt"])
def test_names_tools_would_misread_are_refused(tmp_path: Path, name: str, capsys) -> None:
    """A backslash is a folder separator to Windows tar tools (this one extracted
    outside); a newline split the path.txt list; an escape drives a terminal."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / name).write_bytes(b"x")
    assert pack(tmp_path / "src", tmp_path / "ds") == 2
    assert "in a tar member name (control characters and backslashes" in capsys.readouterr().err
    make_tar(tmp_path / "tars" / "t.tar", {name: b"x"})
    assert pack(tmp_path / "tars", tmp_path / "ds") == 2
    assert not (tmp_path / "ds").exists()
    writer = ShardWriter(str(tmp_path / "w"))
    bad = name.replace(".", "_")  # a key holds no dot after its last '/'
    for sample in ({"__key__": bad, "txt": b"x"}, {"__key__": "k", bad: b"x"}):
        with pytest.raises(ConfigError, match="control characters and backslashes"):
            writer.write(sample)
    writer.abort()


def test_shard_writer_refuses_a_key_repeated_back_to_back(tmp_path: Path) -> None:
    """webdataset reads two adjacent samples of one key as one sample (it raises on the
    repeated field): refused. The same key later in the stream is a separate sample."""
    with ShardWriter(str(tmp_path / "dup")) as writer:
        writer.write({"__key__": "k", "x": b"1"})
        with pytest.raises(ConfigError, match="repeats the sample's before it"):
            writer.write({"__key__": "k", "x": b"2"})
        writer.write({"__key__": "j", "x": b"3"})
        writer.write({"__key__": "k", "x": b"4"})
    got = [(s["__key__"], bytes(s["x"])) for s in samples(tmp_path / "dup")]
    assert got == [("k", b"1"), ("j", b"3"), ("k", b"4")]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_index_of_files_with_labels(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "files"
    rows = []
    for i in range(9):
        write_image(src / "raw" / f"{i:02d}.png", i, "PNG")
        label = ["zebra", "ant", "moth"][i % 3]
        rows.append({"path": f"raw/{i:02d}.png", "label": label, "caption": f"a {label}"})
    index = tmp_path / f"index.{fmt}"
    if fmt == "jsonl":
        index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        lines = ["path,label,caption", *(f"{r['path']},{r['label']},{r['caption']}" for r in rows)]
        index.write_text("\n".join(lines) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), index)
    assert pack(src, tmp_path / "ds", "--index", str(index)) == 0
    ds = ShardedDataset(f"file://{tmp_path / 'ds'}")
    assert ds.classes == ["ant", "moth", "zebra"]
    got = {s["__key__"]: s for s in ds}
    assert len(got) == 9
    s4 = got["raw/04"]
    assert ds.classes[int(bytes(s4["cls"]))] == "ant" and bytes(s4["caption"]) == b"a ant"
    assert bytes(s4["png"]) == image_bytes(4, "PNG") and bytes(s4["path.txt"]) == b"raw/04.png"


def test_index_with_integer_labels_keeps_them(tmp_path: Path) -> None:
    rows = [{"path": f"{i}.jpg", "label": i * 7} for i in range(3)]
    for i in range(3):
        write_image(tmp_path / "src" / f"{i}.jpg", i)
    index = tmp_path / "index.jsonl"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(index)) == 0
    ds = ShardedDataset(f"file://{tmp_path / 'ds'}")
    assert ds.classes == [] and {bytes(s["cls"]) for s in ds} == {b"0", b"7", b"14"}


def test_an_index_without_a_label_column_says_so(tmp_path: Path, caplog) -> None:
    """Newcomer: header ``path,lable`` packed field ``lable`` and no cls, silently."""
    write_image(tmp_path / "src" / "0.jpg", 0)
    (tmp_path / "typo.csv").write_text("path,lable\n0.jpg,cat\n")
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(tmp_path / "typo.csv")) == 0
    assert "typo.csv: no 'label' column (columns: path, lable), so samples have no cls" in (
        caplog.text
    )
    assert [bytes(s["lable"]) for s in samples(tmp_path / "ds")] == [b"cat"]
    caplog.clear()
    (tmp_path / "good.csv").write_text("path,label\n0.jpg,cat\n")
    assert pack(tmp_path / "src", tmp_path / "ds2", "--index", str(tmp_path / "good.csv")) == 0
    assert "no 'label' column" not in caplog.text


@pytest.mark.parametrize(
    ("labels", "message"),
    [((3, "x"), "row 2 ('1.jpg'): label 'x' mixes integer and text labels (row 1 has 3)"),
     (("x", "3"), "row 2 ('1.jpg'): label '3' mixes integer and text labels (row 1 has 'x')"),
     ((1, 3.5), "row 2 ('1.jpg'): label 3.5 is neither an integer nor text"),
     ((True, 1), "row 1 ('0.jpg'): label True is neither an integer nor text"),
     ((1, 10**20), f"row 2 ('1.jpg'): label {10**20} is outside int64 [-{2**63}, {2**63 - 1}]"),
     ((1, "-99999999999999999999"), "row 2 ('1.jpg'): label -99999999999999999999 is outside "
      "int64")],
)  # fmt: skip
def test_index_labels_mixing_integers_and_text_or_floats_are_refused(
    tmp_path: Path, capsys, labels: tuple, message: str
) -> None:
    """Newcomer: labels 3 and "x" became class table ['3', 'x'] (the sample labelled 3 got
    cls 0), and 3.5 became class '3.5', silently; 10**20 was packed, then failed in collate
    ("Overflow when unpacking long long")."""
    for i in range(2):
        write_image(tmp_path / "src" / f"{i}.jpg", i)
    index = tmp_path / "index.jsonl"
    rows = [{"path": f"{i}.jpg", "label": v} for i, v in enumerate(labels)]
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(index)) == 2
    assert f"index.jsonl {message}" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [("index.csv", "path,label\n0.jpg,3\n1.jpg,\n"),
     ("index.jsonl", '{"path": "0.jpg", "label": "cat"}\n{"path": "1.jpg"}\n')],
)  # fmt: skip
def test_an_index_row_without_a_label_among_labelled_ones_is_refused(
    tmp_path: Path, capsys, name: str, content: str
) -> None:
    """Review: the row was packed without field cls, and a reader asking for (jpg, cls)
    failed later with a KeyError."""
    for i in range(2):
        write_image(tmp_path / "src" / f"{i}.jpg", i)
    (tmp_path / name).write_text(content)
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(tmp_path / name)) == 2
    assert f"{name} row 2: no 'label'" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
    (tmp_path / name).write_text(content.replace(",3", ",").replace(', "label": "cat"', ""))
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(tmp_path / name)) == 0
    assert all("cls" not in s for s in samples(tmp_path / "ds"))  # no row labelled: none


@pytest.mark.parametrize("layout", ["imagefolder", "flat", "auto"])
def test_links_are_followed_and_loops_skipped(tmp_path: Path, layout: str, caplog) -> None:
    """A tree of links into a pool packs the pool's files; a link to a folder holding it
    (``l -> .``, ``up -> ..``) used to make pack walk for ever. Each loop is reported
    once (the layout detection's walk reported them too)."""
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "1.txt").write_bytes(b"pooled")
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "2.txt").write_bytes(b"own")
    (src / "a" / "1.txt").symlink_to(pool / "1.txt")
    (src / "pool").symlink_to(pool)
    (src / "loop").symlink_to(".")
    (src / "a" / "up").symlink_to("..")
    (src / "above").symlink_to("..")  # SRC's parent (which holds the pool): a loop too
    (src / "a" / "far").symlink_to("../..")
    assert pack(src, tmp_path / "ds", "--layout", layout) == 0
    got = {s["__key__"]: bytes(s["txt"]) for s in samples(tmp_path / "ds")}
    assert got == {"a/1": b"pooled", "a/2": b"own", "pool/1": b"pooled"}
    assert "src/loop: skipped, a link to a folder that contains it" in caplog.text
    for link in ("src/loop", "src/a/up", "src/above", "src/a/far"):
        assert caplog.text.count(f"{link}: skipped") == 1, link


def test_a_folder_of_tars_follows_links_as_the_other_layouts_do(tmp_path: Path) -> None:
    """Layout detection followed a linked folder of tars, the packing did not (rglob):
    its shards were left out without a word."""
    make_tar(tmp_path / "src" / "a.tar", {"s1.txt": b"one"})
    make_tar(tmp_path / "more" / "b.tar", {"s2.txt": b"two"})
    (tmp_path / "src" / "more").symlink_to(tmp_path / "more")
    assert pack(tmp_path / "src", tmp_path / "ds") == 0
    assert sorted(bytes(s["txt"]) for s in samples(tmp_path / "ds")) == [b"one", b"two"]


def test_compressed_tars_are_refused_and_tars_packed_as_files_are_said(
    tmp_path: Path, capsys, caplog
) -> None:
    """A folder of .tar.gz shards (webdataset reads them) packed with exit 0 as one sample
    per shard (the flat layout); a folder of .tar shards and a README did the same."""
    tar = make_tar(tmp_path / "t" / "a.tar", {"s1.txt": b"one", "s2.txt": b"two"})
    (tmp_path / "gz").mkdir()
    with gzip.open(tmp_path / "gz" / "a.tar.gz", "wb") as f:
        f.write(tar.read_bytes())
    for args in ((), ("--layout", "webdataset")):
        assert pack(tmp_path / "gz", tmp_path / "ds", *args) == 2
        assert "a.tar.gz: a compressed tar" in capsys.readouterr().err
    assert pack(tmp_path / "gz" / "a.tar.gz", tmp_path / "ds") == 2
    assert "decompress them first" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
    (tmp_path / "t" / "README.md").write_text("my shards")
    assert pack(tmp_path / "t", tmp_path / "flat") == 0  # files, as asked, but said so
    assert "1 tar file(s) (a.tar) packed as files" in caplog.text
    assert pack(tmp_path / "t", tmp_path / "wds", "--layout", "webdataset") == 0
    assert sorted(bytes(s["txt"]) for s in samples(tmp_path / "wds")) == [b"one", b"two"]


def test_hidden_tar_members_are_skipped_and_split_samples_named(
    tmp_path: Path, capsys, caplog
) -> None:
    """A tar made on macOS (._x.jpg beside x.jpg) failed with "every sample needs a
    non-empty str '__key__'", naming no tar; a key whose members are apart in one tar
    was "in both part.tar and part.tar"."""
    make_tar(tmp_path / "mac.tar", {"._x.txt": b"junk", "x.txt": b"X", "y.txt": b"Y"})
    assert pack(tmp_path / "mac.tar", tmp_path / "ds") == 0
    assert sorted(bytes(s["txt"]) for s in samples(tmp_path / "ds")) == [b"X", b"Y"]
    assert "skipped 1 hidden tar member(s)" in caplog.text and "mac.tar:._x.txt" in caplog.text
    make_tar(tmp_path / "part.tar", {"a.txt": b"1", "b.txt": b"2", "a.cls": b"3"})
    assert pack(tmp_path / "part.tar", tmp_path / "ds2") == 2
    assert "part.tar: sample 'a' twice: its members are not next to each other" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("text", [False, True])
def test_a_destination_inside_src_is_refused(tmp_path: Path, capsys, text: bool) -> None:
    """`pack . ds` worked once; the next pack into it took ds for a class folder ("ds:
    class folder has no images"), or its shards for samples."""
    make_imagefolder(tmp_path / "images", ["cat", "dog"], 2)
    args = ("--text",) if text else ()
    assert pack(tmp_path / "images", tmp_path / "images" / "ds", *args) == 2
    assert "is inside SRC" in capsys.readouterr().err
    assert not (tmp_path / "images" / "ds").exists()
    assert pack(tmp_path / "images" / "cat", tmp_path / "cat-ds") == 0  # outside
    if not text:  # a hidden folder is never walked, so it may hold the dataset
        for _ in range(2):
            assert pack(tmp_path / "images", tmp_path / "images" / ".packed") == 0


def test_index_paths_stay_inside_src(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "src" / "a.jpg", 0)
    index = tmp_path / "index.jsonl"
    index.write_text(json.dumps({"path": "../outside.jpg"}) + "\n")
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(index)) == 2
    assert "without '..'" in capsys.readouterr().err


def classes_per_batch(dest: Path, batch: int = 64) -> list[int]:
    got = samples(dest, shuffle=True, seed=0)
    return [len({bytes(s["cls"]) for s in got[i : i + batch]}) for i in range(0, len(got), batch)]


def test_pack_time_shuffle_balances_classes_in_a_batch(tmp_path: Path) -> None:
    classes = [f"class{c}" for c in range(10)]
    make_imagefolder(tmp_path / "images", classes, 40)
    assert pack(tmp_path / "images", tmp_path / "mixed", "--shard-size", "256KiB") == 0
    assert (
        pack(tmp_path / "images", tmp_path / "sorted", "--shard-size", "256KiB", "--no-shuffle")
        == 0
    )
    mixed = classes_per_batch(tmp_path / "mixed")
    assert min(mixed[:-1]) >= 8, mixed  # 64 draws from 10 equal classes: all but rarely 1
    assert max(classes_per_batch(tmp_path / "sorted")[:-1]) <= 6  # the problem it solves


def test_shuffle_is_deterministic_per_seed(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "images", ["a", "b"], 10)
    orders = []
    for name, seed in (("one", "7"), ("two", "7"), ("three", "8")):
        assert pack(tmp_path / "images", tmp_path / name, "--seed", seed) == 0
        orders.append([s["__key__"] for s in samples(tmp_path / name)])
    assert orders[0] == orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(orders[2])


def test_index_columns_become_lower_case_fields(tmp_path: Path) -> None:
    """Review: a `Caption` column was refused once ShardWriter refused upper-case fields;
    extensions were always lower-cased, columns now are too."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"A")
    index = tmp_path / "index.csv"
    index.write_text("path,label,Caption\na.txt,cat,a photo\n")
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(index)) == 0
    (sample,) = samples(tmp_path / "ds")
    assert bytes(sample["caption"]) == b"a photo" and "Caption" not in sample


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("index.jsonl", b'{"path": "a.jpg"}\n{"path": broken\n', "index.jsonl:2: not a JSON line"),
        ("index.jsonl", b'{"path": "a.jpg"}\n["a.jpg"]\n', "index.jsonl:2: a JSON line must be"),
        ("index.parquet", b"garbage\n", "index.parquet: not a readable Parquet file"),
        ("index.csv", b"path,label\na.jpg,1\n\xff.jpg,2\n", "index.csv:3: not UTF-8 text"),
    ],
)
def test_a_malformed_index_is_a_one_line_error_naming_the_line(
    tmp_path: Path, capsys, name: str, content: bytes, message: str
) -> None:
    """Review: a malformed JSONL line or a file that is not Parquet printed a traceback
    (exit 1); read like the corpus of `pack --text`, it is one line naming the place."""
    write_image(tmp_path / "src" / "a.jpg", 0)
    (tmp_path / name).write_bytes(content)
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(tmp_path / name)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "ds").exists()


def test_negative_integer_labels_in_a_csv_are_integers(tmp_path: Path) -> None:
    """Review: "-1" is no digit string, so a CSV of labels -1, 0 was refused as a mix of
    integer and text labels (JSONL packed the same labels)."""
    for i in range(2):
        write_image(tmp_path / "src" / f"{i}.jpg", i)
    (tmp_path / "index.csv").write_text("path,label\n0.jpg,-1\n1.jpg,0\n")
    assert pack(tmp_path / "src", tmp_path / "ds", "--index", str(tmp_path / "index.csv")) == 0
    assert sorted(bytes(s["cls"]) for s in samples(tmp_path / "ds")) == [b"-1", b"0"]
