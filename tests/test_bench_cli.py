"""``dcstore bench`` end to end on memory and local stacks, result schema, failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from dcstore.bench.histogram import LatencyHistogram
from dcstore.bench.results import CASE_FIELDS, SCHEMA, BenchResult, read_json
from dcstore.bench.stacks import StackSpec, redact
from dcstore.cli.main import EXIT_CONFIG, EXIT_NO_SPACE, EXIT_UNAVAILABLE, main
from dcstore.errors import ConfigError

QUICK = ["--duration", "0.3s", "--warmup", "0.1s", "--no-progress"]
TOP_FIELDS = {
    "schema", "suite", "status", "started_at", "finished_at", "command", "config", "machine",
    "cases", "summary", "warnings", "error",
}  # fmt: skip
LATENCY_KEYS = {"min", "mean", "stdev", "p50", "p90", "p99", "p999", "max"}


def bench(*args: str) -> int:
    return main(["bench", *args])


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def check_schema(doc: dict) -> BenchResult:
    """The documented shape of a result file."""
    assert set(doc) == TOP_FIELDS
    assert doc["schema"] == SCHEMA
    assert doc["status"] in ("complete", "partial", "failed")
    machine = doc["machine"]
    for key in ("logical_cores", "usable_cores", "memory_bytes", "python", "packages", "cpu_model"):
        assert key in machine
    assert machine["packages"]["dcstore"]
    for case in doc["cases"]:
        assert set(case) == set(CASE_FIELDS)
        assert set(case["latency_us"]) == LATENCY_KEYS
        assert case["histogram"]["encoding"] == "hdrhistogram-v2-base64"
        assert case["histogram"]["unit"] == "ns"
        assert LatencyHistogram.from_dict(case["histogram"]).count == case["ops"]
        assert sum(case["timeline"]["ops"]) == case["ops"]
        for key in ("op", "size", "threads", "processes", "loop", "concurrency", "seed"):
            assert key in case["params"]
    return BenchResult.from_dict(doc)


def test_backend_on_memory_writes_json_parquet_and_plot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    rc = bench(
        "backend", "memory://bench-cli", "--op", "put,get,get_range", "--size", "64KiB,1MiB",
        "--threads", "1,2", *QUICK, "--json", str(out), "--parquet", str(tmp_path / "r.parquet"),
        "--plot", str(tmp_path / "r.png"),
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "p99.9" in printed and "get_range" in printed
    doc = load(out)
    result = check_schema(doc)
    assert result.status == "complete" and result.error is None
    assert len(result.cases) == 12
    for case in result.cases:
        assert case.ops > 0 and case.errors == 0 and case.status == "complete"
        assert case.mb_per_s > 0 and case.latency_us["p50"] > 0
        assert case.bytes_verified > 0  # gets verified; puts read back
        assert case.warnings  # 0.3 s is too short to be stable, and it says so
    ranges = [c for c in result.cases if c.params["op"] == "get_range"]
    assert all(c.bytes == c.ops * 65536 for c in ranges)
    assert doc["config"]["sizes"] == [65536, 1 << 20]
    assert doc["config"]["stacks"][0]["url"] == "memory://bench-cli"

    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "r.parquet")
    assert table.num_rows == 12
    assert table.schema.metadata[b"dcstore.bench.schema"].decode() == SCHEMA
    assert set(table.column("op").to_pylist()) == {"put", "get", "get_range"}
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backend_on_local_disk_with_processes_and_op_counts(tmp_path: Path) -> None:
    root = tmp_path / "store"
    out = tmp_path / "r.json"
    rc = bench(
        "backend", str(root), "--op", "put,get", "--size", "64KiB", "--processes", "2",
        "--threads", "2", "--ops", "60", "--warmup", "0", "--no-progress", "--json", str(out),
    )  # fmt: skip
    assert rc == 0
    result = check_schema(load(out))
    for case in result.cases:
        assert case.ops + case.errors == 60
        assert case.params["processes"] == 2 and case.params["concurrency"] == 4
    # the benchmark cleans up after itself
    assert not [p for p in root.rglob("*") if p.is_file()]


def test_open_loop_and_encrypted_cached_stack(tmp_path: Path) -> None:
    from dcstore.crypto import Keyring, write_key_file

    keyfile = tmp_path / "kek.json"
    write_key_file(keyfile, Keyring.generate())
    out = tmp_path / "r.json"
    rc = bench(
        "backend", f"file://{tmp_path / 'store'}", "--op", "put,get", "--size", "256KiB",
        "--rate", "100", "--cache", "memory", "--keys", f"file://{keyfile}", *QUICK,
        "--json", str(out),
    )  # fmt: skip
    assert rc == 0
    result = check_schema(load(out))
    assert all(c.params["loop"] == "open" and c.params["rate"] == 100 for c in result.cases)
    assert all(c.ops > 10 and c.errors == 0 for c in result.cases)
    stack = result.config["stacks"][0]
    assert stack["cache"] == "memory" and stack["keys"].startswith("file://")
    assert "+encrypted" in result.cases[0].target


def test_compare_interleaves_and_reports_ratios(tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.json"
    rc = bench(
        "compare", "memory://cmp;label=memory", f"{tmp_path / 'store'};label=local",
        "--op", "get", "--size", "64KiB", "--reps", "2", *QUICK, "--json", str(out),
    )  # fmt: skip
    assert rc == 0
    assert "ratio" in capsys.readouterr().out
    result = check_schema(load(out))
    assert result.suite == "compare"
    order = [(c.params["repetition"], c.target) for c in result.cases]
    assert order == [(0, "memory"), (0, "local"), (1, "local"), (1, "memory")]
    rows = {row["target"]: row for row in result.summary}
    assert rows["memory"]["ratio"] is None
    assert rows["local"]["repetitions"] == 2
    assert rows["local"]["ratio"]["min"] <= rows["local"]["ratio"]["median"]
    assert rows["local"]["mb_per_s"]["min"] <= rows["local"]["mb_per_s"]["max"]


def test_show_and_diff_rerender_saved_results(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        assert bench("backend", "memory://sd", "--op", "get", "--size", "4KiB", *QUICK,
                     "--json", str(path)) == 0  # fmt: skip
    capsys.readouterr()
    assert bench("show", str(a), "--plot", str(tmp_path / "a.png")) == 0
    shown = capsys.readouterr().out
    assert "get" in shown and "4KiB" in shown
    assert (tmp_path / "a.png").exists()
    assert bench("show", str(a), "--plot", str(tmp_path / "no" / "a.png")) == 1
    failed = capsys.readouterr()
    assert (failed.out + failed.err).count("cannot write") == 1  # said once, not twice
    assert bench("diff", str(a), str(b)) == 0
    diffed = capsys.readouterr().out
    assert "B vs A" in diffed and "get 4KiB x1" in diffed
    assert bench("diff", str(a), str(a)) == 0
    assert "different times" not in capsys.readouterr().out
    other = tmp_path / "other.json"
    assert bench("backend", "memory://sd", "--op", "put", "--size", "1KiB", *QUICK,
                 "--json", str(other)) == 0  # fmt: skip
    capsys.readouterr()
    assert bench("diff", str(a), str(other)) == 3  # nothing compared: the not-found code
    assert "no case appears in both results" in capsys.readouterr().err


def test_a_range_larger_than_the_objects_is_said(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    assert bench("backend", "memory://rr", "--op", "get_range", "--size", "4KiB",
                 "--range-size", "1MiB", *QUICK, "--json", str(out)) == 0  # fmt: skip
    warned = "range size 1MiB is larger than the 4KiB objects: their get_range reads whole"
    assert warned in capsys.readouterr().out
    assert any(warned in w for w in json.loads(out.read_text())["warnings"])


def test_bad_url_is_a_clear_error_and_still_writes_a_result(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bad.json"
    rc = bench("backend", "nosuch://host/x", *QUICK, "--json", str(out))
    assert rc == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "unknown storage scheme 'nosuch'" in err
    doc = load(out)
    check_schema(doc)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "ConfigError"
    assert bench("backend", "memory://x", "--size", "4 lots", *QUICK) == EXIT_CONFIG
    assert bench("backend", "memory://x", "--op", "scan", *QUICK) == EXIT_CONFIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_a_clear_error(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pymongo")
    out = tmp_path / "down.json"
    url = f"mongodb://127.0.0.1:{_free_port()}/bench?serverSelectionTimeoutMS=200"
    rc = bench("backend", url, "--retries", "1", *QUICK, "--json", str(out))
    assert rc == EXIT_UNAVAILABLE
    assert "unavailable" in capsys.readouterr().err.lower()
    doc = load(out)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "BackendUnavailableError"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 16 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_mid_benchmark_keeps_the_results_so_far(
    small_disk: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "full.json"
    rc = bench(
        "backend", str(small_disk), "--op", "put", "--size", "1MiB", "--objects", "64",
        "--duration", "5s", "--warmup", "0", "--no-progress", "--json", str(out),
    )  # fmt: skip
    assert rc == EXIT_NO_SPACE
    captured = capsys.readouterr()
    assert "no space left on device" in captured.err
    assert "PARTIAL" in captured.out
    doc = load(out)
    check_schema(doc)
    assert doc["status"] == "partial"
    assert doc["error"]["type"] == "StorageFullError"
    (case,) = doc["cases"]
    assert case["status"] == "partial"
    assert 5 <= case["ops"] <= 16 and case["errors"] == 1
    assert case["latency_us"]["p50"] > 0


def test_result_loading_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    assert bench("backend", "memory://strict", "--op", "get", "--size", "1KiB", *QUICK,
                 "--json", str(path)) == 0  # fmt: skip
    doc = load(path)
    read_json(path)
    for broken in (
        {**doc, "schema": "other/9"},
        {k: v for k, v in doc.items() if k != "machine"},
        {**doc, "surprise": 1},
        {**doc, "status": "great"},
        {**doc, "cases": [{**doc["cases"][0], "ops": "many"}]},
        {**doc, "cases": [{k: v for k, v in doc["cases"][0].items() if k != "histogram"}]},
    ):
        with pytest.raises(ConfigError):
            BenchResult.from_dict(broken)


def test_stack_specs_parse_and_never_show_secrets() -> None:
    spec = StackSpec.parse("memory://a;cache=memory;label=hot", keys=None)
    assert (spec.url, spec.cache, spec.label, spec.name) == ("memory://a", "memory", "hot", "hot")
    secret = StackSpec.parse(
        "mongodb://user:hunter2@db:27017/x?tlsCertificateKeyFilePassword=pw2;"
        "cache=redis://:s3cret@cache:6379/0"
    )
    text = json.dumps(secret.describe()) + secret.name
    for word in ("hunter2", "s3cret", "pw2"):
        assert word not in text
    assert redact("/plain/path") == "/plain/path"
    with pytest.raises(ConfigError):
        StackSpec.parse("memory://a;colour=blue")
