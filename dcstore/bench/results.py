"""The results model and its JSON / Parquet forms (schema ``dcstore-bench/1``).

A :class:`BenchResult` is one invocation of ``dcstore bench``: the full
configuration, the machine it ran on, one :class:`CaseResult` per measured
case (with its raw HdrHistogram), a summary (compare runs) and its status:
``complete``, ``partial`` (stopped by an error or an interrupt; every finished
case and the measured part of the failing one are kept) or ``failed`` (nothing
measured). Loading is strict: a missing or mistyped field is an error, so the
JSON schema is exactly these dataclasses (see :data:`CASE_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcstore.bench.histogram import LatencyHistogram
from dcstore.bench.measurement import Measurement
from dcstore.bench.runner import LoadSpec
from dcstore.errors import ConfigError

SCHEMA = "dcstore-bench/1"
STATUSES = ("complete", "partial", "failed")
MIN_STABLE_SECONDS = 3.0
MIN_OPS_FOR_P999 = 1000
MAX_STABLE_CV = 0.25


@dataclass
class CaseResult:
    """One measured case: a workload on one target under one load."""

    name: str
    target: str
    """Label of the stack measured (URL without secrets unless labelled)."""
    params: dict[str, Any]
    """op, size, threads, processes, loop, rate, duration, ops, warmup, seed, ... ."""
    status: str
    ops: int
    bytes: int
    errors: int
    elapsed_s: float
    ops_per_s: float
    mb_per_s: float
    latency_us: dict[str, float | None]
    """min, mean, stdev, p50, p90, p99, p999, max (µs)."""
    bytes_verified: int
    verify_failures: int
    warmup_ops: int
    error_types: dict[str, int]
    error_samples: list[str]
    timeline: dict[str, Any]
    """interval_s and per-interval ops and bytes of the measured window."""
    histogram: dict[str, Any]
    """Raw latency histogram: encoding, unit (ns) and data."""
    warnings: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    """Suite-specific figures (hit ratio, samples/s, time to first batch, ...)."""

    def latency_histogram(self) -> LatencyHistogram:
        return LatencyHistogram.from_dict(self.histogram)


CASE_FIELDS = tuple(f.name for f in dataclasses.fields(CaseResult))


@dataclass
class BenchResult:
    """One ``dcstore bench`` invocation."""

    suite: str
    status: str
    started_at: str
    finished_at: str
    command: list[str]
    config: dict[str, Any]
    machine: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Any) -> BenchResult:
        """Strictly validate and load a result document."""
        if not isinstance(doc, dict):
            raise ConfigError("benchmark result must be a JSON object")
        if doc.get("schema") != SCHEMA:
            raise ConfigError(f"not a {SCHEMA} result (schema {doc.get('schema')!r})")
        top = _check_fields(doc, cls, "result")
        if top["status"] not in STATUSES:
            raise ConfigError(f"result status {top['status']!r} not in {STATUSES}")
        cases = []
        for i, case in enumerate(top["cases"]):
            if not isinstance(case, dict):
                raise ConfigError(f"case {i} must be an object")
            cases.append(CaseResult(**_check_fields(case, CaseResult, f"case {i}")))
        top["cases"] = cases
        return cls(**top)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "list": list,
    "dict": dict,
}


def _check_fields(doc: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """The fields of ``cls`` from ``doc``; missing, unknown or mistyped fields raise."""
    out = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(doc) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for name, f in fields.items():
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        if name not in doc:
            if has_default:
                continue
            raise ConfigError(f"{where}: missing field {name!r}")
        value = doc[name]
        base = str(f.type).split("[")[0].split(" ")[0]
        expected = _TYPES.get(base)
        optional = "None" in str(f.type)
        if expected and not (isinstance(value, expected) or (optional and value is None)):
            raise ConfigError(f"{where}: field {name!r} must be {base}, got {type(value).__name__}")
        out[name] = value
    return out


def stability_warnings(m: Measurement, spec: LoadSpec) -> list[str]:
    """Say when a figure should not be trusted: too short, too few ops, too noisy."""
    warnings = []
    if m.elapsed_s < MIN_STABLE_SECONDS and m.ops:
        warnings.append(
            f"measured less than {MIN_STABLE_SECONDS:g}s: too short to be stable "
            f"(use --duration 10s or more)"
        )
    if 0 < m.ops < MIN_OPS_FOR_P999:
        warnings.append(f"fewer than {MIN_OPS_FOR_P999} ops measured: p99.9 is not meaningful")
    full = m.timeline_ops[:-1] if len(m.timeline_ops) > 1 else []
    if len(full) >= 3 and statistics.fmean(full) > 0:
        cv = statistics.pstdev(full) / statistics.fmean(full)
        if cv > MAX_STABLE_CV:
            warnings.append(
                f"throughput varied by more than {MAX_STABLE_CV:.0%} (coefficient of variation) "
                f"between {spec.interval:g}s intervals: the system is noisy; repeat or run longer"
            )
    if spec.rate and m.elapsed_s > 0:
        achieved = m.ops / m.elapsed_s
        if achieved < 0.95 * spec.rate:
            warnings.append(
                f"target rate not sustained: {achieved:.1f} of {spec.rate:g} ops/s; "
                f"latencies include the queueing"
            )
    if m.histogram.overflows:
        warnings.append(f"{m.histogram.overflows} latencies above one hour were clamped")
    return warnings


def case_from_measurement(
    name: str,
    target: str,
    params: dict[str, Any],
    spec: LoadSpec,
    m: Measurement,
    extra: dict[str, Any] | None = None,
) -> CaseResult:
    """Turn a runner measurement into a case result with its figures and warnings."""
    elapsed = m.elapsed_s
    status = "complete"
    if m.fatal is not None or m.interrupted:
        status = "partial" if m.ops else "failed"
    return CaseResult(
        name=name,
        target=target,
        params={**params, **_load_params(spec)},
        status=status,
        ops=m.ops,
        bytes=m.bytes,
        errors=m.errors,
        elapsed_s=elapsed,
        ops_per_s=m.ops / elapsed if elapsed > 0 else 0.0,
        mb_per_s=m.bytes / elapsed / 1e6 if elapsed > 0 else 0.0,
        latency_us=m.histogram.summary_us(),
        bytes_verified=m.bytes_verified,
        verify_failures=m.verify_failures,
        warmup_ops=m.warmup_ops,
        error_types=dict(m.error_types),
        error_samples=list(m.error_samples),
        timeline={"interval_s": spec.interval, "ops": m.timeline_ops, "bytes": m.timeline_bytes},
        histogram=m.histogram.to_dict(),
        warnings=stability_warnings(m, spec),
        extra=extra or {},
    )


def _load_params(spec: LoadSpec) -> dict[str, Any]:
    return {
        "threads": spec.threads,
        "processes": spec.processes,
        "concurrency": spec.workers,
        "loop": spec.loop,
        "rate": spec.rate,
        "duration_s": None if spec.ops is not None else spec.duration,
        "target_ops": spec.ops,
        "warmup_s": spec.warmup,
        "max_errors": spec.max_errors,
    }


def error_info(exc: BaseException) -> dict[str, str]:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return {"type": type(exc).__name__, "message": text}


# -- files -------------------------------------------------------------------------------


def write_json(result: BenchResult, path: str | os.PathLike[str]) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a result."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, target)


def read_json(path: str | os.PathLike[str]) -> BenchResult:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read benchmark result {path}: {exc}") from exc
    return BenchResult.from_dict(doc)


def parquet_table(result: BenchResult) -> Any:
    """One row per case; run-level facts in the schema metadata."""
    import pyarrow as pa

    types = _parquet_types(pa)
    rows: dict[str, list[Any]] = {name: [] for name in types}
    for case in result.cases:
        p = case.params
        values = {
            "suite": result.suite,
            "run_status": result.status,
            "started_at": result.started_at,
            "name": case.name,
            "target": case.target,
            "status": case.status,
            "op": p.get("op"),
            "size": p.get("size"),
            "threads": p.get("threads"),
            "processes": p.get("processes"),
            "loop": p.get("loop"),
            "rate": p.get("rate"),
            "repetition": p.get("repetition"),
            "ops": case.ops,
            "bytes": case.bytes,
            "errors": case.errors,
            "elapsed_s": case.elapsed_s,
            "ops_per_s": case.ops_per_s,
            "mb_per_s": case.mb_per_s,
            "bytes_verified": case.bytes_verified,
            "verify_failures": case.verify_failures,
            **{f"{k}_us": case.latency_us.get(k) for k in _LATENCY_KEYS},
            "timeline_ops": case.timeline["ops"],
            "timeline_bytes": case.timeline["bytes"],
            "histogram": case.histogram["data"],
            "params_json": json.dumps(p, sort_keys=True),
            "extra_json": json.dumps(case.extra, sort_keys=True),
            "warnings": case.warnings,
        }
        for name in types:
            rows[name].append(values[name])
    schema = pa.schema(
        [pa.field(name, typ) for name, typ in types.items()],
        metadata={
            "dcstore.bench.schema": SCHEMA,
            "dcstore.bench.result": json.dumps({**result.to_dict(), "cases": []}),
        },
    )
    return pa.table(rows, schema=schema)


def write_parquet(result: BenchResult, path: str | os.PathLike[str]) -> None:
    import pyarrow.parquet as pq

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(parquet_table(result), tmp)
    os.replace(tmp, target)


_LATENCY_KEYS = ("min", "mean", "p50", "p90", "p99", "p999", "max")


def _parquet_types(pa: Any) -> dict[str, Any]:
    types = {
        "suite": pa.string(),
        "run_status": pa.string(),
        "started_at": pa.string(),
        "name": pa.string(),
        "target": pa.string(),
        "status": pa.string(),
        "op": pa.string(),
        "size": pa.int64(),
        "threads": pa.int32(),
        "processes": pa.int32(),
        "loop": pa.string(),
        "rate": pa.float64(),
        "repetition": pa.int32(),
        "ops": pa.int64(),
        "bytes": pa.int64(),
        "errors": pa.int64(),
        "elapsed_s": pa.float64(),
        "ops_per_s": pa.float64(),
        "mb_per_s": pa.float64(),
        "bytes_verified": pa.int64(),
        "verify_failures": pa.int64(),
    }
    types.update({f"{k}_us": pa.float64() for k in _LATENCY_KEYS})
    types.update(
        {
            "timeline_ops": pa.list_(pa.int64()),
            "timeline_bytes": pa.list_(pa.int64()),
            "histogram": pa.string(),
            "params_json": pa.string(),
            "extra_json": pa.string(),
            "warnings": pa.list_(pa.string()),
        }
    )
    return types
