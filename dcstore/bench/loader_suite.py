"""``dcstore bench loader``: what a training loop gets from ``ShardedDataset`` + ``DataLoader``.

The dataset is opened exactly as users open it (``ShardedDataset(url, cache=...,
keys=...)``, batched in the workers, ``DataLoader(batch_size=None)``, and with
``device`` through ``DeviceLoader``: pinned, copied on a side CUDA stream). A loop
takes batches and, when a step time is given, sleeps that long per batch to
stand in for the GPU step. Per case it reports samples/s and MB/s after the
first batch, the time to the first batch, the data-wait share (time blocked
in ``next()`` over the loop time), the distribution of per-batch waits, and the
peak resident memory of the main process and of the workers (psutil, sampled
every 20 ms). Forked workers share pages with the parent and each counts them in
its RSS, so the workers' sum is an upper bound.

``synthetic`` packs a dataset of fixed-size random samples first (untimed) at a
URL that must not hold a dataset yet, checks every sample read against what
was written (outside the timed loop), and deletes it afterwards unless ``keep``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dcstore.bench.measurement import Measurement
from dcstore.bench.payload import ObjectSet
from dcstore.bench.results import BenchResult
from dcstore.bench.runner import LoadSpec
from dcstore.bench.session import Reporter, Session
from dcstore.bench.stacks import StackSpec
from dcstore.bench.units import format_size
from dcstore.errors import ConfigError, IntegrityError, NotFoundError

SAMPLE_FIELD = "bin"


@dataclass(frozen=True)
class LoaderConfig:
    workers: tuple[int, ...] = (2,)
    batch_size: int = 64
    step_times: tuple[float, ...] = (0.0,)
    duration: float | None = 10.0
    """Stop a case after this many seconds (None: a whole epoch)."""
    batches: int | None = None
    prefetch_threads: int | None = None
    """None: ``ShardedDataset``'s own choice (``auto_prefetch_threads``)."""
    prefetch_bytes: int = 128 * 1024**2
    shuffle: bool = True
    seed: int = 0
    synthetic: int | None = None
    """Pack this many samples first (None: benchmark the dataset already at the URL)."""
    sample_size: int = 100 * 1024
    shard_size: int = 64 * 1024**2
    keep: bool = False
    verify: bool = True
    device: str | None = None
    """Feed batches through ``DeviceLoader`` to this device ("cuda", "cpu"); None: plain."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or min(self.workers) < 0 or min(self.step_times) < 0:
            raise ConfigError("batch size must be positive; workers and step times >= 0")
        if self.synthetic is not None and self.synthetic < 1:
            raise ConfigError("--synthetic needs a positive sample count")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate every sample's byte fields into one uint8 tensor (one copy per batch).

    Returns ``__key__`` (list), ``data`` (the tensor) and ``sizes`` (bytes per sample).
    """
    import torch

    keys, sizes, parts = [], [], []
    for sample in samples:
        fields = [
            np.frombuffer(value, dtype=np.uint8)
            for name, value in sample.items()
            if not name.startswith("__") and isinstance(value, bytes | bytearray | memoryview)
        ]
        keys.append(sample["__key__"])
        sizes.append(sum(f.size for f in fields))
        parts += fields
    data = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)
    return {"__key__": keys, "data": torch.from_numpy(data), "sizes": sizes}


