"""Pack versions (keep the last N), ``dcstore gc`` (dry run and real), parallel == serial,
byte-accurate progress; on local disk and on the real HDFS server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures
from pack_sources import make_imagefolder

from dcstore.backends.registry import open_backend
from dcstore.cli.main import main
from dcstore.errors import BackendUnavailableError, ConfigError, NotFoundError
from dcstore.loaders import ShardedDataset, ShardedMapDataset, ShardWriter, load_manifest
from dcstore.loaders.ingest import plan_source
from dcstore.loaders.packing import pack_plan
from dcstore.loaders.versions import archive_key
from dcstore.store import open_store


def pack(src: Path, url: str, *args: str) -> int:
    return main(["pack", str(src), url, "-q", "--shard-size", "16KiB", *args])


def shard_versions(url: str) -> set[str]:
    with open_backend(url) as store:
        return {meta.key.split("/")[1] for meta in store.list_objects("shards/")}


def add_orphans(url: str) -> list[str]:
    """Garbage a crashed pack leaves: shards of a version that never committed."""
    with open_backend(url) as store:
        writer = ShardWriter(store, shard_size=1024)
        for i in range(3):
            writer.write({"__key__": f"orphan{i}", "bin": bytes(2000)})
        writer.abort()  # two shards were put, no manifest committed
        return sorted(m.key for m in store.list_objects(f"shards/{writer.version}/"))


def check_versions_and_gc(src: Path, url: str, capsys) -> None:
    """Three packs keep two versions; gc --dry-run lists orphans, gc removes only them."""
    with open_backend(url) as store:  # the first version packed by two processes
        plan = plan_source(src)
        versions = [
            pack_plan(store, plan, shard_size=16384, workers=2, min_bytes_per_worker=0).version
        ]
    for _ in range(2):
        assert pack(src, url) == 0
        versions.append(load_manifest(open_store(url)).version)
    current = load_manifest(open_store(url))
    assert current.previous == (versions[1],)
    assert shard_versions(url) == {versions[1], versions[2]}  # the oldest was deleted
    previous = ShardedDataset(url, version=versions[1])  # read from its archive
    assert previous.manifest.version == versions[1] and len(list(previous)) == 24
    capsys.readouterr()
    assert main(["versions", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[versions[2], "current"], [versions[1], "kept"]]
    assert all("24 samples in" in line for line in lines)

    orphans = add_orphans(url)
    assert len(orphans) == 2
    capsys.readouterr()
    assert main(["gc", url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"would remove {key}" in out for key in orphans)
    assert "would remove 2 object(s)" in out
    assert len(shard_versions(url)) == 3  # nothing removed
    assert main(["gc", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(o["key"] for o in report["objects"]) == orphans and not report["dry_run"]
    assert shard_versions(url) == {versions[1], versions[2]}
    assert main(["gc", url]) == 0
    assert "removed 0 object(s)" in capsys.readouterr().out
    assert len(list(ShardedDataset(url))) == 24 and len(list(previous)) == 24

    assert pack(src, url, "--keep", "1") == 0  # keep 1: the replaced versions go at once
    assert len(shard_versions(url)) == 1 and load_manifest(open_store(url)).previous == ()
    with open_backend(url) as store:
        assert list(store.list_objects("versions/")) == []


def test_versions_and_gc_on_local_disk(tmp_path: Path, capsys) -> None:
    make_imagefolder(tmp_path / "images", ["a", "b", "c"], 8)
    check_versions_and_gc(tmp_path / "images", f"file://{tmp_path / 'ds'}", capsys)


@pytest.mark.server("hdfs")
def test_versions_and_gc_on_hdfs(tmp_path: Path, hdfs_base: str, capsys) -> None:  # noqa: F811
    make_imagefolder(tmp_path / "images", ["a", "b", "c"], 8)
    check_versions_and_gc(tmp_path / "images", f"{hdfs_base}/ds", capsys)


USER_OBJECTS = (
    "shards/a.tar",  # README: dcstore put ./data shards/a.tar a.tar
    "shards/mine/000000.tar",
    "shards/20200101T000000Z-deadbeef/notes.txt",
    "versions/notes.parquet",
)


def test_gc_and_pack_never_remove_an_object_no_pack_wrote(tmp_path: Path, capsys) -> None:
    """Review: gc removed the user's own shards/a.tar (anything under shards/ that no
    manifest referenced). It removes only what a pack wrote; pack says DEST holds such
    objects."""
    make_imagefolder(tmp_path / "images", ["a", "b"], 4)
    url = f"file://{tmp_path / 'ds'}"
    with open_backend(url) as store:
        for key in USER_OBJECTS:
            store.put(key, key.encode())
    assert pack(tmp_path / "images", url) == 0
    assert "holds objects that are not a dataset's ('shards/20200101" in capsys.readouterr().err
    orphans = add_orphans(url)
    assert pack(tmp_path / "images", url, "--keep", "1") == 0  # drops the first version
    assert "note" not in capsys.readouterr().err  # a dataset now: said once, at the first
    assert main(["gc", url]) == 0
    out = capsys.readouterr().out
    assert all(f"removed {key}" in out for key in orphans) and "removed 2 object(s)" in out
    with open_backend(url) as store:
        assert all(store.get(key) == key.encode() for key in USER_OBJECTS)
    assert len(list(ShardedDataset(url))) == 8


def test_version_names_are_those_gc_recognises() -> None:
    from dcstore.loaders.versions import PACK_OBJECTS, shard_key
    from dcstore.loaders.writer import new_version

    version = new_version()
    assert PACK_OBJECTS.fullmatch(shard_key(version, 0))
    assert PACK_OBJECTS.fullmatch(shard_key(version, 1234567))
    assert PACK_OBJECTS.fullmatch(archive_key(version))
    assert not PACK_OBJECTS.fullmatch(shard_key("mine", 0))


def test_gc_without_a_dataset_removes_nothing_and_says_what_does(tmp_path: Path, capsys) -> None:
    """Without a manifest, gc cannot tell a failed first pack's shards from those of a
    dataset whose manifest is elsewhere or lost (removing them deleted live datasets)."""
    url = f"file://{tmp_path}"
    add_orphans(url)
    assert main(["gc", url]) == 3
    err = capsys.readouterr().err
    assert "no dataset here" in err and f"dcstore rm -r {url} shards/VERSION/" in err
    assert len(shard_versions(url)) == 1


@pytest.mark.parametrize(
    ("error", "code"), [(KeyboardInterrupt(), 130), (BackendUnavailableError("reset"), 5)]
)
def test_a_first_pack_that_fails_names_the_shards_it_left(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, error: BaseException, code: int
) -> None:
    """A first pack that failed (but for a full disk) said nothing of the shards it left,
    and gc cannot remove them (there is no dataset to tell them from)."""
    from dcstore.loaders import packing

    make_imagefolder(tmp_path / "images", ["a", "b"], 4)
    real = packing.run_job

    def failing(*args: Any, **kwargs: Any) -> Any:
        yield from real(*args, **kwargs)
        raise error

    monkeypatch.setattr(packing, "run_job", failing)
    url = f"file://{tmp_path / 'ds'}"
    assert main(["pack", str(tmp_path / "images"), url, "-q", "--workers", "1"]) == code
    (version,) = shard_versions(url)
    assert f"`dcstore rm -r {url} shards/{version}/` removes them" in capsys.readouterr().err
    assert main(["rm", "-r", url, f"shards/{version}/"]) == 0 and not shard_versions(url)


def test_a_manifest_the_commit_cannot_read_is_refused_before_any_shard(
    tmp_path: Path, capsys
) -> None:
    """Review: a user's own manifest.parquet (another table) let the pack write its shards,
    then fail the commit as an integrity error (exit 6), leaving them behind."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    make_imagefolder(tmp_path / "images", ["a", "b"], 4)
    (tmp_path / "ds").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "ds" / "manifest.parquet")
    foreign = (tmp_path / "ds" / "manifest.parquet").read_bytes()
    url = f"file://{tmp_path / 'ds'}"
    assert pack(tmp_path / "images", url) == 2
    err = capsys.readouterr().err
    assert "not a dcstore dataset manifest" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="nothing was written"):
        ShardWriter(url)
    assert [p.name for p in (tmp_path / "ds").rglob("*")] == ["manifest.parquet"]
    assert (tmp_path / "ds" / "manifest.parquet").read_bytes() == foreign

    assert pack(tmp_path / "images", f"file://{tmp_path / 'ok'}") == 0  # a damaged manifest
    manifest = tmp_path / "ok" / "manifest.parquet"
    manifest.write_bytes(manifest.read_bytes()[:-100])
    before = sorted(tmp_path.joinpath("ok").rglob("*"))
    assert pack(tmp_path / "images", f"file://{tmp_path / 'ok'}") == 6
    assert "nothing was written" in capsys.readouterr().err
    assert sorted(tmp_path.joinpath("ok").rglob("*")) == before


