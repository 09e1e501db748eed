"""``dcstore bench crypto | cache | loader`` end to end, quickly, on local stacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcstore.bench.results import BenchResult
from dcstore.cli.main import EXIT_CONFIG, main

QUICK = ["--duration", "0.3s", "--warmup", "0.1s", "--no-progress"]


def bench(*args: str) -> int:
    return main(["bench", *args])


def load(path: Path) -> BenchResult:
    return BenchResult.from_dict(json.loads(path.read_text()))


def test_crypto_compares_our_format_with_raw_aesgcm(tmp_path: Path) -> None:
    out = tmp_path / "crypto.json"
    rc = bench("crypto", "--size", "64KiB,1MiB", "--reps", "2", *QUICK, "--json", str(out))
    assert rc == 0
    result = load(out)
    assert result.suite == "crypto" and result.status == "complete"
    assert len(result.cases) == 2 * 2 * 2 * 2  # sizes x directions x reps x impls
    assert {c.params["impl"] for c in result.cases} == {"aesgcm", "dcstore"}
    for case in result.cases:
        assert case.ops > 0 and case.errors == 0
        if case.params["op"] == "decrypt":
            assert case.bytes_verified == case.bytes
    ours = [row for row in result.summary if row["target"].startswith("dcstore")]
    assert len(ours) == 4
    assert all(row["ratio"] is not None and row["ratio"]["median"] > 0 for row in ours)
    assert result.config["segment_size"] > 0


def test_crypto_in_worker_processes(tmp_path: Path) -> None:
    out = tmp_path / "crypto.json"
    rc = bench(
        "crypto", "--size", "64KiB", "--direction", "decrypt", "--processes", "2", "--ops", "40",
        "--warmup", "0", "--reps", "1", "--no-progress", "--json", str(out),
    )  # fmt: skip
    assert rc == 0
    cases = load(out).cases
    assert [c.ops for c in cases] == [40, 40]
    assert all(c.bytes_verified == 40 * 65536 for c in cases)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_cache_paths_and_hit_ratio(tmp_path: Path, encrypted: bool) -> None:
    extra_args: list[str] = []
    if encrypted:
        from dcstore.crypto import Keyring, write_key_file

        write_key_file(tmp_path / "kek.json", Keyring.generate())
        extra_args = ["--keys", f"file://{tmp_path / 'kek.json'}"]
    out = tmp_path / "cache.json"
    rc = bench(
        "cache", str(tmp_path / "origin"), "--cache", "memory", "--op", "get,get_range",
        "--size", "256KiB", "--objects", "4", *extra_args, *QUICK, "--json", str(out),
    )  # fmt: skip
    assert rc == 0
    result = load(out)
    assert result.suite == "cache"
    by = {(c.params["path"], c.params["op"]): c for c in result.cases}
    assert set(by) == {(p, o) for p in ("origin", "miss", "hit") for o in ("get", "get_range")}
    for op in ("get", "get_range"):
        hit, miss, origin = by["hit", op], by["miss", op], by["origin", op]
        assert hit.extra["hit_ratio"] == 1.0 and hit.extra["bytes_from_origin"] == 0
        assert miss.extra["hit_ratio"] == 0.0 and miss.extra["bytes_from_origin"] > 0
        assert miss.extra["throughput_basis"].startswith("timed time")
        assert origin.extra == {}
        assert all(c.ops > 0 and c.errors == 0 and c.bytes_verified > 0 for c in (hit, miss))
    assert {row["target"] for row in result.summary} == {"origin", "miss", "hit"}
    # every object written was removed again
    assert not [p for p in (tmp_path / "origin").rglob("*") if p.is_file()]


def test_cache_rejects_unknown_paths() -> None:
    assert bench("cache", "memory://c", "--path", "sideways", *QUICK) == EXIT_CONFIG


def test_cache_against_a_tier_that_is_down_fails_instead_of_measuring_the_origin(
    tmp_path: Path, capsys
) -> None:
    """Its 'hit' rows read the origin at 646 MB/s and the run exited 0."""
    out = tmp_path / "down.json"
    dead = "redis://127.0.0.1:1/0?connect_timeout=0.2"
    assert bench("cache", "memory://c", "--cache", dead, *QUICK, "--json", str(out)) == 5
    assert "nothing was measured" in capsys.readouterr().out
    assert BenchResult.from_dict(json.loads(out.read_text())).status == "failed"


def test_loader_synthetic_dataset_figures(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "loader.json"
    where = tmp_path / "ds"
    rc = bench(
        "loader", str(where), "--synthetic", "300", "--sample-size", "16KiB",
        "--shard-size", "1MiB", "--workers", "0,2", "--batch-size", "16", "--step", "0,2ms",
        "--duration", "0", "--no-progress", "--json", str(out),
    )  # fmt: skip
    assert rc == 0
    result = load(out)
    assert result.suite == "loader" and len(result.cases) == 4
    for case in result.cases:
        extra = case.extra
        assert extra["samples"] == 300 - 16  # a whole epoch after the first batch
        assert case.bytes == extra["samples"] * 16384
        assert case.bytes_verified == 300 * 16384
        assert extra["samples_per_s"] > 0 and extra["first_batch_s"] > 0
        assert 0 <= extra["data_wait_pct"] <= 100
        assert extra["rss_main"] > 0
        if case.params["workers"]:
            assert extra["rss_workers"] > 0
        assert case.params["dataset_samples"] == 300
    assert not [p for p in where.rglob("*") if p.is_file()]  # synthetic data removed


def test_loader_refuses_to_pack_over_an_existing_dataset(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    where = str(tmp_path / "ds")
    args = ["--sample-size", "1KiB", "--workers", "0", "--batch-size", "8", "--batches", "2"]
    args.append("--no-progress")
    assert bench("loader", where, "--synthetic", "50", "--keep", *args) == 0
    capsys.readouterr()
    assert bench("loader", where, "--synthetic", "50", *args) == EXIT_CONFIG
    assert "already holds a dataset" in capsys.readouterr().err
    out = tmp_path / "existing.json"
    # benchmarking the existing dataset is fine, also through DeviceLoader
    assert bench("loader", where, *args, "--device", "cpu", "--json", str(out)) == 0
    (case,) = load(out).cases
    assert case.params["device"] == "cpu" and case.ops == 2
    assert case.bytes_verified == 0  # nothing to check against: not packed by this run