class RssSampler:
    """Peak resident memory of this process and of its children, sampled in a thread."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak_main = self.peak_workers = self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        import psutil

        main = self._proc.memory_info().rss
        workers = 0
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                workers += child.memory_info().rss
        self.peak_main = max(self.peak_main, main)
        self.peak_workers = max(self.peak_workers, workers)
        self.peak_total = max(self.peak_total, main + workers)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


class LoaderBench:
    def __init__(
        self,
        stack: StackSpec,
        config: LoaderConfig,
        command: list[str] | None = None,
        reporter: Reporter | None = None,
    ):
        self.stack = stack
        self.config = config
        self.session = Session(
            "loader", {**asdict(config), "stacks": [stack.describe()]}, command, reporter
        )
        self.store: Any = None
        self.packed: list[str] = []
        self.expected: ObjectSet | None = None

    def run(self) -> tuple[BenchResult, BaseException | None]:
        return self.session.run(self._body, self._cleanup)

    def _body(self) -> None:
        cfg = self.config
        self.store = self.stack.open()
        if cfg.synthetic:
            self._pack()
        for workers in cfg.workers:
            for step in cfg.step_times:
                self._case(workers, step)

    def _pack(self) -> None:
        from dcstore.loaders import MANIFEST_KEY, ShardWriter

        cfg = self.config
        with contextlib.suppress(NotFoundError):
            self.store.head(MANIFEST_KEY)
            raise ConfigError(
                f"{self.stack.name} already holds a dataset: omit --synthetic to benchmark it, "
                f"or point --synthetic at an empty location"
            )
        # contents are rebuilt when checked, so the main process's RSS stays honest
        objects = ObjectSet("samples", cfg.sample_size, cfg.synthetic or 1, cfg.seed, keep=False)
        self.session.reporter.phase(
            f"packing {objects.count} samples of {format_size(cfg.sample_size)} into "
            f"{self.stack.name} (untimed)"
        )
        writer = ShardWriter(self.store, shard_size=cfg.shard_size)
        try:
            for i in range(objects.count):
                writer.write({"__key__": f"s{i:09d}", SAMPLE_FIELD: objects.content(i)})
            manifest = writer.close()
        except BaseException:
            writer.abort()
            self.packed = [s.key for s in writer.shards]
            raise
        self.packed = [s.key for s in manifest.shards] + [MANIFEST_KEY]
        self.expected = objects

    def _dataset(self) -> Any:
        from dcstore.loaders import ShardedDataset

        cfg = self.config
        ds = ShardedDataset(
            self.store,
            shuffle=cfg.shuffle,
            seed=cfg.seed,
            prefetch_bytes=cfg.prefetch_bytes,
            prefetch_threads=cfg.prefetch_threads,
        )
        return ds, ds.batched(cfg.batch_size, collate)

    def _case(self, workers: int, step: float) -> None:
        from torch.utils.data import DataLoader

        cfg = self.config
        raw, ds = self._dataset()
        name = f"bs{cfg.batch_size} w{workers}" + (f" step {step * 1000:g}ms" if step else "")
        load = LoadSpec(threads=1, duration=cfg.duration or 1e9, warmup=0.0)
        m = Measurement()
        samples = verify_ns = wait_ns = verified_in_window_ns = 0
        first_batch_s: float | None = None
        on_progress = self.session.reporter.case_started(f"{self.stack.name}: {name}", load)
        loader: Any = DataLoader(ds, batch_size=None, num_workers=workers)
        if cfg.device:
            from dcstore.loaders import DeviceLoader

            loader = DeviceLoader(loader, cfg.device)
        it: Any = None
        with RssSampler() as rss:
            start = time.monotonic_ns()
            try:
                it = iter(loader)
                batch = next(it, None)
                first = time.monotonic_ns()
                first_batch_s = (first - start) / 1e9
                m.window_start_ns = m.window_end_ns = first
                while batch is not None:
                    verify_ns += self._verify(batch, m)
                    batch = None  # the step frees the previous batch (not a data wait)
                    if step:
                        time.sleep(step)
                    before = time.monotonic_ns()
                    if self._done(m, before - first - verify_ns):
                        break
                    batch = next(it, None)
                    now = time.monotonic_ns()
                    if batch is None:
                        break
                    wait_ns += now - before
                    samples += len(batch["__key__"])
                    m.record(now - before, batch["data"].numel(), now - first, 10**9)
                    m.window_end_ns = now
                    verified_in_window_ns = verify_ns  # checks after the last batch don't count
                    if on_progress is not None:
                        on_progress(_progress(m, (now - start) / 1e9, load))
            except KeyboardInterrupt:
                m.interrupted = True
            except Exception as exc:
                m.add_error(exc)
                m.fatal = exc
            finally:
                del it  # shuts the workers down
        timed_s = max(1e-9, (m.window_end_ns - m.window_start_ns - verified_in_window_ns) / 1e9)
        wait_s = wait_ns / 1e9
        extra = {
            "samples": samples,
            "samples_per_s": samples / timed_s if samples else 0.0,
            "first_batch_s": first_batch_s,
            "data_wait_pct": 100.0 * wait_s / timed_s if m.ops else None,
            "step_s": step,
            "rss_main": rss.peak_main,
            "rss_workers": rss.peak_workers,
            "rss_total": rss.peak_total,
        }
        params = {
            "op": "load",
            "size": cfg.sample_size if cfg.synthetic else None,
            "batch_size": cfg.batch_size,
            "workers": workers,
            "step_s": step,
            "device": cfg.device,
            "dataset_samples": raw.manifest.num_samples,
            "dataset_bytes": raw.manifest.total_bytes,
            "seed": cfg.seed,
            "repetition": 0,
        }

        def timed_only(case: Any) -> None:
            # the throughput excludes the verification done in the loop
            case.elapsed_s = timed_s
            case.ops_per_s = case.ops / timed_s
            case.mb_per_s = case.bytes / timed_s / 1e6

        self.session.record(name, self.stack.name, params, load, m, extra, timed_only)

    def _done(self, m: Measurement, elapsed_ns: int) -> bool:
        cfg = self.config
        if cfg.batches is not None and m.ops >= cfg.batches:
            return True
        return cfg.duration is not None and elapsed_ns >= cfg.duration * 1e9

    def _verify(self, batch: dict[str, Any], m: Measurement) -> int:
        """Compare a batch with the packed samples; return the nanoseconds it took."""
        if self.expected is None or not self.config.verify:
            return 0
        start = time.monotonic_ns()
        data = batch["data"].cpu().numpy()
        offset = 0
        for key, size in zip(batch["__key__"], batch["sizes"], strict=True):
            index = int(key[1:])
            expected = np.frombuffer(self.expected.content(index), dtype=np.uint8)
            if not np.array_equal(data[offset : offset + size], expected):
                exc = IntegrityError(f"sample {key}: bytes read differ from bytes packed")
                m.add_error(exc)
                raise exc
            offset += size
            m.bytes_verified += size
        return time.monotonic_ns() - start

    def _cleanup(self, error: BaseException | None) -> None:
        if self.store is None:
            return
        if self.packed and not self.config.keep:
            with contextlib.suppress(Exception):
                for key in self.packed:
                    self.store.delete(key)
        with contextlib.suppress(Exception):
            self.store.close()


def _progress(m: Measurement, elapsed: float, load: LoadSpec) -> Any:
    from dcstore.bench.runner import Progress

    return Progress(m.ops, m.bytes, m.errors, elapsed, 0.0, load.duration, None)