def test_parallel_pack_equals_serial_and_counts_every_byte(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "images", [f"c{i}" for i in range(5)], 30)
    plan = plan_source(tmp_path / "images").shuffled(3)
    files = list((tmp_path / "images").rglob("*.jpg"))
    names = sum(len(p.relative_to(tmp_path / "images").as_posix()) for p in files)
    expected = sum(p.stat().st_size for p in files) + len(files) + names  # + cls + path.txt
    results = {}
    for workers in (1, 2):
        counted: list[int] = []
        with open_backend(f"file://{tmp_path / f'w{workers}'}") as store:
            manifest = pack_plan(
                store,
                plan,
                shard_size=8 * 1024,
                workers=workers,
                progress=counted.append,
                min_bytes_per_worker=0,  # processes even for this small plan
            )
            shards = [store.get(s.key) for s in manifest.shards]
        assert sum(counted) == plan.total_bytes == expected
        results[workers] = (manifest, shards)
    (serial, serial_bytes), (parallel, parallel_bytes) = results[1], results[2]
    assert len(serial.shards) > 8
    assert serial_bytes == parallel_bytes  # byte for byte, shard for shard
    assert [s.sample_keys for s in serial.shards] == [s.sample_keys for s in parallel.shards]
    assert serial.classes == parallel.classes == tuple(f"c{i}" for i in range(5))


