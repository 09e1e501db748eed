"""``dcstore bench cache``: the read paths through the hot tier, and the hit ratio.

Three paths over the same objects, interleaved within each repetition:

* ``origin``: the stack without the cache (``open_store(url, keys=...)``): the baseline.
* ``hit``: the cached stack (``open_store(url, cache=..., keys=...)``) after every
  object was read once: each read is a hit (one origin ``head`` plus the tier).
* ``miss``: the cached stack where every read misses: after each read (outside the
  timed window) the object is rewritten through the cached stack, which changes
  its version and drops its chunks. Each read pays the origin read plus the fill.
  Throughput for this path is over timed time only: workers / mean latency.

Each case reports the hit ratio and bytes from cache and origin measured by
:class:`~dcstore.cache.CachedBackend` itself (``stats()`` deltas), so the path is
checked, not assumed. Worker threads only: the counters are per process.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from dcstore.backends.base import Backend
from dcstore.bench.payload import ObjectSet
from dcstore.bench.results import BenchResult, CaseResult
from dcstore.bench.runner import LoadSpec
from dcstore.bench.session import Reporter, Session, default_prefix, interleave
from dcstore.bench.stacks import StackSpec
from dcstore.bench.units import format_size
from dcstore.bench.workloads import BackendWorkload, Check, Operation, worker_rng
from dcstore.errors import BackendUnavailableError, ConfigError, DcstoreError

PATHS = ("origin", "miss", "hit")
OPS = ("get", "get_range")


def find_cached(store: Backend) -> Any:
    """The :class:`CachedBackend` inside a stack (following ``inner``), or None."""
    from dcstore.cache import CachedBackend

    layer: Any = store
    while layer is not None:
        if isinstance(layer, CachedBackend):
            return layer
        layer = getattr(layer, "inner", None)
    return None


@dataclass(frozen=True)
class CacheConfig:
    cache: str = "memory"
    ops: tuple[str, ...] = ("get",)
    paths: tuple[str, ...] = PATHS
    sizes: tuple[int, ...] = (1024**2,)
    range_size: int = 64 * 1024
    threads: tuple[int, ...] = (1,)
    duration: float | None = 3.0
    op_count: int | None = None
    warmup: float = 0.5
    objects: int = 16
    seed: int = 0
    verify: bool = True
    max_errors: int = 0
    repetitions: int = 1
    prefix: str | None = None

    def __post_init__(self) -> None:
        if not self.ops or any(op not in OPS for op in self.ops):
            raise ConfigError(f"cache benchmark operations are {', '.join(OPS)}")
        if not self.paths or any(p not in PATHS for p in self.paths):
            raise ConfigError(f"cache paths are {', '.join(PATHS)}")
        if self.objects < 1 or self.repetitions < 1:
            raise ConfigError("objects and repetitions must be at least 1")


@dataclass
class MissWorkload(BackendWorkload):
    """Reads through the cache; the untimed check verifies and then rewrites the object,
    so its next read misses. Workers walk the objects round-robin from their own offset."""

    def operation(self, worker: int, workers: int) -> Operation:
        objects, store, verify = self.objects.build(), self.store, self.verify
        rng = worker_rng(self.seed, worker)
        counter = iter(range(worker, 1 << 62, workers))
        span = min(self.range_size, objects.size)
        whole = self.op == "get"

        def read() -> tuple[int, Check | None]:
            index = next(counter) % objects.count
            key = objects.key(index)
            if whole:
                start, end = 0, objects.size
                data = store.get(key)
            else:
                start = rng.randrange(objects.size - span + 1)
                end = start + span
                data = store.get_range(key, start, end)

            def verify_and_invalidate() -> int:
                checked = objects.verify(index, data, start, end) if verify else 0
                store.put(key, objects.content(index))
                return checked

            return len(data), verify_and_invalidate

        return read


class CacheBench:
    def __init__(
        self,
        stack: StackSpec,
        config: CacheConfig,
        command: list[str] | None = None,
        reporter: Reporter | None = None,
    ):
        self.config = config
        self.prefix = config.prefix or default_prefix()
        self.origin_spec = StackSpec(
            stack.url, None, stack.keys, stack.options, stack.retries, stack.label
        )
        self.cached_spec = StackSpec(
            stack.url, config.cache, stack.keys, stack.options, stack.retries, stack.label
        )
        self.session = Session(
            "cache",
            {
                **asdict(config),
                "prefix": self.prefix,
                "stacks": [self.origin_spec.describe(), self.cached_spec.describe()],
            },
            command,
            reporter,
        )
        self.stores: dict[str, Backend] = {}
        self.written: list[ObjectSet] = []

    def run(self) -> tuple[BenchResult, BaseException | None]:
        from dcstore.bench.compare import summarize

        result, error = self.session.run(self._body, self._cleanup)
        result.summary = summarize(result)
        return result, error

    def _body(self) -> None:
        cfg = self.config
        self.session.reporter.phase(f"opening {self.cached_spec.name}")
        origin = self.stores["origin"] = self.origin_spec.open()
        cached = self.stores["cached"] = self.cached_spec.open()
        tiered = find_cached(cached)
        if tiered is None:
            raise ConfigError("the cached stack has no CachedBackend")
        # A read through a tier that is down goes to the origin (never failing it): the
        # "hit" rows would then measure the origin. Ask the tier first; down is an error.
        tiered.tier.read_stats()
        for size in cfg.sizes:
            objects = ObjectSet(f"{self.prefix}/{format_size(size)}", size, cfg.objects, cfg.seed)
            self.session.reporter.phase(
                f"writing {objects.count} x {format_size(size)} objects (untimed)"
            )
            self.written.append(objects)
            for i in range(objects.count):
                cached.put(objects.key(i), objects.content(i))
            for op in cfg.ops:
                for t in cfg.threads:
                    load = LoadSpec(
                        threads=t,
                        duration=cfg.duration,
                        ops=cfg.op_count,
                        warmup=cfg.warmup,
                        max_errors=cfg.max_errors,
                    )
                    for rep, path in interleave(list(cfg.paths), cfg.repetitions):
                        store = origin if path == "origin" else cached
                        self._case(path, store, objects, op, load, rep)

    def _case(
        self, path: str, store: Backend, objects: ObjectSet, op: str, load: LoadSpec, rep: int
    ) -> None:
        cfg = self.config
        cached = find_cached(store)
        if path == "hit":
            self.session.reporter.phase("reading every object once to fill the cache (untimed)")
            for i in range(objects.count):
                store.get(objects.key(i))
        elif path == "miss":
            self.session.reporter.phase("rewriting every object to start cold (untimed)")
            for i in range(objects.count):
                store.put(objects.key(i), objects.content(i))
        before = cached.stats() if cached is not None else None
        kind = MissWorkload if path == "miss" else BackendWorkload
        workload = kind(store, objects, op, cfg.range_size, cfg.seed + rep, cfg.verify)
        name = f"{op} {format_size(objects.size)} x{load.workers}"
        target = f"{path}"
        measurement = self.session.measure(name, target, load, workload)
        extra: dict[str, Any] = {}
        if cached is not None and before is not None:
            after = cached.stats()
            delta = {k: after[k] - before[k] for k in after if k != "hit_ratio"}
            reads = delta.get("hits", 0) + delta.get("misses", 0)
            extra = {
                "hit_ratio": delta.get("hits", 0) / reads if reads else 0.0,
                "hits": delta.get("hits", 0),
                "misses": delta.get("misses", 0),
                "bytes_from_cache": delta.get("bytes_from_cache", 0),
                "bytes_from_origin": delta.get("bytes_from_origin", 0),
                "cache_errors": delta.get("errors", 0),
            }
        params = {
            "op": op,
            "size": objects.size,
            "path": path,
            "cache": self.cached_spec.describe()["cache"],
            "range_size": min(cfg.range_size, objects.size) if op == "get_range" else None,
            "objects": objects.count,
            "seed": cfg.seed + rep,
            "verify": cfg.verify,
            "repetition": rep,
        }

        def timed_only(case: CaseResult) -> None:
            # closed loop: each worker is busy only during timed ops, so the rate over
            # timed time is workers / mean latency
            mean_us = case.latency_us.get("mean")
            if path != "miss" or not case.ops or not mean_us:
                return
            case.extra["wall_mb_per_s"] = case.mb_per_s
            case.extra["throughput_basis"] = "timed time (rewrites excluded)"
            case.ops_per_s = load.workers / (mean_us / 1e6)
            case.mb_per_s = case.ops_per_s * (case.bytes / case.ops) / 1e6

        self.session.record(name, target, params, load, measurement, extra, timed_only)

    def _cleanup(self, error: BaseException | None) -> None:
        cached = self.stores.pop("cached", None)
        origin = self.stores.pop("origin", None)
        if cached is not None and not isinstance(error, BackendUnavailableError):
            try:
                for objects in self.written:
                    for key in objects.all_keys():
                        cached.delete(key)  # through the cache: drops the chunks too
            except (DcstoreError, OSError) as exc:
                self.session.warn(f"could not delete the objects under {self.prefix}: {exc}")
        for store in (cached, origin):
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()
