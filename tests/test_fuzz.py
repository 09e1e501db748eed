"""The fuzz targets' properties, replayed on every committed seed and past crash, plus a
short fixed-seed run of the coverage-guided fuzzer itself (fuzz/README.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dcstore.backends.memory import MemoryBackend
from dcstore.errors import IntegrityError
from dcstore.loaders.manifest import Manifest
from dcstore.loaders.writer import ShardWriter
from fuzz.targets import TARGETS, check

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
INPUTS = sorted(
    p for kind in ("corpus", "crashes") for p in (FUZZ / kind).glob("*/*") if p.is_file()
)


def test_every_target_has_seeds() -> None:
    assert {p.parent.name for p in INPUTS if p.parts[-3] == "corpus"} == set(TARGETS)


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: "/".join(p.parts[-3:]))
def test_committed_input_keeps_its_property(path: Path) -> None:
    """Only the documented errors escape; a parse that succeeds is checked (fuzz/targets.py)."""
    check(path.parent.name, path.read_bytes())


def _manifest_table() -> pa.Table:
    store = MemoryBackend("fuzz-manifest")
    with ShardWriter(store, shard_size=4096) as writer:
        for i in range(4):
            writer.write({"__key__": f"k{i}", "bin": bytes([i]) * 1500, "cls": i})
    return pq.read_table(pa.BufferReader(store.get("manifest.parquet")))


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _replace(table: pa.Table, name: str, rows: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    column = pa.array(rows, type=table.schema.field(index).type)
    return table.set_column(index, table.schema.field(index), column)


def _damaged() -> dict[str, pa.Table]:
    table = _manifest_table()
    offsets = table.column("offsets").to_pylist()
    lengths = table.column("lengths").to_pylist()
    return {
        "no column 'lengths'": table.drop_columns(["lengths"]),
        "column 'size' is string": table.set_column(
            table.schema.get_field_index("size"),
            pa.field("size", pa.string()),
            pa.array([str(s) for s in table.column("size").to_pylist()]),
        ).replace_schema_metadata(table.schema.metadata),
        "sample counts disagree": _replace(table, "offsets", [o[:-1] for o in offsets]),
        "outside the shard": _replace(table, "lengths", [[10**9] * len(ln) for ln in lengths]),
        "outside the shard (negative)": _replace(
            table, "offsets", [[-1] * len(o) for o in offsets]
        ),
        "outside the shard (overflow)": _replace(
            _replace(table, "offsets", [[2**62] * len(o) for o in offsets]),
            "lengths",
            [[2**62] * len(ln) for ln in lengths],
        ),
        "no shard key": _replace(table, "shard", [None] * table.num_rows),
    }


@pytest.mark.parametrize("damage", sorted(_damaged()))
def test_an_inconsistent_manifest_is_an_integrity_error(damage: str) -> None:
    """What the manifest fuzzer found: a missing column raised KeyError and bad metadata
    UnicodeDecodeError; rows are now checked before a loader trusts their offsets."""
    data = _parquet(_damaged()[damage])
    with pytest.raises(IntegrityError, match=r"ds/manifest\.parquet"):
        Manifest.from_parquet(data, where="ds/manifest.parquet")


def test_the_undamaged_manifest_still_parses() -> None:
    manifest = Manifest.from_parquet(_parquet(_manifest_table()), where="ok")
    assert sum(len(s.sample_keys) for s in manifest.shards) == 4


def test_a_fixed_seed_fuzz_run_of_every_target_finds_nothing(tmp_path: Path) -> None:
    """... and leaves no scratch directory behind (atheris exits its process when done)."""
    pytest.importorskip("atheris")
    done = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), "--all", "--runs", "3000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert list(tmp_path.iterdir()) == []
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s.*\bok$", done.stdout, re.M)}
    assert set(rows) == set(TARGETS), done.stdout
    assert all(n >= 3000 for n in rows.values()), done.stdout