def test_failed_parallel_pack_commits_nothing_and_gc_cleans_up(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "images", ["a", "b"], 20)
    plan = plan_source(tmp_path / "images")
    (tmp_path / "images" / "b" / "b_019.jpg").unlink()  # vanishes between plan and pack
    url = f"file://{tmp_path / 'ds'}"
    with open_backend(url) as store, pytest.raises(FileNotFoundError, match=r"b_019\.jpg"):
        pack_plan(store, plan, shard_size=4096, workers=2, min_bytes_per_worker=0)
    assert not (tmp_path / "ds" / "manifest.parquet").exists()
    assert shard_versions(url)  # the runs that succeeded left their shards
    assert main(["pack", str(tmp_path / "images"), url, "-q"]) == 0
    assert main(["gc", url]) == 0
    assert len(shard_versions(url)) == 1 and len(list(ShardedDataset(url))) == 39


def test_parallel_pack_of_an_encrypted_store(tmp_path: Path) -> None:
    from dcstore.crypto import Keyring, write_key_file

    write_key_file(tmp_path / "kek.json", Keyring.generate())
    keys = f"file://{tmp_path / 'kek.json'}"
    make_imagefolder(tmp_path / "images", ["a", "b"], 15)
    url = f"file://{tmp_path / 'enc'}"
    plan = plan_source(tmp_path / "images").shuffled(0)
    store = open_store(url, keys=keys)  # workers unpickle the key source, not key material
    manifest = pack_plan(store, plan, shard_size=4096, workers=2, min_bytes_per_worker=0)
    assert len(manifest.shards) > 2 and all(s.key_id for s in manifest.shards)
    got = [s["__key__"] for s in ShardedDataset(url, keys=keys)]
    assert got == [spec.key for spec in plan.samples]


