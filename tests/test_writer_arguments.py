"""``ShardWriter``'s arguments and fields: what a notebook user gets wrong is refused at
once, naming the argument, and what is natural to write (a Path, "64MiB", a numpy label)
is taken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dcstore import ShardedDataset, ShardWriter, open_store
from dcstore.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": "cat"}, "classes must be a list of class names, not one string 'cat'"),
        ({"metadata": {"epoch": 3}}, "metadata must map str to str"),  # failed in close()
        ({"keep": 2.0}, "keep must be a whole number"),  # failed in close(), shards orphaned
        ({"shard_size": "64 pages"}, "bad size '64 pages'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ShardWriter(str(tmp_path / "ds"), **kwargs)
    assert not (tmp_path / "ds").exists()


def test_a_path_a_size_string_and_numpy_labels_are_taken(tmp_path: Path) -> None:
    """A pathlib.Path was "'PosixPath' object has no attribute 'url'", "64KiB" a TypeError,
    and a numpy label "expected bytes, str or a number"."""
    with ShardWriter(tmp_path / "ds", shard_size=np.int64(64 << 10)):
        pass
    with ShardWriter(tmp_path / "ds", shard_size="64KiB") as writer:
        for i, label in enumerate(np.array([3, 1, 2])):
            writer.write({"__key__": f"s{i}", "cls": label, "score": np.float32(0.5)})
    got = [(s["cls"], s["score"]) for s in ShardedDataset(tmp_path / "ds")]
    assert got == [(b"3", b"0.5"), (b"1", b"0.5"), (b"2", b"0.5")]
    assert open_store(tmp_path / "ds").head("manifest.parquet").size > 0


@pytest.mark.parametrize(
    ("value", "message"),
    [(1.5, "got 1.5"), (np.float32(1), "got np.float32"), (True, "got True"),
     (None, "got None"),
     (2**63, f"label {2**63} is outside int64"), (np.uint64(2**63), "is outside int64")],
)  # fmt: skip
def test_a_class_label_that_readers_cannot_decode_is_refused(
    tmp_path: Path, value: object, message: str
) -> None:
    """Newcomer: "cls": 1.5 was written, then decode() failed ("invalid literal for int()
    with base 10: '1.5'"); 2**63 failed in collate ("Overflow when unpacking long long")."""
    with ShardWriter(tmp_path / "ds") as writer:
        for field in ("cls", "label.cls"):
            with pytest.raises(ConfigError, match=rf"^sample 's' field '{field}': .*{message}"):
                writer.write({"__key__": "s", field: value})
        for i, good in enumerate([3, np.int64(-2), "4", b"5", 2**63 - 1]):
            writer.write({"__key__": f"s{i}", "cls": good, "score": 1.5})
    got = [s["cls"] for s in ShardedDataset(tmp_path / "ds").decode()]
    assert got == [3, -2, 4, 5, 2**63 - 1]


def test_a_class_label_of_text_passes_as_tar_shards_may_hold_it(tmp_path: Path) -> None:
    """Existing tar shards packed as they are may label with names: not refused."""
    with ShardWriter(tmp_path / "ds") as writer:
        writer.write({"__key__": "a", "cls": b"dog"})
        writer.write({"__key__": "b", "cls": "1.5"})
        writer.write({"__key__": "c", "cls": b"18446744073709551615"})  # a uint64 id
    got = [bytes(s["cls"]) for s in ShardedDataset(tmp_path / "ds")]
    assert got == [b"dog", b"1.5", b"18446744073709551615"]


def test_upper_case_fields_are_refused_as_readers_would_lower_them(tmp_path: Path) -> None:
    """{"JPG": a, "jpg": b} read back as {"jpg": b}; "Label" as "label"."""
    with ShardWriter(str(tmp_path / "ds")) as writer:
        for fields in ({"JPG": b"a", "jpg": b"b"}, {"Label": b"7"}):
            with pytest.raises(ConfigError, match="would be read back as"):
                writer.write({"__key__": "s0", **fields})
        with pytest.raises(ConfigError, match="bad field name 3"):
            writer.write({"__key__": "s0", 3: b"x"})  # type: ignore[dict-item]
        writer.write({"__key__": "s0", "jpg": b"b"})
    assert [s["jpg"] for s in ShardedDataset(str(tmp_path / "ds"))] == [b"b"]


def test_close_inside_the_with_block_commits_once(tmp_path: Path) -> None:
    """The with block's exit then raised "ShardWriter is closed" after a good commit."""
    with ShardWriter(str(tmp_path / "ds")) as writer:
        writer.write({"__key__": "s0", "txt": "x"})
        manifest = writer.close()
    assert writer.close() is manifest
    assert len(list(ShardedDataset(str(tmp_path / "ds")))) == 1


def test_loader_arguments_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    """batch_size=16 / 3 made the whole epoch one batch (and none with partial=False),
    batched(True) batches of one; shuffle="false" shuffled."""
    from dcstore import RingLoader

    with ShardWriter(str(tmp_path / "ds")) as writer:
        writer.write({"__key__": "s0", "txt": "x"})
    with pytest.raises(ConfigError, match="batch_size must be a whole number"):
        ShardedDataset(str(tmp_path / "ds")).batched(16 / 3)
    with pytest.raises(ConfigError, match="batch_size must be a whole number"):
        RingLoader(ShardedDataset(str(tmp_path / "ds")), batch_size=16 / 3)
    with pytest.raises(ConfigError, match="batch_size must be a whole number >= 1, got True"):
        ShardedDataset(str(tmp_path / "ds")).batched(True)  # made batches of one
    for flag in ("shuffle", "drop_last"):
        with pytest.raises(ConfigError, match=f"{flag} must be True or False, got 'false'"):
            ShardedDataset(str(tmp_path / "ds"), **{flag: "false"})


def test_writers_loaders_and_the_filesystem_say_what_they_are(tmp_path: Path) -> None:
    """They printed <... object at 0x...>."""
    from dcstore import DeviceLoader, RingLoader, ShardedMapDataset
    from dcstore.fsspec import DcstoreFileSystem
    from dcstore.tokens import TokenWriter

    url = str(tmp_path / "ds")
    with ShardWriter(url) as writer:
        writer.write({"__key__": "s0", "txt": "x"})
    assert repr(writer).startswith(f"ShardWriter('file://{url}', version=") and "samples=1" in repr(
        writer
    )
    ring = RingLoader(ShardedDataset(url), batch_size=2)
    assert repr(ring).startswith("RingLoader(ShardedDataset(") and "batch_size=2" in repr(ring)
    assert repr(DeviceLoader(ring, "cpu")).startswith("DeviceLoader(RingLoader(")
    assert repr(ShardedMapDataset(url)).startswith("ShardedMapDataset(")
    assert repr(DcstoreFileSystem(url)).startswith("DcstoreFileSystem(")
    with TokenWriter(str(tmp_path / "tok"), vocab_size=10) as tokens:
        assert repr(tokens).startswith("TokenWriter(") and "open" in repr(tokens)
        tokens.write([1, 2])
