"""``dcstore://`` through fsspec, read and written by pandas and pyarrow as users do: on a
local store and on the full stack (encrypted, Redis tier) over every real server."""

from __future__ import annotations

import contextlib
import datetime
import gc
import gzip
import io
import os
import re
import shlex
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import duckdb
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from cassandra_server import cassandra_hosts, cassandra_url  # noqa: F401 - fixtures
from ferretdb_server import mongodb_url  # noqa: F401 - fixture
from full_stack import cache_url, stack_keys  # noqa: F401 - fixture
from hdfs_server import hdfs_base, hdfs_url  # noqa: F401 - fixtures
from webdataset.gopen import gopen_schemes

from dcstore.backends.base import ObjectMeta
from dcstore.backends.local import LocalBackend
from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import Keyring, write_key_file
from dcstore.crypto.format import MAX_HEADER_SIZE
from dcstore.errors import (
    ConfigError,
    IntegrityError,
    InvalidKeyError,
    KeyAccessError,
    NotFoundError,
    StorageFullError,
    VersionChangedError,
)
from dcstore.fsspec import DcstoreFileSystem
from dcstore.localfile import write_file_atomically
from dcstore.ops import COPY_CHUNK_BYTES
from dcstore.store import open_store


def table(rows: int = 50_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"id": np.arange(rows), "x": rng.random(rows), "tag": rng.integers(0, 9, rows)}
    )


@pytest.fixture
def keys(tmp_path: Path) -> str:
    write_key_file(tmp_path / "kek.json", Keyring.generate())
    return str(tmp_path / "kek.json")


class CountingLocal(LocalBackend):
    """A local store that counts the bytes read from it."""

    read_bytes = 0

    def get_range(self, key, start, end, *, version=None):
        type(self).read_bytes += end - start
        return super().get_range(key, start, end, version=version)

    def map_range(self, key, start, end, *, version=None):
        return None  # every read through get_range, so it is counted

    def map_object(self, key, *, version=None):
        return None


def test_pandas_round_trip_is_encrypted_at_rest(tmp_path: Path, keys: str) -> None:
    opts = {"store": str(tmp_path / "store"), "keys": keys}
    df = table()
    df.to_parquet("dcstore://t/sales.parquet", storage_options=opts)
    assert pd.read_parquet("dcstore://t/sales.parquet", storage_options=opts).equals(df)
    raw = (tmp_path / "store" / "t" / "sales.parquet").read_bytes()
    assert raw[:4] == b"DCSE" and b"PAR1" not in raw  # ciphertext only
    fs = fsspec.filesystem("dcstore", **opts)
    assert fs.ls("", detail=False) == ["t"] and fs.ls("t", detail=False) == ["t/sales.parquet"]
    assert fs.info("t")["type"] == "directory" and fs.isfile("t/sales.parquet")


@pytest.mark.parametrize("mapped", [True, False])
def test_an_encrypted_object_read_without_keys_is_refused(
    tmp_path: Path, keys: str, mapped: bool
) -> None:
    """Forgetting ``keys`` names the problem instead of handing ciphertext to pandas
    (whose own error would be 'Parquet magic bytes not found'), whatever is read."""
    store = str(tmp_path / "store")
    table(100).to_parquet("dcstore://t.parquet", storage_options={"store": store, "keys": keys})
    fs = DcstoreFileSystem(store if mapped else CountingLocal(store))
    with pytest.raises(KeyAccessError, match=r"t\.parquet is encrypted: pass keys="):
        pd.read_parquet("t.parquet", filesystem=fs)
    for read in (
        lambda: fs.cat_file("t.parquet"),
        lambda: fs.cat_file("t.parquet", start=-8),
        lambda: fs.open("t.parquet").read(),
    ):
        with pytest.raises(KeyAccessError):
            read()
    fs.pipe_file("plain.bin", b"PAR1 not encrypted")  # plaintext reads as before
    assert fs.cat_file("plain.bin", start=5) == b"not encrypted"
    assert fs.open("plain.bin").read() == b"PAR1 not encrypted"


def test_a_keyless_read_from_offset_zero_is_its_own_check(tmp_path: Path) -> None:
    """The ciphertext check reads the header only when the read itself does not start at
    0: a read from the start costs its own bytes, one from the middle the header more."""
    fs = DcstoreFileSystem(CountingLocal(str(tmp_path / "store")))
    fs.pipe_file("plain.bin", bytes(range(256)) * 1000)
    CountingLocal.read_bytes = 0
    assert fs.cat_file("plain.bin", start=0, end=5_000) == (bytes(range(256)) * 20)[:5_000]
    assert CountingLocal.read_bytes == 5_000
    with fs.open("plain.bin", block_size=8_192, cache_type="none") as f:
        CountingLocal.read_bytes = 0
        assert len(f.read(8_192)) == 8_192
        assert CountingLocal.read_bytes == 8_192
    fresh = DcstoreFileSystem(CountingLocal(str(tmp_path / "store")))
    CountingLocal.read_bytes = 0
    fresh.cat_file("plain.bin", start=100_000, end=100_010)
    assert 10 < CountingLocal.read_bytes <= 10 + MAX_HEADER_SIZE


def test_a_version_found_plaintext_is_not_checked_again(tmp_path: Path) -> None:
    """pyarrow opens a file twice per read_table: the second open of a version already
    found plaintext skips the header read; a new version is checked again."""
    fs = DcstoreFileSystem(CountingLocal(str(tmp_path / "store")))
    fs.pipe_file("plain.bin", bytes(range(256)) * 1000)
    reads = []
    for _ in range(3):
        CountingLocal.read_bytes = 0
        assert fs.cat_file("plain.bin", start=100_000, end=100_010) == bytes(range(160, 170))
        reads.append(CountingLocal.read_bytes)
    assert reads[0] > 10 and reads[1:] == [10, 10]
    fs.pipe_file("plain.bin", bytes(range(256)) * 999)
    CountingLocal.read_bytes = 0
    fs.cat_file("plain.bin", start=100_000, end=100_010)
    assert CountingLocal.read_bytes > 10
    write_key_file(tmp_path / "k.json", Keyring.generate())
    DcstoreFileSystem(str(tmp_path / "store"), keys=str(tmp_path / "k.json")).pipe_file(
        "plain.bin", bytes(300_000)
    )
    with pytest.raises(KeyAccessError):  # replaced by ciphertext: refused, not skipped
        fs.cat_file("plain.bin", start=100_000, end=100_010)


