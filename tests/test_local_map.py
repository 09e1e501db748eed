"""Local files are read as views of the page cache (``Backend.map_range``), ciphertext too."""

from __future__ import annotations

import mmap
import random
from pathlib import Path

import pytest

from dcstore import ShardedDataset, ShardWriter
from dcstore.backends.local import LocalBackend
from dcstore.crypto import EncryptedBackend, Keyring
from dcstore.errors import IntegrityError, InvalidRangeError, NotFoundError, VersionChangedError
from dcstore.store import open_store

DATA = random.Random(7).randbytes(3 * mmap.ALLOCATIONGRANULARITY + 123)


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(str(tmp_path / "store"))
    backend.put("dir/obj", DATA)
    return backend


def test_views_equal_ranged_reads_at_any_alignment(store: LocalBackend) -> None:
    rng = random.Random(1)
    cases = [(0, len(DATA)), (len(DATA), len(DATA)), (4095, 4097), (4096, 8192)]
    cases += [tuple(sorted(rng.sample(range(len(DATA) + 1), 2))) for _ in range(50)]
    for start, end in cases:
        view = store.map_range("dir/obj", start, end)
        assert view is not None and view.readonly
        assert bytes(view) == store.get_range("dir/obj", start, end) == DATA[start:end]


def test_bad_ranges_and_missing_objects_are_named(store: LocalBackend) -> None:
    with pytest.raises(InvalidRangeError, match="dir/obj"):
        store.map_range("dir/obj", 0, len(DATA) + 1)
    with pytest.raises(NotFoundError, match="missing"):
        store.map_range("missing", 0, 1)
    with pytest.raises(NotFoundError, match="prefix"):
        store.map_range("dir", 0, 1)


@pytest.mark.parametrize("url", ["local", "memory://rangeorder"])
def test_a_range_that_ends_before_it_starts_says_so(tmp_path: Path, url: str) -> None:
    """Newcomer: get_range(k, 10, 5) said "range [10, 5) is outside object", as if the
    object were too small; a true out-of-bounds range still says that."""
    backend = open_store(str(tmp_path / "s") if url == "local" else url)
    backend.put("k", DATA)
    for read in (backend.get_range, backend.map_range) if url == "local" else (backend.get_range,):
        with pytest.raises(InvalidRangeError, match=r"^range \[10, 5\) of object 'k' ends "
                           r"before it starts: give an end >= the start \(10\)$"):  # fmt: skip
            read("k", 10, 5)
        with pytest.raises(InvalidRangeError, match=r"^range \[0, \d+\) is outside object 'k'"):
            read("k", 0, len(DATA) + 1)


def test_a_view_owns_its_mapping_past_overwrite_and_delete(store: LocalBackend) -> None:
    view = store.map_range("dir/obj", 100, 200)
    store.put("dir/obj", b"new")  # a rename: the view stays on the old file
    assert bytes(view) == DATA[100:200]
    store.delete("dir/obj")
    part = view[10:20]
    del view
    assert bytes(part) == DATA[110:120]


def test_only_stores_that_pass_bytes_through_map(tmp_path: Path, store: LocalBackend) -> None:
    assert open_store(str(tmp_path / "store")).map_range("dir/obj", 0, 1) is not None
    keys = tmp_path / "k.json"
    from dcstore.crypto import Keyring, write_key_file

    write_key_file(keys, Keyring.generate())
    encrypted = open_store(str(tmp_path / "enc"), keys=str(keys))
    encrypted.put("x", b"secret")
    assert encrypted.map_range("x", 0, 1) is None and encrypted.map_object("x") is None
    cached = open_store(str(tmp_path / "store"), cache="memory://")
    assert cached.map_range("dir/obj", 0, 1) is None and cached.map_object("dir/obj") is None
    assert open_store(str(tmp_path / "store")).map_object("dir/obj") is not None


