"""The storage benchmark: put / get / get_range over sizes, loads and stacks.

One run is a matrix ``size x op x load x repetition x stack``. Stacks are
interleaved inside each repetition (and their order rotates between
repetitions), so slow drift of a shared machine affects every stack alike and
a ratio between stacks is always measured together.

Objects live under a fresh prefix (``dcstore-bench/<time>-<pid>``) and are
deleted at the end unless ``keep`` is set. Reads need the objects first: they
are written untimed unless a put case already wrote and verified every one.
After a put case every object is read back and verified (untimed).

Any failure (bad URL, unreachable server, full disk, too many errors, ^C)
stops the run; :func:`run_storage` returns the result with every finished case
plus the measured part of the failing one, status ``partial`` (or ``failed``
when nothing was measured), together with the exception to report.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

from dcstore.backends.base import Backend
from dcstore.bench.payload import ObjectSet
from dcstore.bench.results import BenchResult, CaseResult
from dcstore.bench.runner import LoadSpec
from dcstore.bench.session import Reporter, Session, default_prefix, interleave
from dcstore.bench.stacks import StackSpec
from dcstore.bench.units import format_size
from dcstore.bench.workloads import BACKEND_OPS, BackendWorkload
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    IntegrityError,
    NotFoundError,
)

OBJECT_BUDGET_BYTES = 512 * 1024**2
MAX_OBJECTS = 64


@dataclass(frozen=True)
class StorageConfig:
    """The full configuration of a storage benchmark (stored in the result)."""

    ops: tuple[str, ...] = ("put", "get")
    sizes: tuple[int, ...] = (1024**2,)
    range_size: int = 64 * 1024
    threads: tuple[int, ...] = (1,)
    processes: tuple[int, ...] = (1,)
    rate: float | None = None
    duration: float | None = 5.0
    op_count: int | None = None
    warmup: float = 1.0
    objects: int | None = None
    """Objects per size; default: as many as fit 512 MiB, between 1 and 64."""
    seed: int = 0
    verify: bool = True
    max_errors: int = 0
    repetitions: int = 1
    prefix: str | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        bad = [op for op in self.ops if op not in BACKEND_OPS]
        if bad or not self.ops:
            raise ConfigError(f"unknown operation(s) {bad}; accepted: {', '.join(BACKEND_OPS)}")
        if not self.sizes or min(self.sizes) < 1:
            raise ConfigError("object sizes must be at least 1 byte")
        if self.range_size < 1:
            raise ConfigError("range size must be at least 1 byte")
        if self.repetitions < 1:
            raise ConfigError("repetitions must be at least 1")
        if self.objects is not None and self.objects < 1:
            raise ConfigError("objects must be at least 1")

    def loads(self) -> list[LoadSpec]:
        return [
            LoadSpec(
                threads=t,
                processes=p,
                rate=self.rate,
                duration=self.duration,
                ops=self.op_count,
                warmup=self.warmup,
                max_errors=self.max_errors,
            )
            for p in self.processes
            for t in self.threads
        ]

    def object_count(self, size: int) -> int:
        if self.objects is not None:
            return self.objects
        return max(1, min(MAX_OBJECTS, OBJECT_BUDGET_BYTES // size))


def case_name(op: str, size: int, spec: LoadSpec) -> str:
    name = f"{op} {format_size(size)} x{spec.workers}"
    if spec.processes > 1:
        name += f" ({spec.processes}p*{spec.threads}t)"
    if spec.rate:
        name += f" @{spec.rate:g}/s"
    return name


@dataclass
class _Target:
    stack: StackSpec
    store: Backend | None = None
    ready: set[int] = field(default_factory=set)
    """Sizes whose objects are all written and verified."""
    written: set[int] = field(default_factory=set)


class StorageBench:
    """Runs the matrix, collecting cases into ``result`` as they finish."""

    def __init__(
        self,
        stacks: list[StackSpec],
        config: StorageConfig,
        *,
        suite: str = "backend",
        command: list[str] | None = None,
        reporter: Reporter | None = None,
    ):
        if not stacks:
            raise ConfigError("nothing to benchmark: give at least one URL")
        self.config = config
        self.prefix = config.prefix or default_prefix()
        self.targets = [_Target(s) for s in stacks]
        self.session = Session(
            suite,
            {**asdict(config), "prefix": self.prefix, "stacks": [s.describe() for s in stacks]},
            command,
            reporter,
        )
        self.reporter = self.session.reporter
        self.result = self.session.result
        larger = [s for s in config.sizes if s < config.range_size]
        if "get_range" in config.ops and larger:
            self.result.warnings.append(
                f"range size {format_size(config.range_size)} is larger than the "
                f"{', '.join(format_size(s) for s in larger)} objects: their get_range reads "
                "whole objects"
            )
        if max(config.processes) > 1 and "put" in config.ops:
            for stack in stacks:
                if stack.process_local:
                    self.result.warnings.append(
                        f"{stack.name} is per-process: puts from worker processes are not "
                        f"visible to the parent and are not read back"
                    )

    def run(self) -> tuple[BenchResult, BaseException | None]:
        """Run everything; never raises for benchmark failures (see module doc)."""
        return self.session.run(
            self._run_matrix,
            lambda error: self._cleanup(skip=isinstance(error, BackendUnavailableError)),
        )

    # -- the matrix ----------------------------------------------------------------------

    def _objects(self, size: int) -> ObjectSet:
        return ObjectSet(
            f"{self.prefix}/{format_size(size)}",
            size,
            self.config.object_count(size),
            self.config.seed,
        )

    def _run_matrix(self) -> None:
        cfg = self.config
        for size in cfg.sizes:
            objects = self._objects(size)
            for op in cfg.ops:
                for load in cfg.loads():
                    for rep, target in interleave(self.targets, cfg.repetitions):
                        self._run_case(target, objects, op, load, rep)

    def _store(self, target: _Target) -> Backend:
        if target.store is None:
            self.reporter.phase(f"opening {target.stack.name}")
            target.store = target.stack.open()
        return target.store

    def _run_case(
        self, target: _Target, objects: ObjectSet, op: str, load: LoadSpec, rep: int
    ) -> None:
        store = self._store(target)
        if op != "put" and objects.size not in target.ready:
            self._populate(target, store, objects)
        name = case_name(op, objects.size, load)
        workload = BackendWorkload(
            store, objects, op, self.config.range_size, self.config.seed + rep, self.config.verify
        )
        measurement = self.session.measure(name, target.stack.name, load, workload)
        if op == "put":
            target.written.add(objects.size)
        params = {
            "op": op,
            "size": objects.size,
            "range_size": min(self.config.range_size, objects.size) if op == "get_range" else None,
            "objects": objects.count,
            "seed": self.config.seed + rep,
            "verify": self.config.verify,
            "repetition": rep,
            "stack": target.stack.describe(),
        }

        def read_back(case: CaseResult) -> None:
            if op == "put":
                self._read_back(target, store, objects, case, load)

        self.session.record(
            name, target.stack.name, params, load, measurement, before_report=read_back
        )

    def _populate(self, target: _Target, store: Backend, objects: ObjectSet) -> None:
        self.reporter.phase(
            f"writing {objects.count} x {format_size(objects.size)} objects to "
            f"{target.stack.name} (untimed)"
        )
        target.written.add(objects.size)
        for i in range(objects.count):
            store.put(objects.key(i), objects.content(i))
        target.ready.add(objects.size)

    def _read_back(
        self, target: _Target, store: Backend, objects: ObjectSet, case: CaseResult, load: LoadSpec
    ) -> None:
        """Verify what the put case wrote (untimed); objects it never reached are skipped."""
        if not self.config.verify or (load.processes > 1 and target.stack.process_local):
            return
        self.reporter.phase(f"reading back {objects.count} objects to verify the puts")
        complete = True
        for i in range(objects.count):
            try:
                data = store.get(objects.key(i))
                case.bytes_verified += objects.verify(i, data)
            except NotFoundError:
                complete = False
            except IntegrityError as exc:
                complete = False
                case.verify_failures += 1
                case.errors += 1
                case.error_types["IntegrityError"] = case.error_types.get("IntegrityError", 0) + 1
                if len(case.error_samples) < 5:
                    case.error_samples.append(f"IntegrityError: {exc}")
        if complete:
            target.ready.add(objects.size)

    def _cleanup(self, skip: bool = False) -> None:
        """Delete what was written (unless ``keep``; skipped when the store is unreachable)."""
        for target in self.targets:
            store, target.store = target.store, None
            if store is None:
                continue
            if skip and target.written:
                self.result.warnings.append(
                    f"objects under {self.prefix} on {target.stack.name} were not deleted: "
                    f"the store is unavailable"
                )
            elif not self.config.keep:
                try:
                    for size in sorted(target.written):
                        for key in self._objects(size).all_keys():
                            store.delete(key)
                except (DcstoreError, OSError) as exc:
                    self.result.warnings.append(
                        f"could not delete the benchmark objects under {self.prefix} on "
                        f"{target.stack.name}: {exc}"
                    )
            with contextlib.suppress(Exception):
                store.close()