def test_pyarrow_reads_only_the_ranges_it_needs(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(CountingLocal(str(tmp_path / "store")), block_size=64 << 10)
    wide = pa.Table.from_pandas(pd.DataFrame({f"c{i}": np.arange(100_000) * i for i in range(20)}))
    with fs.open("wide.parquet", "wb") as f:
        pq.write_table(wide, f, row_group_size=25_000)
    size = fs.size("wide.parquet")
    CountingLocal.read_bytes = 0
    got = pq.read_table("wide.parquet", filesystem=fs, columns=["c3"])
    assert got.column("c3").to_pylist()[:3] == [0, 3, 6]
    assert 0 < CountingLocal.read_bytes < size / 3  # one column of 20, not the file
    dataset = pds.dataset("", filesystem=fs, format="parquet")
    assert dataset.to_table(filter=pds.field("c1") < 10).num_rows == 10


def test_a_failed_write_leaves_the_old_object(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(str(tmp_path / "store"), block_size=1024)
    fs.pipe_file("obj", b"old")
    with pytest.raises(RuntimeError), fs.open("obj", "wb") as f:
        f.write(b"new" * 10_000)  # past several blocks: spooled, not committed
        raise RuntimeError("writer died")
    assert fs.cat("obj") == b"old"
    with fs.open("obj", "wb") as f:
        f.write(b"new" * 10_000)
    assert fs.cat("obj") == b"new" * 10_000
    assert list((tmp_path / "store").iterdir()) == [tmp_path / "store" / "obj"]  # no leftovers


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("cannot format this row")


def _write_failing(how: str, fs: DcstoreFileSystem, opts: dict[str, Any]) -> None:
    if how == "fsspec.open":
        with fsspec.open("dcstore://obj", "wb", **opts) as f:
            f.write(b"new")
            raise RuntimeError("writer died")
    elif how == "text mode":
        with fs.open("obj", "w") as f:
            f.write("new")
            raise RuntimeError("writer died")
    elif how == "pandas":  # to_csv closes its handle in a with block of its own
        frame = pd.DataFrame({"a": [str(i) for i in range(5000)] + [Unprintable()]})
        frame.to_csv("dcstore://obj", storage_options=opts)
    elif how == "pandas, missing codec":  # get_handle closes the file in its `finally`
        frame = pd.DataFrame({"a": range(10)})
        frame.to_csv("dcstore://obj", compression="zstd", storage_options=opts)
    elif how == "ArrowWriter":  # Hugging Face's, as save_to_disk uses it (review)
        from datasets.arrow_writer import ArrowWriter

        with ArrowWriter(path="dcstore://obj", storage_options=opts) as w:
            w.write_batch({"x": list(range(1000))})
            raise RuntimeError("writer died")
    else:  # pyarrow's ParquetWriter writes its footer and closes the file as it fails
        with pq.ParquetWriter("obj", pa.schema([("x", pa.int64())]), filesystem=fs) as w:
            w.write_table(pa.table({"x": range(1000)}))
            raise RuntimeError("writer died")


@pytest.mark.parametrize(
    "how",
    ["fsspec.open", "text mode", "pandas", "pandas, missing codec", "ParquetWriter", "ArrowWriter"],
)
def test_a_writer_closing_the_file_as_it_fails_leaves_the_old_object(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec's OpenFile, a TextIOWrapper and pandas close the file on their way out of a
    failure, and close committed: the part written replaced the old object. (pandas with
    a codec it lacks, zstd without zstandard, replaced it with an empty one.)"""
    opts = {"store": str(tmp_path / "store")}
    fs = DcstoreFileSystem(opts["store"])
    fs.pipe_file("obj", b"old")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # not installed: ImportError
    with pytest.raises((RuntimeError, ValueError, ImportError)):
        _write_failing(how, fs, opts)
    assert fs.cat("obj") == b"old"
    assert list((tmp_path / "store").iterdir()) == [tmp_path / "store" / "obj"]  # no leftovers


def test_a_file_written_while_handling_an_earlier_error_is_committed(tmp_path: Path) -> None:
    """An emergency checkpoint written in an `except` block is not a failed write."""
    opts = {"store": str(tmp_path / "store")}
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        with fsspec.open("dcstore://ckpt", "wb", **opts) as f:
            f.write(b"state")
    assert DcstoreFileSystem(opts["store"]).cat("ckpt") == b"state"


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_a_file_closed_on_purpose_in_an_except_block_is_committed(
    tmp_path: Path, mode: str
) -> None:
    """Review of the failing-close rule: a log written and closed inside a handler for an
    unrelated error was discarded, close() saying nothing."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    files = [fs.open(name, mode) for name in ("log", "with", "closing")]
    try:
        raise ValueError("something else failed")
    except ValueError:
        for f in files:
            f.write(b"logged" if mode == "wb" else "logged")
        files[0].close()
        with files[1]:  # a with that ends normally here commits too
            pass
        with contextlib.closing(files[2]):
            pass
    names = ["log", "with", "closing"]
    assert fs.cat(names) == dict.fromkeys(names, b"logged")


class RunReport:
    """A caller's own context manager: on the way out of a failure it writes a report
    and closes the file on purpose."""

    def __init__(self, fs: DcstoreFileSystem) -> None:
        self.f = fs.open("report", "wb")

    def __enter__(self) -> RunReport:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.f.write(f"FAILED: {exc}".encode())
        self.f.close()


@contextlib.contextmanager
def run_report(fs: DcstoreFileSystem) -> Any:
    f = fs.open("report", "wb")
    try:
        yield
    except RuntimeError as exc:
        f.write(f"FAILED: {exc}".encode())
        f.close()
        raise


@pytest.mark.parametrize("how", [RunReport, run_report])
def test_a_close_in_the_callers_own_exit_commits(tmp_path: Path, how: Any) -> None:
    """Outside pass: a report written and closed in the caller's own ``__exit__`` or
    ``@contextmanager`` on the way out of a failure was discarded without a word (the
    rule meant for pandas' and pyarrow's writers took it for a failed write)."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    with pytest.raises(RuntimeError), how(fs):
        raise RuntimeError("training diverged")
    assert fs.cat("report") == b"FAILED: training diverged"
    with pytest.raises(RuntimeError), contextlib.closing(fs.open("closing", "wb")) as f:
        f.write(b"part")  # a library's context manager closing it as it fails: discarded
        raise RuntimeError("writer died")
    assert not fs.exists("closing")


def test_a_text_file_never_closed_commits_nothing(tmp_path: Path) -> None:
    """As a binary one: the text wrapper's finalizer closed, so committed, the part."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    f = fs.open("export.csv", "w")
    f.write("row 0\n")
    del f
    gc.collect()
    assert not fs.exists("export.csv")


@pytest.mark.parametrize("mode", ["wb", "w"])
@pytest.mark.parametrize("compression", ["gzip", "infer"])
def test_a_compressed_file_commits_when_closed_and_only_then(
    tmp_path: Path, mode: str, compression: str
) -> None:
    """Outside pass: ``fs.open("t.csv.gz", "wb", compression="gzip")`` never committed
    (fsspec's compressors leave the file under them open), not even on ``close()``."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    data = "row,1\n" * 100_000
    put = data.encode() if mode == "wb" else data
    with fs.open("t.csv.gz", mode, compression=compression) as f:
        f.write(put)
    f = fs.open("u.csv.gz", mode, compression=compression)
    f.write(put)
    f.close()
    for name in ("t.csv.gz", "u.csv.gz"):
        assert gzip.decompress(fs.cat(name)) == data.encode()
        with fs.open(name, "rt", compression="infer") as read:
            assert read.read() == data
    with pytest.raises(RuntimeError), fs.open("t.csv.gz", mode, compression=compression) as f:
        f.write(put[:10])
        raise RuntimeError("writer died")
    f = fs.open("never.csv.gz", mode, compression=compression)
    f.write(put)
    del f
    gc.collect()
    with fs.transaction:  # one still open at the end: its compressor's end written first
        f = fs.open("in-transaction.csv.gz", mode, compression=compression)
        f.write(put)
        dropped = fs.open("dropped.csv.gz", mode, compression=compression)
        dropped.write(put)
        del dropped  # review: the transaction holds it, as it holds a binary file
        gc.collect()
    assert gzip.decompress(fs.cat("t.csv.gz")) == data.encode()  # the old object
    assert gzip.decompress(fs.cat("in-transaction.csv.gz")) == data.encode() and f.closed
    assert gzip.decompress(fs.cat("dropped.csv.gz")) == data.encode()
    assert sorted(os.listdir(tmp_path / "store")) == [
        "dropped.csv.gz",
        "in-transaction.csv.gz",
        "t.csv.gz",
        "u.csv.gz",
    ]


@pytest.mark.parametrize("compression", ["zip", "gzip", "bz2", "xz"])
def test_a_failed_compressed_write_is_dropped_quietly(
    tmp_path: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a zip writer failing in its ``with`` was discarded, then its ZipFile wrote
    its end record into the closed file from ``__del__`` ("Exception ignored ...")."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    with pytest.raises(KeyError), fs.open("t.bin", "wb", compression=compression) as f:
        f.write(b"abc" * 100_000)
        raise KeyError("the caller's error")
    del f
    gc.collect()
    assert unraisable == [] and not fs.exists("t.bin")


class ClosingCompressor(io.RawIOBase):
    """As zstandard's ``stream_writer`` (``closefd=True``): its close writes its end and
    closes the file under it."""

    def __init__(self, inner: Any, mode: str = "wb") -> None:
        self.inner = inner

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return int(self.inner.write(bytes(data)))

    def close(self) -> None:
        if not self.closed:
            self.inner.write(b"<end>")
            super().close()
            self.inner.close()


def test_a_compressor_that_closes_its_file_commits_only_on_close(tmp_path: Path) -> None:
    """Review: discarding closed such a compressor first, whose close committed the file
    (a writer collected unclosed, or ``discard()``, left half an object)."""
    from fsspec.compression import compr, register_compression

    register_compression("closing-test", ClosingCompressor, [], force=True)
    try:
        fs = DcstoreFileSystem(str(tmp_path / "store"))
        w = fs.open("dropped", "wb", compression="closing-test")
        w.write(b"half")
        w.discard()
        w = fs.open("collected", "wb", compression="closing-test")
        w.write(b"half")
        del w
        gc.collect()
        with fs.open("kept", "wb", compression="closing-test") as w:
            w.write(b"whole")
        assert fs.ls("", detail=False) == ["kept"] and fs.cat("kept") == b"whole<end>"
    finally:
        compr.pop("closing-test", None)


def test_a_compressor_failing_to_close_drops_the_file_at_once(tmp_path: Path) -> None:
    """Review: a compressor whose close raised left the file open, its upload pending,
    until the garbage collector dropped it."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    f = fs.open("t.gz", "wb", compression="gzip")
    f.write(os.urandom(6 << 20))  # more than a block, compressed: an upload is under way

    def failing_close() -> None:
        raise OSError("the compressor failed")

    f._stream.close = failing_close
    with pytest.raises(OSError, match="the compressor failed"):
        f.close()
    assert f._file.closed and not fs.exists("t.gz")
    assert not os.listdir(tmp_path / "store")  # its temporary file is gone too


def test_a_transaction_commits_at_its_end_or_not_at_all(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    with pytest.raises(RuntimeError), fs.transaction:
        fs.pipe_file("a", b"1")
        with fs.open("b", "wb") as f:
            f.write(b"2")
        assert not fs.exists("a") and not fs.exists("b")  # closed, not yet committed
        raise RuntimeError("the transaction fails")
    assert fs.find("") == []
    fs.pipe_file("a", b"1")
    with fs.transaction:
        for name in ("b", "c"):
            with fs.open(name, "wb") as f:
                f.write(name.encode())
        assert fs.find("") == ["a"]
    assert fs.cat(["b", "c"]) == {"b": b"b", "c": b"c"}
    with fs.transaction:  # a file still open at the end is closed, then committed whole
        open_file = fs.open("d", "wb", block_size=1 << 20)
        open_file.write(b"D" * ((3 << 20) + 5))
        open_text = fs.open("t", "w")  # its wrapper's text flushed first (was: b"")
        open_text.write("text")
    assert fs.cat("d") == b"D" * ((3 << 20) + 5) and open_file.closed
    assert fs.cat("t") == b"text"


def test_an_open_file_reads_one_version(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(str(tmp_path / "store"), block_size=1024)
    fs.pipe_file("obj", bytes(range(256)) * 64)
    with fs.open("obj", "rb", cache_type="none") as f:
        assert f.read(10) == bytes(range(10))
        fs.pipe_file("obj", b"\xff" * 16384)  # replaced while open
        with pytest.raises(VersionChangedError, match="obj"):
            f.read(10)
    assert fs.cat_file("obj", 0, 4) == b"\xff" * 4
    assert fs.cat_file("obj", -3) == b"\xff" * 3


class MappingLocal(LocalBackend):
    """A local store that counts how it is mapped."""

    calls: dict[str, int]

    def map_object(self, key, *, version=None):
        self.calls["map_object"] = self.calls.get("map_object", 0) + 1
        return super().map_object(key, version=version)

    def map_range(self, key, start, end, *, version=None):
        raise AssertionError("a dcstore:// file maps its object once, not each range")

    def get_range(self, key, start, end, *, version=None):
        raise AssertionError("a local plaintext file reads its mapping")


def test_a_local_file_maps_its_object_once(tmp_path: Path) -> None:
    store = MappingLocal(str(tmp_path / "store"))
    store.calls = {}
    data = np.random.default_rng(2).bytes(300_000)
    store.put("obj", data)
    fs = DcstoreFileSystem(store)
    with fs.open("obj") as f:
        for start in (299_000, 5, 150_000, 0):
            f.seek(start)
            assert bytes(f.read_buffer(777)) == data[start : start + 777]
        assert store.calls == {"map_object": 1}
        store.put("obj", b"new")  # replaced while open: the next fetch says so
        f.seek(1000)
        with pytest.raises(VersionChangedError, match="obj"):
            f.read(10)


def test_read_returns_bytes_and_read_buffer_a_view(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(str(tmp_path / "store"))  # local plaintext: mapped, no copy
    fs.pipe_file("lines", b"first\nsecond\n" * 1000)
    with fs.open("lines") as f:
        assert type(f.read(3)) is bytes and f.readline() == b"st\n"
        assert f.readline() == b"second\n"
        view = f.read_buffer(6)
        assert isinstance(view, memoryview) and bytes(view) == b"first\n"


def encrypted_counting(tmp_path: Path, keys: str, segment: int) -> DcstoreFileSystem:
    store = open_store(CountingLocal(str(tmp_path / "store")), keys=keys, segment_size=segment)
    return DcstoreFileSystem(store)


def test_encrypted_reads_fetch_the_segments_they_touch_once(tmp_path: Path, keys: str) -> None:
    fs = encrypted_counting(tmp_path, keys, 4096)
    data = np.random.default_rng(1).bytes(100_000)
    fs.pipe_file("obj", data)
    with fs.open("obj") as f:
        assert f.cache.alignment == 4096
        CountingLocal.read_bytes = 0
        f.seek(5000)
        assert f.read(1000) == data[5000:6000]  # one segment: [4096, 8192)
        fetched = CountingLocal.read_bytes
        assert 4096 <= fetched < 2 * 4096
        f.seek(6000)
        assert f.read(2000) == data[6000:8000]  # the same segment, held: no fetch
        assert f.read(20_000) == data[8000:28_000]  # the next segments, one ranged get
        assert f.cache.miss_count == 2 and f.cache.total_requested_bytes == 28_672 - 4096
        assert CountingLocal.read_bytes - fetched < 6 * (4096 + 64)
        rng = np.random.default_rng(2)
        for _ in range(300):  # any range, served from held segments and fetches alike
            start = int(rng.integers(0, len(data)))
            end = min(len(data), start + int(rng.choice([1, 50, 5000, 30_000])))
            f.seek(start)
            assert f.read(end - start) == data[start:end]
        assert len(f.cache._held) <= 8


def test_pyarrow_decrypts_less_with_small_segments(tmp_path: Path, keys: str) -> None:
    wide = pa.table({f"c{i}": np.arange(200_000, dtype="float64") * i for i in range(20)})
    fetched = {}
    for segment in (4 << 20, 64 << 10):
        fs = encrypted_counting(tmp_path / str(segment), keys, segment)
        with fs.open("wide.parquet", "wb") as f:
            pq.write_table(wide, f, row_group_size=50_000, compression="none")
        CountingLocal.read_bytes = 0
        got = pq.read_table("wide.parquet", filesystem=fs, columns=["c0", "c7", "c14"])
        assert got.column("c7").to_pylist()[:3] == [0.0, 7.0, 14.0]
        fetched[segment] = CountingLocal.read_bytes
    size = wide.nbytes
    assert fetched[64 << 10] < 0.25 * size < fetched[4 << 20]  # 3 of 20 columns: ~15 %


def test_a_held_segment_is_of_the_version_opened(tmp_path: Path, keys: str) -> None:
    fs = encrypted_counting(tmp_path, keys, 4096)
    fs.pipe_file("obj", b"a" * 50_000)
    with fs.open("obj") as f:
        f.seek(100)
        assert f.read(10) == b"a" * 10
        fs.pipe_file("obj", b"b" * 50_000)  # replaced while open
        assert f.read(10) == b"a" * 10  # held: the version opened
        f.seek(30_000)
        with pytest.raises(VersionChangedError, match="obj"):
            f.read(10)  # a fetch: never the new version's bytes


@pytest.mark.parametrize("size", [65536, "64KiB", "65536"])
def test_segment_size_option_is_used_for_writes_and_reads(
    tmp_path: Path, keys: str, size: int | str
) -> None:
    """As the CLI's --segment-size, a size as people write it ("64KiB" was a TypeError)."""
    opts = {"store": str(tmp_path / "store"), "keys": keys, "segment_size": size}
    df = table()
    df.to_parquet("dcstore://t.parquet", storage_options=opts)
    fs = fsspec.filesystem("dcstore", **opts)
    assert fs.store.read_alignment == 65536
    with fs.open("t.parquet") as f:
        assert f.cache.alignment == 65536
    assert pd.read_parquet("dcstore://t.parquet", storage_options=opts).equals(df)
    with pytest.raises(ConfigError, match="keys"):
        DcstoreFileSystem(str(tmp_path / "store"), segment_size=65536)
    with pytest.raises(ConfigError, match="segment_size: bad size '64 KB please'"):
        DcstoreFileSystem(str(tmp_path / "store"), keys=keys, segment_size="64 KB please")


@pytest.mark.parametrize("typo", ["key", "kyes", "cahce"])
def test_a_misspelt_option_is_refused_not_ignored(tmp_path: Path, keys: str, typo: str) -> None:
    """storage_options={"key": ...} wrote plaintext without a word."""
    opts = {"store": str(tmp_path / "store"), typo: keys}
    with pytest.raises(ConfigError, match=f"unknown option\\(s\\) '{typo}'; known: store, keys"):
        table().to_parquet("dcstore://t/s.parquet", storage_options=opts)
    assert not (tmp_path / "store").exists()
    fs = fsspec.filesystem("dcstore", store=str(tmp_path / "s"), use_listings_cache=False)
    assert fs.ls("", detail=False) == []  # fsspec's own options are still taken


def test_keys_and_cache_apply_to_a_store_given_as_a_backend(tmp_path: Path, keys: str) -> None:
    """DcstoreFileSystem(backend, keys=...) ignored keys= and wrote plaintext."""
    origin = LocalBackend(tmp_path / "store")
    fs = DcstoreFileSystem(origin, keys=keys, cache="memory", skip_instance_cache=True)
    fs.pipe_file("t/x.bin", b"MARKER" * 10)
    assert b"MARKER" not in origin.get("t/x.bin")
    assert fs.cat_file("t/x.bin") == b"MARKER" * 10
    assert DcstoreFileSystem(origin, skip_instance_cache=True).store is origin


def test_paths_are_keys_checked_and_errors_named(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    for bad in (fs.open, fs.cat, fs.ls, lambda p: fs.pipe(p, b"1")):  # all alike
        with pytest.raises(InvalidKeyError, match="'\\.\\.' segment"):  # a ValueError
            bad("a/../../etc/passwd")
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.info("missing")
    with pytest.raises(ConfigError, match="store="):
        fsspec.filesystem("dcstore")
    fs.pipe_file("a/b/c", b"1")
    fs.rm("a/b/c")
    assert not fs.exists("a/b/c") and not fs.exists("a")


def test_an_object_that_is_also_a_prefix_hides_nothing() -> None:
    """Outside pass: on stores that allow both ``logs`` and ``logs/2026.csv`` (Cassandra,
    MongoDB), ``ls`` listed ``logs`` as a file only, so find, du, copy and rm of the
    parent skipped everything under ``logs/``."""
    fs = DcstoreFileSystem(MemoryBackend(f"prefix-{uuid.uuid4().hex}"))
    objects = {"src/logs": b"an object", "src/logs/2026.csv": b"a,b\n", "src/x.csv": b"a\n"}
    fs.pipe(objects)
    assert fs.ls("src", detail=False) == ["src/logs", "src/logs/", "src/x.csv"]
    assert fs.find("src") == sorted(objects)
    assert fs.du("src") == sum(map(len, objects.values()))
    fs.copy("src", "backup", recursive=True)
    assert fs.cat(fs.find("backup")) == {k.replace("src", "backup"): v for k, v in objects.items()}
    fs.rm("src", recursive=True)
    assert fs.find("src") == []


def test_rm_says_what_fsspecs_local_filesystem_says(tmp_path: Path) -> None:
    """A missing path or a directory without recursive=True was deleted silently (nothing)."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    fs.pipe({"d/x": b"1", "d/e/y": b"2", "z": b"3"})
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.rm("d/missing")
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.rm_file("missing")
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        fs.rm("d")
    assert fs.find("") == ["d/e/y", "d/x", "z"]
    fs.rm("d", recursive=True)
    assert fs.find("") == ["z"]
    with pytest.raises(FileNotFoundError):
        fs.rm("d", recursive=True)
    fs.rm(["z"])
    assert fs.find("") == []
    fs.pipe({"d/x": b"1"})
    for root in ("", "/", ["d/x", ""]):  # an unset prefix removed everything, then raised
        with pytest.raises(InvalidKeyError, match="root"):
            fs.rm(root, recursive=True)
    assert fs.find("") == ["d/x"]
    with pytest.raises(FileExistsError, match="exists"):
        fs.pipe_file("d/x", b"2", mode="create")
    assert fs.cat("d/x") == b"1"


@pytest.mark.parametrize("encrypted", [False, True])
def test_copy_and_move(tmp_path: Path, keys: str, encrypted: bool) -> None:
    """fsspec's ``copy``/``mv`` (its ``cp_file``) work on one object and on a prefix;
    an encrypted copy decrypts under its new name; the large object streams."""
    store = str(tmp_path / "store")
    fs = DcstoreFileSystem(store, keys=keys) if encrypted else DcstoreFileSystem(store)
    big = os.urandom(COPY_CHUNK_BYTES + 12_345)  # above the streaming threshold
    fs.pipe_file("src/big.bin", big)
    fs.pipe_file("src/small.txt", b"small")
    fs.copy("src/big.bin", "copy/big.bin")
    assert fs.cat_file("copy/big.bin") == big and fs.cat_file("src/big.bin") == big
    fs.mv("src", "moved", recursive=True)
    assert fs.find("") == ["copy/big.bin", "moved/big.bin", "moved/small.txt"]
    assert fs.cat_file("moved/big.bin") == big and fs.cat_file("moved/small.txt") == b"small"
    if encrypted:
        raw = (tmp_path / "store" / "moved" / "small.txt").read_bytes()
        assert raw[:4] == b"DCSE"
        keyless = DcstoreFileSystem(store)
        with pytest.raises(KeyAccessError, match=r"small\.txt is encrypted"):
            keyless.copy("moved/small.txt", "stolen.txt")  # ciphertext is never copied
        assert not keyless.exists("stolen.txt")
    with pytest.raises(FileNotFoundError):
        fs.copy("nothing/here", "x")


def test_concurrent_readers_of_an_object_being_replaced(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    versions = [bytes([v]) * 300_000 for v in range(20)]
    fs.pipe_file("obj", versions[0])
    seen: list[bytes] = []
    errors: list[BaseException] = []

    def read() -> None:
        for _ in range(30):
            try:
                data = fs.cat("obj")
            except BaseException as exc:
                errors.append(exc)
                return
            seen.append(data)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    for v in versions[1:]:
        fs.pipe_file("obj", v)
    for r in readers:
        r.join()
    assert not errors and seen
    assert all(data in versions for data in seen)  # a whole version, never a mix


class TimelessMemory(MemoryBackend):
    """A store that cannot tell when an object was written."""

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        meta = super().head(key, version=version)
        return ObjectMeta(meta.key, meta.size, meta.version)


def test_modified_is_the_stores_write_time(tmp_path: Path) -> None:
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    fs.pipe_file("obj", b"old")
    first = fs.modified("obj")
    assert first.tzinfo == datetime.timezone.utc
    assert abs(first.timestamp() - time.time()) < 60
    mtime = fs.info("obj")["mtime"]  # seconds, as fsspec's local files
    assert mtime == fs.ls("")[0]["mtime"]
    assert first == datetime.datetime.fromtimestamp(mtime, tz=datetime.timezone.utc)
    fs.pipe_file("obj", b"new")
    assert fs.modified("obj") > first
    with pytest.raises(FileNotFoundError):
        fs.modified("missing")
    timeless = DcstoreFileSystem(TimelessMemory(f"timeless-{uuid.uuid4().hex}"))
    timeless.pipe_file("obj", b"x")
    with pytest.raises(NotImplementedError, match="no modification time for 'obj'"):
        timeless.modified("obj")
    assert "mtime" not in timeless.info("obj")


def duckdb_reads_each_version(opts: dict[str, Any]) -> None:
    """DuckDB reads Parquet and CSV through ``dcstore://`` as written, and after each
    object is replaced, the new rows: its Parquet metadata cache (on here; keyed by path
    and modification time) never serves the replaced file's footer."""
    fs = DcstoreFileSystem(**opts)
    con = duckdb.connect()
    con.execute("SET parquet_metadata_cache = true")
    con.register_filesystem(fs)
    for rows in (100, 2_500, 700):  # a different footer and size each time
        df = pd.DataFrame({"id": np.arange(rows), "v": np.full(rows, rows)})
        with fs.open("duck/t.parquet", "wb") as f:
            df.to_parquet(f, index=False)
        fs.pipe_file("duck/t.csv", df.to_csv(index=False).encode())
        for reader, name in (("read_parquet", "t.parquet"), ("read_csv", "t.csv")):
            sql = f"SELECT count(*), sum(id), min(v), max(v) FROM {reader}('dcstore://duck/{name}')"
            expected = [(rows, rows * (rows - 1) // 2, rows, rows)]
            assert con.execute(sql).fetchall() == expected, reader
    con.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_duckdb_on_a_local_store(tmp_path: Path, keys: str, encrypted: bool) -> None:
    duckdb_reads_each_version(
        {"store": str(tmp_path / "store"), "keys": keys if encrypted else None}
    )
    raw = (tmp_path / "store" / "duck" / "t.parquet").read_bytes()
    assert raw[:4] == (b"DCSE" if encrypted else b"PAR1")


def test_the_benchmark_runs(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "bench" / "fsspec_parquet.py"
    done = subprocess.run(
        [sys.executable, str(script), "--mb", "2", "--reps", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| local plaintext |" in done.stdout and "| local encrypted |" in done.stdout
    assert "| local encrypted 64 KiB |" in done.stdout


# -- the full stack on real servers ----------------------------------------------------------


@pytest.fixture(params=["hdfs", "cassandra", "mongodb"])
def server_store(request: pytest.FixtureRequest) -> str:
    if request.param == "hdfs":
        return str(request.getfixturevalue("hdfs_base"))
    if request.param == "cassandra":
        return f"{request.getfixturevalue('cassandra_url')}/fs{uuid.uuid4().hex[:8]}"
    return f"{request.getfixturevalue('mongodb_url')}?bucket=fs{uuid.uuid4().hex[:10]}"


def test_pandas_and_pyarrow_on_the_full_stack(server_store: str, stack_keys: str) -> None:  # noqa: F811
    opts = {"store": server_store, "keys": stack_keys, "cache": cache_url(uuid.uuid4().hex[:8])}
    df = table(20_000)
    df.to_parquet("dcstore://tables/t.parquet", storage_options=opts, row_group_size=5_000)
    assert pd.read_parquet("dcstore://tables/t.parquet", storage_options=opts).equals(df)
    fs = fsspec.filesystem("dcstore", **opts)
    assert fs.ls("tables", detail=False) == ["tables/t.parquet"]
    got = pq.read_table("tables/t.parquet", filesystem=fs, columns=["tag"])
    assert got.column("tag").to_pylist() == df["tag"].tolist()
    # served again from the Redis tier: the same bytes
    assert pd.read_parquet("dcstore://tables/t.parquet", storage_options=opts).equals(df)


def test_chained_hdfs_url(hdfs_base: str, stack_keys: str) -> None:  # noqa: F811
    url = f"dcstore::{hdfs_base.rstrip('/')}/chained/t.parquet"
    df = table(1_000)
    df.to_parquet(url, storage_options={"keys": stack_keys})
    assert pd.read_parquet(url, storage_options={"keys": stack_keys}).equals(df)
    folder = url.rsplit("/", 1)[0]
    for name in (folder, folder + "/"):  # the folder, with or without its slash
        read = pd.read_parquet(name, storage_options={"keys": stack_keys})
        assert read.equals(df), name  # with the slash it was "an empty path segment"
    with pytest.raises(ConfigError, match="pattern cannot be expanded in the chained form"):
        pd.read_parquet(folder + "/*.parquet", storage_options={"keys": stack_keys})
    portless = "dcstore::hdfs://127.0.0.1/" + url.split("://", 1)[1].split("/", 1)[1]
    with pytest.raises(ConfigError, match="no port given"):  # as open_store("hdfs://host/...")
        pd.read_parquet(portless, storage_options={"keys": stack_keys})


def test_hugging_face_datasets_on_the_full_stack(
    server_store: str,
    stack_keys: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """``datasets.load_dataset`` with ``storage_options``, as its docs show for any fsspec
    filesystem: a glob of encrypted Parquet files, streamed and downloaded, the same rows."""
    opts = {"store": server_store, "keys": stack_keys, "cache": cache_url(uuid.uuid4().hex[:8])}
    df = table(3_000)
    for part, rows in enumerate((df[:1_000], df[1_000:])):
        rows.to_parquet(f"dcstore://hf/part-{part}.parquet", storage_options=opts, index=False)
    files = "dcstore://hf/part-*.parquet"
    streamed = datasets.load_dataset(
        "parquet", data_files=files, storage_options=opts, split="train", streaming=True
    )
    assert [r["id"] for r in streamed] == df["id"].tolist()
    loaded = datasets.load_dataset(
        "parquet",
        data_files=files,
        storage_options=opts,
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert loaded.to_pandas().equals(df.reset_index(drop=True))
    keyless = {"store": server_store}
    with pytest.raises(KeyAccessError, match="is encrypted"):
        next(
            iter(
                datasets.load_dataset(
                    "parquet",
                    data_files=files,
                    storage_options=keyless,
                    split="train",
                    streaming=True,
                )
            )
        )


def test_duckdb_on_the_full_stack(server_store: str, stack_keys: str) -> None:  # noqa: F811
    duckdb_reads_each_version(
        {"store": server_store, "keys": stack_keys, "cache": cache_url(uuid.uuid4().hex[:8])}
    )


def test_webdataset_reads_pipe_and_fsspec_urls(server_store: str, stack_keys: str) -> None:  # noqa: F811
    """webdataset over encrypted shards in a store, both ways its docs open remote data:
    a ``pipe:`` URL running ``dcstore get`` (stdout), and a ``dcstore://`` URL through a
    gopen handler that opens it with fsspec."""
    opts = {"store": server_store, "keys": stack_keys}
    fs = fsspec.filesystem("dcstore", **opts)
    samples = [{"__key__": f"s{i:03d}", "txt": f"sample {i}".encode()} for i in range(40)]
    for shard in range(2):
        with fs.open(f"wds/shard-{shard}.tar", "wb") as f, wds.TarWriter(f) as tar:
            for sample in samples[shard * 20 : shard * 20 + 20]:
                tar.write(sample)
    expected = [(s["__key__"], s["txt"]) for s in samples]

    get = shlex.join([sys.executable, "-m", "dcstore.cli", "get", server_store])
    piped = [f"pipe:{get} wds/shard-{n}.tar --keys {shlex.quote(stack_keys)}" for n in range(2)]
    got = [(s["__key__"], s["txt"]) for s in wds.WebDataset(piped, shardshuffle=False)]
    assert got == expected

    gopen_schemes["dcstore"] = lambda url, mode="rb", bufsize=8192, **kw: fs.open(url, mode)
    try:
        urls = [f"dcstore://wds/shard-{n}.tar" for n in range(2)]
        got = [(s["__key__"], s["txt"]) for s in wds.WebDataset(urls, shardshuffle=False)]
    finally:
        del gopen_schemes["dcstore"]
    assert got == expected


class DamagedMidStream(LocalBackend):
    """While ``damaged``, reads past the first MiB fail, as damage found mid-stream."""

    damaged = True

    def map_object(self, key, *, version=None):
        return None

    def get_range(self, key, start, end, *, version=None):
        if self.damaged and end > 1 << 20:
            raise IntegrityError(f"{key}: damaged segment")
        return super().get_range(key, start, end, version=version)


def _readers(tmp_path: Path, keys: str, failure: str) -> tuple[DcstoreFileSystem, Any]:
    """(a filesystem that wrote the object, one whose read of it fails as ``failure``)."""
    store = str(tmp_path / "store")
    if failure == "damage":
        fs = DcstoreFileSystem(DamagedMidStream(store), block_size=1 << 20)
        return fs, fs
    write_key_file(tmp_path / "kek2.json", Keyring.generate())
    wrong = str(tmp_path / "kek2.json") if failure == "wrong keys" else None
    return DcstoreFileSystem(store, keys=keys), DcstoreFileSystem(store, keys=wrong)


def test_get_file_writes_through_a_link_and_into_a_fifo(tmp_path: Path) -> None:
    """Review: written whole through a temporary file, get_file replaced a symbolic link
    (its target kept the old bytes) and a FIFO (its reader got nothing) with a regular
    file; as root, ``/dev/null`` would have been replaced the same way."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    fs.pipe_file("weights", b"new weights")
    (tmp_path / "model-v3.pt").write_bytes(b"old")
    os.symlink("model-v3.pt", tmp_path / "latest.pt")
    fs.get_file("weights", str(tmp_path / "latest.pt"))
    assert os.path.islink(tmp_path / "latest.pt")
    assert (tmp_path / "model-v3.pt").read_bytes() == b"new weights"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    fs.get_file("weights", str(fifo))
    reader.join(10)
    assert got == [b"new weights"] and fifo.is_fifo()
    read_end, write_end = os.pipe()  # /dev/fd/N to a pipe: a link to no file (review)
    try:
        fs.get_file("weights", f"/dev/fd/{write_end}")
        os.close(write_end)
        assert os.read(read_end, 100) == b"new weights"
    finally:
        os.close(read_end)
        with contextlib.suppress(OSError):
            os.close(write_end)


@pytest.mark.parametrize("failure", ["wrong keys", "no keys", "damage"])
def test_get_file_writes_the_local_file_whole_or_not_at_all(
    tmp_path: Path, keys: str, failure: str
) -> None:
    """A failed read left an existing local file emptied (fsspec's get_file opened it for
    writing before the first fetch)."""
    fs, failing = _readers(tmp_path, keys, failure)
    data = os.urandom(3 << 20)
    fs.pipe_file("model.pt", data)
    local = tmp_path / "out" / "model.pt"
    local.parent.mkdir()
    local.write_bytes(b"previous weights")
    with pytest.raises((KeyAccessError, IntegrityError)):
        failing.get("model.pt", str(local))
    assert local.read_bytes() == b"previous weights"
    assert os.listdir(local.parent) == ["model.pt"]  # no temporary file left
    fs.store.damaged = False
    fs.get_file("model.pt", local)
    assert local.read_bytes() == data
    fs.get("model.pt", str(tmp_path / "new" / "dir" / "m.pt"))  # parents made, as before
    assert (tmp_path / "new" / "dir" / "m.pt").read_bytes() == data


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("cache_type", [c for c in fsspec.caching.caches if c != "parts"])
def test_every_fsspec_cache_type_reads(
    tmp_path: Path, keys: str, encrypted: bool, cache_type: str
) -> None:
    """Each of fsspec's caches reads the object (``"parts"`` only serves parts handed to
    it, never fetching). ``"all"`` fetches while it is made: on a plaintext local store
    that was an AttributeError (the file had no ``cache`` yet)."""
    fs = DcstoreFileSystem(str(tmp_path / "store"), keys=keys if encrypted else None)
    data = os.urandom(300_000)
    fs.pipe_file("a.bin", data)
    with fs.open("a.bin", "rb", cache_type=cache_type, block_size=65536) as f:
        f.seek(1000)
        assert f.read(100_000) == data[1000:101_000]
        f.seek(0)
        assert f.read() == data


@pytest.mark.parametrize("encrypted", [False, True])
def test_copies_and_removals_wait_for_the_transaction(
    tmp_path: Path, keys: str, encrypted: bool
) -> None:
    """``cp_file``/``copy``/``mv``/``rm`` inside a failing transaction changed the store
    (the copies were committed at once; ``mv`` lost its source). They now happen when it
    commits, in their turn, or not at all."""
    fs = DcstoreFileSystem(str(tmp_path / "store"), keys=keys if encrypted else None)
    big = os.urandom(COPY_CHUNK_BYTES + 12_345)
    before = {"a": b"A", "b": b"B", "d/big": big, "gone": b"G"}
    fs.pipe(before)

    def changes() -> None:
        fs.cp_file("a", "a-copy")
        fs.copy("d/big", "big-copy")
        fs.mv("b", "b-moved")
        fs.mv("d", "e", recursive=True)
        fs.rm("gone")
        fs.pipe_file("gone", b"again")  # after its removal, in turn
        assert fs.cat(sorted(before)) == before  # nothing visible yet

    with pytest.raises(RuntimeError), fs.transaction:
        changes()
        raise RuntimeError("the transaction fails")
    assert fs.find("") == sorted(before) and fs.cat(sorted(before)) == before
    with fs.transaction:
        changes()
    after = {"a": b"A", "a-copy": b"A", "b-moved": b"B", "big-copy": big, "e/big": big}
    assert fs.find("") == sorted([*after, "gone"])
    assert fs.cat(sorted(after)) == after and fs.cat("gone") == b"again"


class FillsUp(LocalBackend):
    """A local store whose disk is full once ``room`` bytes of a write have gone in."""

    room = 2 << 20

    def open_write(self, key, **kwargs):
        writer = super().open_write(key, **kwargs)
        write, taken = writer._write, [0]

        def _write(view):
            taken[0] += len(view)
            if taken[0] > self.room:
                raise StorageFullError(f"{self.url}: no space left on device")
            write(view)

        writer._write = _write
        return writer


@pytest.mark.parametrize("how", ["to_csv", "to_csv.gz", "to_json", "text", "binary", "close"])
def test_a_full_disk_is_the_error_raised(tmp_path: Path, how: str) -> None:
    """pandas' ``to_csv`` onto a full disk raised ``ValueError: write to a closed writer``
    (its handles flushing their last bytes as they closed), the StorageFullError only
    its context; the old object is kept whatever the way in."""
    fs = DcstoreFileSystem(FillsUp(tmp_path / "store"), block_size=1 << 20)
    fs.pipe_file("obj", b"old")
    df = pd.DataFrame({"x": np.random.default_rng(0).random(400_000)})
    opts = {"store": fs.store}
    with pytest.raises(StorageFullError, match="no space left") as info:
        if how.startswith("to_csv"):
            df.to_csv(f"dcstore://obj{how[6:]}", storage_options=opts)
        elif how == "to_json":
            df.to_json("dcstore://obj", storage_options=opts)
        elif how == "text":
            with fs.open("obj", "w") as f:
                f.write("x" * (3 << 20))
        else:
            f = fs.open("obj", "wb")
            with contextlib.suppress(StorageFullError) if how == "close" else f:
                for _ in range(4):
                    f.write(b"x" * (1 << 20))  # then dropped: the file has failed
            f.close()  # commits nothing: says why
    assert info.value.__context__ is not info.value  # no loop (a chain walker would spin)
    assert fs.find("") == ["obj"] and fs.cat("obj") == b"old"


@pytest.mark.parametrize("mode", ["a", "ab", "at", "r+", "x", "w+b"])
def test_an_unsupported_mode_is_named_as_given(tmp_path: Path, mode: str) -> None:
    """``fs.open(p, "a")`` said ``not 'ab'`` (fsspec's binary form of the mode)."""
    fs = DcstoreFileSystem(str(tmp_path / "store"))
    with pytest.raises(NotImplementedError, match=rf"not '{re.escape(mode)}'$"):
        fs.open("k", mode)


def test_a_read_failing_into_a_fifo_raises_and_leaves_the_fifo(tmp_path: Path) -> None:
    """Review: an object gone mid-read (NotFoundError is a FileNotFoundError) was taken
    for a missing output: the FIFO was replaced by an empty file and the call returned."""

    def chunks() -> Iterator[bytes]:
        yield b"x" * 1000
        raise NotFoundError("the object was deleted mid-read")

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with pytest.raises(NotFoundError, match="deleted mid-read"):
        write_file_atomically(str(fifo), chunks())
    reader.join(10)
    assert got == [b"x" * 1000] and fifo.is_fifo()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file another owner")
def test_a_replaced_output_keeps_its_owner(tmp_path: Path) -> None:
    """Review: written as root over a user's file, the output became root's."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"old")
    os.chown(out, 65534, 65534)
    os.chmod(out, 0o4755)
    write_file_atomically(str(out), [b"new"])
    assert out.read_bytes() == b"new"
    assert (out.stat().st_uid, out.stat().st_gid) == (65534, 65534)
    assert stat.S_IMODE(out.stat().st_mode) == 0o4755  # review: chown after chmod cleared it