def test_version_opens_the_current_or_a_kept_version_and_names_what_is_kept(
    tmp_path: Path,
) -> None:
    url = f"file://{tmp_path / 'ds'}"
    versions = []
    for n in (5, 7, 9):  # three packs, two kept
        with ShardWriter(url, shard_size=2000, keep=2) as writer:
            for i in range(n):
                writer.write({"__key__": f"{i:03d}", "txt": str(n)})
        versions.append(writer.version)
    assert len(list(ShardedDataset(url, version=versions[2]))) == 9  # the current one
    earlier = ShardedDataset(url, version=versions[1], shuffle=True)  # its archive
    assert earlier.manifest.version == versions[1]
    assert {s["txt"] for s in earlier} == {b"7"} and len(earlier) == 7
    mapped = ShardedMapDataset(url, version=versions[1])
    assert len(mapped) == 7 and mapped[6]["txt"] == b"7"
    gone = f"no dataset version '{versions[0]}' here .*kept: {versions[1]}"
    with pytest.raises(NotFoundError, match=gone):
        ShardedDataset(url, version=versions[0])
    for bad in ("../manifest", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(ConfigError, match="not a dataset version name"):
            ShardedDataset(url, version=bad)


def test_a_reader_of_a_dropped_version_is_told_why_its_shards_are_gone(tmp_path: Path) -> None:
    """It said only "cannot read 'shards/<v>/000000.tar': no such object"."""
    url = f"file://{tmp_path / 'ds'}"
    for n in (3, 4, 5):
        with ShardWriter(url, shard_size=2000, keep=2) as writer:
            for i in range(n):
                writer.write({"__key__": f"{i:03d}", "txt": str(n)})
        if n == 3:
            reader = ShardedDataset(url)  # opened on the first version, read after two packs
    with pytest.raises(
        NotFoundError, match="the dataset version that lists this shard was dropped"
    ):
        list(reader)
    assert len(list(ShardedDataset(url))) == 5


def test_versions_lists_what_is_kept_and_names_a_missing_archive(tmp_path: Path, capsys) -> None:
    url = f"file://{tmp_path / 'ds'}"
    for n in (3, 4):
        with ShardWriter(url, shard_size=2000) as writer:
            for i in range(n):
                writer.write({"__key__": f"{i:03d}", "txt": str(n)})
        if n == 3:
            first = writer.version
    with open_backend(url) as store:
        store.delete(archive_key(first))  # removed by hand
    capsys.readouterr()
    assert main(["versions", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    current, kept = report["versions"]
    assert current["current"] and current["samples"] == 4 and not current["missing"]
    assert kept == {"dataset": "samples", "version": first, "current": False,
                    "key": archive_key(first), "missing": True}  # fmt: skip
    assert main(["versions", url]) == 0
    assert f"archive {archive_key(first)} missing" in capsys.readouterr().out
    with pytest.raises(NotFoundError, match="no dataset version"):
        ShardedDataset(url, version=first)
    assert main(["versions", f"file://{tmp_path / 'none'}"]) == 3
    assert "no dataset here" in capsys.readouterr().err


def test_a_resume_state_made_before_a_new_pack_resumes_on_its_version(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'ds'}"
    for n in (40, 30):
        with ShardWriter(url, shard_size=1500) as writer:
            for i in range(n):
                writer.write({"__key__": f"{i:03d}", "txt": str(n)})
        if n == 40:  # a job reads part of an epoch and saves its state
            first = ShardedDataset(url, shuffle=True, seed=2)
            read = first.__iter__()
            before = [next(read)["__index__"] for _ in range(15)]
            state = first.state_dict()
    with pytest.raises(ConfigError, match="resume state is for dataset version"):
        ShardedDataset(url, shuffle=True, seed=2).load_state_dict(state)
    resumed = ShardedDataset(url, shuffle=True, seed=2, version=state["manifest_version"])
    resumed.load_state_dict(state)
    after = [s["__index__"] for s in resumed]
    assert sorted(before + after) == list(range(40))
