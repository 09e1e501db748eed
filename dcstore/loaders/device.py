"""Feeding a device: pinned batches copied on a side CUDA stream, and data-wait metering.

``DeviceLoader(loader, device)`` wraps any iterable of batches (tensors, or
tuples/lists/dicts of them). Guarantees:

* Batches are received from ``loader`` in a background thread, ``depth``
  ahead (:class:`~dcstore.loaders.receive.Received`; ``depth=0`` receives in
  the caller's thread): ``DataLoader``'s inter-process hand-off then overlaps
  the caller's step instead of counting as data-wait. Order and exceptions
  are the loader's.
* On CUDA, that thread also pins each batch (unless already pinned), and
  batch ``n+1`` is copied to the device on a side stream while the caller
  runs step ``n``; the batch handed out is ready for the current stream (it
  waits on the copy's event and the tensors are recorded on the consuming
  stream, so memory is not reused early). Non-tensor leaves pass through
  unchanged.
* Without CUDA (or ``device="cpu"``) batches are handed out as received: the
  same code runs everywhere. A :class:`~dcstore.loaders.ringloader.RingLoader`
  is received ahead like any loader; its ``hold`` is raised to ``depth + 2`` so
  the batches waiting in the queue and the one in use keep their slots. On
  CUDA its batches are pinned (one copy out of the slot, which frees it) and
  copied like any other.
* Resumable: when ``loader`` has ``state_dict()`` (``StatefulDataLoader``,
  :class:`~dcstore.loaders.ringloader.RingLoader`), its state is taken as each batch
  is received, travels with the batch, and :meth:`DeviceLoader.state_dict` returns
  the one of the last batch handed out: batches received ahead and not yet handed
  out are not counted as consumed, so a resumed run starts right after the last
  batch the caller got. :meth:`DeviceLoader.load_state_dict` loads into ``loader``.
* Every loader measures, per step, the time the caller waited for data (time
  spent inside ``next()``) and the whole step time (from one ``next()`` to
  the next). :meth:`DataWaitMeter.summary` reports data-wait % of step time,
  skipping ``warmup`` steps (``DeviceLoader``'s default: one per
  ``DataLoader`` worker, at least one — each worker's first batch includes
  its start-up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from dcstore.loaders.receive import Received, ReceiverHandle
from dcstore.loaders.ringloader import RingLoader


@dataclass
class DataWaitMeter:
    """Per-step data-wait and step times (seconds) of one pass over a loader."""

    warmup: int = 1
    waits: list[float] = field(default_factory=list, repr=False)
    steps: list[float] = field(default_factory=list, repr=False)
    first_batch: float | None = None

    def __repr__(self) -> str:
        return f"DataWaitMeter({self.format()})" if self.waits else "DataWaitMeter(no steps yet)"

    def wrap(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Yield from ``batches``, recording how long each ``next()`` blocked."""
        it = iter(batches)
        start = time.perf_counter()
        previous = None
        held: list[Any] = []  # popped before yielding: the caller alone decides when it is freed
        while True:
            t0 = time.perf_counter()
            if previous is not None:
                self.steps.append(t0 - previous)
            try:
                held.append(next(it))
            except StopIteration:
                return
            t1 = time.perf_counter()
            self.waits.append(t1 - t0)
            if self.first_batch is None:
                self.first_batch = t1 - start
            previous = t0
            yield held.pop()

    def summary(self) -> dict[str, float]:
        """Steps, data-wait % of step time after warm-up, median/p99 wait, first batch."""
        n = min(len(self.waits), len(self.steps))
        waits, steps = self.waits[self.warmup : n], self.steps[self.warmup : n]
        total = sum(steps)
        ordered = sorted(waits) or [0.0]
        return {
            "steps": float(len(self.waits)),
            "data_wait_pct": 100.0 * sum(waits) / total if total else 0.0,
            "wait_p50_ms": 1e3 * ordered[len(ordered) // 2],
            "wait_p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "first_batch_s": self.first_batch or 0.0,
        }

    def format(self) -> str:
        s = self.summary()
        return (
            f"data-wait {s['data_wait_pct']:.2f}% of step time over {int(s['steps'])} steps "
            f"(p50 {s['wait_p50_ms']:.2f} ms, p99 {s['wait_p99_ms']:.2f} ms); "
            f"first batch {s['first_batch_s']:.2f} s"
        )


def _map(obj: Any, fn: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map(o, fn) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _use_device(device: torch.device) -> Callable[[], None]:
    """Make ``device`` current in the calling thread (index resolved here, in the caller's)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return lambda: torch.cuda.set_device(index)


def _pin(batch: Any) -> Any:
    """CPU tensors pinned (unless already); tensors on a device left as they are."""
    return _map(batch, lambda t: t if t.device.type != "cpu" or t.is_pinned() else t.pin_memory())


class _WithStates:
    """``(batch, loader.state_dict() right after it)`` for each batch of ``loader``
    (``None`` for the state when ``resumable`` is false), in the thread iterating it."""

    def __init__(self, loader: Iterable[Any], resumable: bool):
        self.loader, self.resumable = loader, resumable

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        state_of = self.loader.state_dict if self.resumable else None  # type: ignore[attr-defined]
        for batch in self.loader:
            yield batch, (state_of() if state_of is not None else None)
            del batch


def _on_batch(fn: Callable[[Any], Any]) -> Callable[[tuple[Any, Any]], tuple[Any, Any]]:
    return lambda pair: (fn(pair[0]), pair[1])


class DeviceLoader:
    """Iterate ``loader`` with batches moved to ``device``, overlapping the copy."""

    def __init__(self, loader: Iterable[Any], device: str | torch.device | None = None, *,
                 warmup: int | None = None, depth: int = 2):  # fmt: skip
        if warmup is None:
            warmup = max(1, int(getattr(loader, "num_workers", 0) or 0))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if depth < 0:
            raise ValueError("depth must be >= 0")
        if isinstance(loader, RingLoader):  # batches received ahead hold their slots: the
            # ``depth`` queued, the one the consumer just took and the one it still holds
            # until its loop variable is rebound; give them up only past those
            loader.hold = max(loader.hold, depth + 3)
        self.loader = loader
        self.device = torch.device(device)
        self.warmup = warmup
        self.depth = depth
        self.meter = DataWaitMeter(warmup)
        self._receiver: ReceiverHandle | None = None
        self._resumable = callable(getattr(loader, "state_dict", None))
        self._state: Any = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def state_dict(self) -> Any:
        """``loader``'s state after the last batch handed out (before the first one of
        a pass: its state when the pass began)."""
        if not self._resumable:
            raise TypeError(f"{type(self.loader).__name__} has no state_dict() to resume from")
        return self._state if self._state is not None else self.loader.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: Any) -> None:
        """Resume ``loader`` at ``state`` (from the next ``iter``)."""
        self.loader.load_state_dict(state)  # type: ignore[attr-defined]
        self._state = None

    def __repr__(self) -> str:
        return f"DeviceLoader({self.loader!r}, device={str(self.device)!r}, depth={self.depth})"

    def __iter__(self) -> Iterator[Any]:
        self.meter = DataWaitMeter(self.warmup)
        if self._receiver is not None:  # an abandoned pass may still hold the loader
            self._receiver.stop()
            self._receiver = None
        self._state = self._loader_state() if self._resumable else None
        tracking = self._state is not None  # a loader that cannot say its state: no tracking
        pairs = _WithStates(self.loader, tracking)
        prepare = _on_batch(_pin) if self.cuda else None
        receiver = None
        if self.depth:
            setup = _use_device(self.device) if self.cuda else None
            receiving = Received(pairs, self.depth, prepare, setup=setup)
            self._receiver = receiver = receiving.handle()
            received: Iterator[tuple[Any, Any]] = receiving
        else:
            received = map(prepare, pairs) if prepare else iter(pairs)
        staged = self._staged(received) if self.cuda else received
        return self.meter.wrap(self._handed_out(staged, tracking, receiver))

    def _loader_state(self) -> Any:
        """``loader.state_dict()``, or None if it cannot give one (a ``RingLoader`` over a
        dataset that does not resume: :meth:`state_dict` then raises its error)."""
        try:
            return self.loader.state_dict()  # type: ignore[attr-defined]
        except Exception:  # whatever the loader raises, state_dict() raises it again
            return None

    def _handed_out(
        self, pairs: Iterator[tuple[Any, Any]], tracking: bool, receiver: ReceiverHandle | None
    ) -> Iterator[Any]:
        """The batches, remembering the loader's state as of each one handed out, and
        once the pass is over, the loader's state then (an epoch's end). However the
        pass ends (a ``break`` included), its receiving thread is stopped and joined: left
        running, it was still driving the loader (and its workers) as the interpreter
        shut down, which aborted the process."""
        try:
            for batch, state in pairs:
                if tracking:
                    self._state = state
                yield batch
                del batch
            if tracking:
                self._state = self.loader.state_dict()  # type: ignore[attr-defined]
        finally:
            if receiver is not None:
                receiver.stop()
                if self._receiver is receiver:
                    self._receiver = None

    def _staged(self, pinned: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        pending: list[tuple[Any, torch.cuda.Event, Any]] = []
        for batch, state in pinned:
            with torch.cuda.stream(stream):
                moved = _map(batch, lambda t: t.to(self.device, non_blocking=True))
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record(stream)
            del batch  # the caching host allocator keeps it until the copy is done
            pending.append((moved, event, state))
            del moved
            if len(pending) > 1:
                yield self._ready(*pending.pop(0))
        if pending:
            yield self._ready(*pending.pop())

    def _ready(self, batch: Any, event: torch.cuda.Event, state: Any) -> tuple[Any, Any]:
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)
        return _map(batch, lambda t: (t.record_stream(current), t)[1]), state

    def summary(self) -> dict[str, float]:
        return self.meter.summary()
