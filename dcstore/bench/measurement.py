"""What a run measured: counts, latency histogram, timeline and errors; merges across
threads and processes and travels between processes as plain data."""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dcstore.bench.histogram import LatencyHistogram
from dcstore.errors import DcstoreError, IntegrityError

_MAX_ERROR_SAMPLES = 5


@dataclass
class Measurement:
    """What a run measured; merges across threads and processes."""

    ops: int = 0
    bytes: int = 0
    errors: int = 0
    warmup_ops: int = 0
    bytes_verified: int = 0
    verify_failures: int = 0
    window_start_ns: int = 0
    window_end_ns: int = 0
    """End of the measured window: the last measured completion (or the planned end)."""
    first_start_ns: int = 0
    """Closed loop: when the first measured operation of any worker started (0: none).
    Before it every worker was still finishing a warm-up operation, so the window starts
    there, not at the warm-up's end: an overrunning warm-up is not measured time."""
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    timeline_ops: list[int] = field(default_factory=list)
    timeline_bytes: list[int] = field(default_factory=list)
    error_types: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    fatal: BaseException | None = None
    interrupted: bool = False

    @property
    def elapsed_s(self) -> float:
        start = max(self.window_start_ns, self.first_start_ns)
        return max(0, self.window_end_ns - start) / 1e9

    def add_error(self, exc: BaseException) -> None:
        self.errors += 1
        if isinstance(exc, IntegrityError):
            self.verify_failures += 1
        self.error_types[type(exc).__name__] += 1
        text = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if len(self.error_samples) < _MAX_ERROR_SAMPLES and text not in self.error_samples:
            self.error_samples.append(text)

    def record(self, latency_ns: int, nbytes: int, offset_ns: int, interval_ns: int) -> None:
        self.ops += 1
        self.bytes += nbytes
        self.histogram.record(latency_ns)
        bucket = max(0, offset_ns) // interval_ns
        while len(self.timeline_ops) <= bucket:
            self.timeline_ops.append(0)
            self.timeline_bytes.append(0)
        self.timeline_ops[bucket] += 1
        self.timeline_bytes[bucket] += nbytes

    def merge(self, other: Measurement) -> Measurement:
        for name in (
            "ops", "bytes", "errors", "warmup_ops", "bytes_verified", "verify_failures",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.window_start_ns = self.window_start_ns or other.window_start_ns
        self.window_end_ns = max(self.window_end_ns, other.window_end_ns)
        starts = [t for t in (self.first_start_ns, other.first_start_ns) if t]
        self.first_start_ns = min(starts, default=0)
        self.histogram.merge(other.histogram)
        for mine, theirs in (
            (self.timeline_ops, other.timeline_ops),
            (self.timeline_bytes, other.timeline_bytes),
        ):
            mine.extend([0] * (len(theirs) - len(mine)))
            for i, value in enumerate(theirs):
                mine[i] += value
        self.error_types.update(other.error_types)
        for sample in other.error_samples:
            if len(self.error_samples) < _MAX_ERROR_SAMPLES and sample not in self.error_samples:
                self.error_samples.append(sample)
        self.fatal = self.fatal or other.fatal
        self.interrupted = self.interrupted or other.interrupted
        return self

    def to_wire(self) -> dict[str, Any]:
        """A picklable form for the trip from a worker process."""
        state = dict(self.__dict__)
        state["histogram"] = self.histogram.encode()
        state["overflows"] = self.histogram.overflows
        state["fatal"] = portable_exception(self.fatal)
        return state

    @classmethod
    def from_wire(cls, state: dict[str, Any]) -> Measurement:
        state = dict(state)
        hist = LatencyHistogram.decode(state.pop("histogram"))
        hist.overflows = state.pop("overflows")
        return cls(**{**state, "histogram": hist})


def portable_exception(exc: BaseException | None) -> BaseException | None:
    """``exc`` if it survives pickling, else a DcstoreError with its message."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, checked for a round trip
    except Exception:
        return DcstoreError(f"{type(exc).__name__}: {exc}")
    exc.__traceback__ = None
    return exc