def test_zero_copy_samples_view_the_mapped_shard(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'ds'}"
    with ShardWriter(url, shard_size=1 << 16) as writer:
        for i in range(40):
            writer.write({"__key__": f"s{i:03d}", "bin": bytes([i]) * (3000 + i)})
    views = list(ShardedDataset(url, zero_copy=True, shuffle=True))
    assert all(isinstance(s["bin"].obj, mmap.mmap) for s in views)
    assert sorted(bytes(s["bin"]) for s in views) == [bytes([i]) * (3000 + i) for i in range(40)]


class _CountingLocal(LocalBackend):
    """A local store that counts how its ciphertext is read."""

    calls: dict[str, int]

    def map_range(self, key, start, end, *, version=None):
        self.calls["map_range"] = self.calls.get("map_range", 0) + 1
        return super().map_range(key, start, end, version=version)

    def get_range(self, key, start, end, *, version=None):
        self.calls["get_range"] = self.calls.get("get_range", 0) + 1
        return super().get_range(key, start, end, version=version)


def test_encrypted_ranges_decrypt_straight_from_the_mapping(tmp_path: Path) -> None:
    inner = _CountingLocal(str(tmp_path / "enc"))
    inner.calls = {}
    store = EncryptedBackend(inner, Keyring.generate(), segment_size=4096)
    plain = random.Random(3).randbytes(5 * 4096 + 77)
    store.put("obj", plain)
    rng = random.Random(4)
    for _ in range(40):
        start, end = sorted(rng.sample(range(len(plain) + 1), 2))
        assert store.get_range("obj", start, end) == plain[start:end]
    assert inner.calls.get("get_range", 0) == 0 and inner.calls["map_range"] >= 40
    # a tampered byte in the mapped ciphertext is still caught
    path = tmp_path / "enc" / "obj"
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        store.get_range("obj", len(plain) - 10, len(plain))


def test_map_object_is_the_whole_version_opened(store: LocalBackend) -> None:
    version = store.head("dir/obj").version
    view = store.map_object("dir/obj", version=version)
    assert view is not None and view.readonly and bytes(view) == DATA
    store.put("dir/obj", b"new")  # a rename: the mapping stays on the file it opened
    assert bytes(view[5:9]) == DATA[5:9]
    with pytest.raises(VersionChangedError, match="dir/obj"):
        store.map_object("dir/obj", version=version)
    store.put("empty", b"")
    assert store.map_object("empty") == memoryview(b"")
    with pytest.raises(NotFoundError, match="missing"):
        store.map_object("missing")


@pytest.mark.parametrize("keys", [False, True])
def test_an_open_reader_stays_on_its_version_when_the_key_is_replaced(
    tmp_path: Path, keys: bool
) -> None:
    """Plaintext readers read the file they opened; encrypted ones mapped each segment
    anew by path and raised VersionChangedError once a new checkpoint landed (or a key
    rotation rewrote the object). Both now decrypt from the file they opened, mapped."""
    store = open_store(str(tmp_path / "store"), keys=Keyring.generate() if keys else None)
    old = random.Random(2).randbytes(9 << 20)  # past a segment and a read block
    store.put("ckpt", old)
    with store.open_read("ckpt") as reader:
        first = reader.read(1 << 20)
        store.put("ckpt", b"new checkpoint")
        assert first + reader.read() == old
        assert bytes(reader.read_range(5, 9)) == old[5:9]
    assert store.get("ckpt") == b"new checkpoint"


def test_a_ranged_read_of_a_file_cut_short_in_place_is_a_version_change(
    store: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An opened file's ranged read returned what a short ``pread`` gave: a file cut short
    in place (not replaced) handed out fewer bytes than asked, silently; and a read the
    kernel answers in parts (Linux: at most ~2 GiB a call) is now read whole."""
    import dcstore.backends.local as local

    with store.open_read("dir/obj") as reader:
        real = local.os.pread
        monkeypatch.setattr(local.os, "pread", lambda fd, n, at: real(fd, min(n, 1000), at))
        assert bytes(reader.read_range(10, 5000)) == DATA[10:5000]  # four short preads
        monkeypatch.undo()
        (store.root / "dir" / "obj").open("r+b").truncate(100)
        with pytest.raises(VersionChangedError, match="changed size while it was read"):
            reader.read_range(50, 5000)
