"""ShardedDataset vs webdataset, MosaicML Streaming and LitData (and a pread floor).

One synthetic dataset (default 20,000 samples of 90-110 KiB, ~64 MiB shards),
written once per format under --root (reused when present), page cache warmed,
then read for one epoch per run by each loader the way its docs recommend, shuffling
on for every loader (``--no-shuffle`` turns it off for all): ``DataLoader(num_workers=2,
batch_size=64)``, LitData through its ``StreamingDataLoader``; webdataset with shard
shuffling and a 1,000-sample shuffle buffer, Streaming with its default shuffle
algorithm, ShardedDataset and the pread floor with a seeded permutation. Interleaved
repetitions (loader order rotated each rep), in three variants:

``dcstore-zero-copy`` is ShardedDataset with ``zero_copy=True`` (fields as views of the
mapped shard instead of ``bytes``). ``dcstore-unchecked`` is ShardedDataset with
``verify_checksums=False``: no per-sample checksum (XXH3 over each record, on by default),
which none of the other libraries computes. ``dcstore-pread`` is ShardedDataset over a local store
that does not map its files
(``pread`` into window buffers, as before ``Backend.map_range``). ``dcstore-ring`` (and
``-encrypted``) is ShardedDataset (``zero_copy=True``) through ``RingLoader`` instead of
``DataLoader``: each worker collates its batches straight into reusable shared-memory
slots and the main process receives a slot number (``tensor``: the payloads; ``touch``: the
same reads as the collate's, per sample, their counts collated into the slot, so the main
process gets the same small tensor without a new shared-memory segment per batch). ``ring-floor`` is
the ceiling of that transport with no format at all: worker processes ``os.preadv`` the
payloads by manifest offsets straight into pre-faulted shared-memory slots, slot numbers
go through queues, the main process reads one byte per page and returns the slot.
``RingLoader`` keeps 4 batches in flight per worker by default (``DataLoader``'s is 2), so
``litdata-pf4`` (``tensor`` variant) gives the fastest library the same depth.

* ``touch``: the collate reads one byte per 4 KiB page of every payload in the
  worker and returns a tiny tensor (the storage and format path);
* ``count``: the same reads, returning plain ints. ``touch``'s tiny tensor costs every
  loader the same per batch (the worker moves it into a new shared-memory segment, the
  main process fetches that segment's descriptor from the worker: ~1 ms of CPU per batch
  of 64 on 2 vCPUs, main and worker together), so ``count`` shows the storage and format
  path without that fixed cost;
* ``tensor``: the collate copies the payloads into one shared-memory uint8
  tensor handed to the main process, which reads one byte per page of it
  (end to end).

The ``pread`` floor reads the same payload bytes with one ``os.pread`` per
sample from the plaintext tar files (one flat file per shard) by the
manifest's offsets. webdataset reads the plaintext ShardedDataset shards
(they are webdataset tars). Peak RSS and PSS are summed over the main
process and its workers (psutil, sampled every 100 ms); PSS in one more epoch per loader
after the timed ones, since reading it slows the loaders (see ``MemorySampler``).

Then, for ShardedDataset: time to first batch (manifest load + worker start +
first batch) and data-wait % with a fixed synthetic step (default 20 ms).

Usage: .venv/bin/python bench/loaders_compare.py [--reps 3] [--out bench/results/loaders.md]
Needs: pip install mosaicml-streaming litdata (bench-only).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import mmap
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dcstore.backends.local import LocalBackend
from dcstore.bench.machine import cpu_model
from dcstore.retry import RetryingBackend

POOL = np.random.default_rng(1234).integers(0, 256, 16 << 20, dtype=np.uint8).tobytes()
PAGE = 4096
RINGS = ("dcstore-ring", "dcstore-ring-encrypted")
TENSOR_ONLY = ("ring-floor", "litdata-pf4")


def runs(name: str, variant: str) -> bool:
    """Whether loader ``name`` is measured in ``variant``. ``count`` differs from ``touch``
    only by the DataLoader's tensor hand-off, which a RingLoader does not make: its
    ``touch`` rows stand for both."""
    if variant == "count":
        return name not in (*TENSOR_ONLY, *RINGS)
    return variant == "tensor" or name not in TENSOR_ONLY


def measured(names: list[str], args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(variant, loader) of every epoch to run, variant by variant, loaders in ``names``'
    order."""
    for variant in variants(args):
        for name in names:
            if runs(name, variant):
                yield variant, name


def payload_size(i: int, mean_kib: int) -> int:
    h = int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little"), digest_size=4).digest(), "little")
    return mean_kib * 1024 + (h % (20 * 1024)) - 10 * 1024


def payload(i: int, mean_kib: int) -> bytes:
    size = payload_size(i, mean_kib)
    start = (i * 7919 * 64) % (len(POOL) - size)
    return POOL[start : start + size]


# -- collates (identical for every loader) -------------------------------------------------


def _field(sample: Any) -> Any:
    return sample["bin"]


def collate_count(samples: list[Any]) -> tuple[int, int, int]:
    """Read one byte per page of every payload in the worker; return (samples, bytes, sum)
    as plain ints: no tensor for the DataLoader to hand over."""
    total = acc = 0
    for s in samples:
        a = np.frombuffer(_field(s), dtype=np.uint8)
        acc += int(a[::PAGE].sum())
        total += a.size
    return len(samples), total, acc


def collate_touch(samples: list[Any]) -> torch.Tensor:
    """``collate_count``'s reads, returned as a tiny tensor."""
    return torch.tensor(collate_count(samples), dtype=torch.int64)


def collate_tensor(samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy payloads into one shared-memory uint8 tensor (+ sizes) for the main process."""
    views = [np.frombuffer(_field(s), dtype=np.uint8) for s in samples]
    sizes = np.fromiter((v.size for v in views), dtype=np.int64, count=len(views))
    total = int(sizes.sum())
    if get_worker_info() is not None:  # as default_collate does: no extra copy to shm
        storage = torch.UntypedStorage._new_shared(total)
        out = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (total,), (1,))
    else:
        out = torch.empty(total, dtype=torch.uint8)
    arr = out.numpy()
    pos = 0
    for v in views:
        arr[pos : pos + v.size] = v
        pos += v.size
    return out, torch.from_numpy(sizes)


COLLATES: dict[str, Callable[[list[Any]], Any]] = {
    "touch": collate_touch, "count": collate_count, "tensor": collate_tensor,
}  # fmt: skip


def ring_fields(sample: dict[str, Any]) -> dict[str, Any]:
    return {"bin": sample["bin"]}


def ring_counts(sample: dict[str, Any]) -> dict[str, int]:
    """``collate_count``'s reads of one sample, for RingLoader to collate into its slot."""
    a = np.frombuffer(_field(sample), dtype=np.uint8)
    return {"pages": int(a[::PAGE].sum()), "bytes": a.size}


RING_MAPS = {"touch": ring_counts, "tensor": ring_fields}


def consume_ring(batch: dict[str, Any]) -> tuple[int, int]:
    """A RingLoader batch: its payloads are views packed back to back in one slot; read
    one byte per page of that span, as ``consume`` does of the ``tensor`` variant's tensor."""
    views = batch["bin"]
    first, last = views[0], views[-1]
    total = last.storage_offset() + last.numel() - first.storage_offset()
    span = torch.empty(0, dtype=torch.uint8).set_(
        first.untyped_storage(), first.storage_offset(), (total,)
    )
    int(span[::PAGE].sum())
    return len(views), sum(v.numel() for v in views)


def consume(batch: Any, variant: str) -> tuple[int, int]:
    """(samples, payload bytes) of a batch; the tensor variant reads it in the main process."""
    if isinstance(batch, dict) and "pages" in batch:  # RingLoader, touch: counts per sample
        return len(batch["bytes"]), int(batch["bytes"].sum())
    if variant in ("touch", "count"):
        return int(batch[0]), int(batch[1])
    if isinstance(batch, tuple) and isinstance(batch[0], int):  # RingFloor: read already
        return batch
    if isinstance(batch, dict):
        return consume_ring(batch)
    data, sizes = batch
    int(data[::PAGE].sum())
    return len(sizes), int(sizes.sum())


# -- datasets -------------------------------------------------------------------------------


class PreadFloor(IterableDataset):
    """The payload bytes read with one pread per sample from the plaintext tar shards."""

    def __init__(self, root: Path, manifest: Any, mean_kib: int, shuffle: bool):
        self.shuffle = shuffle
        self.files = [str(root / s.key) for s in manifest.shards]
        self.samples = [
            (shard, int(off) + 512, payload_size(int(manifest.starts[shard]) + j, mean_kib))
            for shard, s in enumerate(manifest.shards)
            for j, off in enumerate(s.offsets)
        ]

    def __iter__(self) -> Iterator[dict[str, bytes]]:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        order = np.arange(len(self.samples))
        if self.shuffle:
            order = np.random.default_rng(0).permutation(order)
        share = len(self.samples) // n + 1
        fds: dict[int, int] = {}
        try:
            for i in order[w * share : (w + 1) * share]:
                shard, off, size = self.samples[i]
                fd = fds.get(shard)
                if fd is None:
                    fd = fds[shard] = os.open(self.files[shard], os.O_RDONLY)
                yield {"bin": os.pread(fd, size, off)}
        finally:
            for fd in fds.values():
                os.close(fd)


def _ring_floor_worker(
    ring: torch.Tensor, files: list[str], work: list[list[tuple[int, int, int]]],
    slots: list[int], slot_bytes: int, free: Any, done: Any,
) -> None:  # fmt: skip
    """preadv each batch's payloads straight into a free slot; send the slot number."""
    view = memoryview(ring.numpy())
    fds = [os.open(f, os.O_RDONLY) for f in files]
    for batch in work:
        slot = free.get()
        pos = base = slot * slot_bytes
        for shard, off, size in batch:
            os.preadv(fds[shard], [view[pos : pos + size]], off)
            pos += size
        done.put((slot, len(batch), pos - base))
    done.put(None)


class RingFloor:
    """The ring transport's ceiling: no format, no checksums, one preadv per sample."""

    def __init__(self, floor: PreadFloor, batch: int, workers: int, slots: int = 4):
        self.floor, self.batch, self.workers, self.slots = floor, batch, workers, slots

    def __iter__(self) -> Iterator[tuple[int, int]]:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        order = np.arange(len(self.floor.samples))
        if self.floor.shuffle:
            order = np.random.default_rng(0).permutation(order)
        slot_bytes = self.batch * max(size for _, _, size in self.floor.samples)
        n = self.workers * self.slots
        ring = torch.zeros(n * slot_bytes, dtype=torch.uint8).share_memory_()  # pre-faulted
        arr = ring.numpy()
        done = ctx.Queue()
        procs, frees = [], []
        share = -(-len(order) // self.workers)
        for w in range(self.workers):
            mine = [self.floor.samples[i] for i in order[w * share : (w + 1) * share]]
            work = [mine[i : i + self.batch] for i in range(0, len(mine), self.batch)]
            free = ctx.Queue()
            slots = list(range(w * self.slots, (w + 1) * self.slots))
            for slot in slots:
                free.put(slot)
            p = ctx.Process(target=_ring_floor_worker, daemon=True, args=(
                ring, self.floor.files, work, slots, slot_bytes, free, done))  # fmt: skip
            p.start()
            procs.append(p)
            frees.append(free)
        running = self.workers
        while running:
            got = done.get()
            if got is None:
                running -= 1
                continue
            slot, count, nbytes = got
            start = slot * slot_bytes
            int(arr[start : start + nbytes : PAGE].sum())
            yield count, nbytes
            frees[slot // self.slots].put(slot)
        for p in procs:
            p.join()


class PreadOnly(RetryingBackend):
    """A local store that does not map its files: ShardedDataset as before map_range."""

    def map_range(
        self, key: str, start: int, end: int, *, version: str | None = None
    ) -> memoryview | None:
        return None


def litdata_item(i: int, kib: int) -> dict[str, bytes]:
    return {"bin": payload(i, kib)}


def prepare(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    """Write every format once (reused if complete); return dataset factories."""
    from dcstore.crypto import Keyring, write_key_file
    from dcstore.loaders import ShardedDataset, ShardWriter

    root = Path(args.root)
    plain, enc, key_file = root / "dcstore-plain", root / "dcstore-enc", root / "kek.json"
    n, kib, shard = args.samples, args.size_kib, args.shard_mib << 20
    if not key_file.exists():
        write_key_file(key_file, Keyring.generate())
    keys = f"file://{key_file}"
    for where, k in ((plain, None), (enc, keys)):
        if not (where / "manifest.parquet").exists():
            t0 = time.perf_counter()
            with ShardWriter(f"file://{where}", keys=k, shard_size=shard) as w:
                for i in range(n):
                    w.write({"__key__": f"s{i:08d}", "bin": payload(i, kib)})
            print(f"wrote {where.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    threads = args.prefetch_threads
    factories: dict[str, Callable[[], Any]] = {
        "dcstore": lambda: ShardedDataset(
            f"file://{plain}", shuffle=args.shuffle, seed=0, prefetch_threads=threads
        ),
        "dcstore-pread": lambda: ShardedDataset(
            PreadOnly(LocalBackend(str(plain))),
            shuffle=args.shuffle,
            seed=0,
            prefetch_threads=threads,
        ),
        "dcstore-encrypted": lambda: ShardedDataset(
            f"file://{enc}", keys=keys, shuffle=args.shuffle, seed=0, prefetch_threads=threads
        ),
    }

    def ring(where: Path, k: str | None) -> ShardedDataset:  # make_loader adds RingLoader
        return ShardedDataset(
            f"file://{where}",
            keys=k,
            shuffle=args.shuffle,
            seed=0,
            prefetch_threads=threads,
            zero_copy=True,
        )

    factories["dcstore-zero-copy"] = lambda: ShardedDataset(
        f"file://{plain}", shuffle=args.shuffle, seed=0, prefetch_threads=threads, zero_copy=True
    )
    factories["dcstore-unchecked"] = lambda: ShardedDataset(  # as the peers: no sample checksums
        f"file://{plain}", shuffle=args.shuffle, seed=0, prefetch_threads=threads,
        verify_checksums=False,
    )  # fmt: skip
    factories["dcstore-ring"] = lambda: ring(plain, None)
    factories["dcstore-ring-encrypted"] = lambda: ring(enc, keys)
    manifest = ShardedDataset(f"file://{plain}").manifest
    factories["pread-floor"] = lambda: PreadFloor(plain, manifest, kib, args.shuffle)
    factories["ring-floor"] = lambda: RingFloor(
        PreadFloor(plain, manifest, kib, args.shuffle), args.batch, args.workers
    )
    tars = [str(plain / s.key) for s in manifest.shards]
    try:
        import webdataset as wds

        def webdataset() -> Any:
            ds = wds.WebDataset(
                tars, shardshuffle=len(tars) if args.shuffle else False,
                nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
            )  # fmt: skip
            return ds.shuffle(1000) if args.shuffle else ds

        factories["webdataset"] = webdataset
    except ImportError:
        print("webdataset not installed: skipped", file=sys.stderr)
    try:
        from streaming import MDSWriter, StreamingDataset

        mds = root / "mds"
        if not (mds / "index.json").exists():
            t0 = time.perf_counter()
            with MDSWriter(out=str(mds), columns={"bin": "bytes"}, size_limit=shard) as w:
                for i in range(n):
                    w.write({"bin": payload(i, kib)})
            print(f"wrote mds in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

        def mosaic() -> Any:
            from streaming.base.util import clean_stale_shared_memory

            clean_stale_shared_memory()
            return StreamingDataset(local=str(mds), shuffle=args.shuffle, batch_size=args.batch)

        factories["mosaicml-streaming"] = mosaic
    except ImportError:
        print("mosaicml-streaming not installed: skipped", file=sys.stderr)
    try:
        import litdata

        lit = root / "litdata"
        if not (lit / "index.json").exists():
            t0 = time.perf_counter()
            make = functools.partial(litdata_item, kib=kib)
            litdata.optimize(
                fn=make, inputs=list(range(n)), output_dir=str(lit), chunk_bytes=shard,
                num_workers=2, mode="overwrite", verbose=False,
            )  # fmt: skip
            print(f"wrote litdata in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        factories["litdata"] = lambda: litdata.StreamingDataset(
            input_dir=str(lit), shuffle=args.shuffle
        )
        factories["litdata-pf4"] = factories["litdata"]
    except ImportError:
        print("litdata not installed: skipped", file=sys.stderr)
    return factories


def warm_page_cache(root: Path) -> None:
    buf = bytearray(8 << 20)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


# -- measurement ----------------------------------------------------------------------------


def _pss(pid: int) -> int:
    """PSS from /proc/PID/smaps_rollup (psutil's full smaps walk is far too slow here)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class MemorySampler:
    """Peak summed RSS (and, with ``pss``, PSS) of this process and its children, and
    the children's CPU time (last reading before each exits), sampled every 100 ms.

    PSS is read only in the separate memory epochs: reading ``smaps_rollup`` walks a
    process's page tables holding its memory-map lock, and at 10 Hz it cost the loaders
    that map their files samples/s on 2 vCPUs (alternated: ShardedDataset 17 %, LitData
    11 %)."""

    def __init__(self, pss: bool = False) -> None:
        self.rss = self.pss = 0
        self.with_pss = pss
        self.child_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.1):
            rss = pss = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error, OSError):
                    rss += p.memory_info().rss
                    if self.with_pss:
                        pss += _pss(p.pid)
                    if p.pid != me.pid:
                        t = p.cpu_times()
                        self.child_cpu[p.pid] = t.user + t.system
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_loader(name: str, ds: Any, variant: str, args: argparse.Namespace) -> Any:
    """The loader each library's docs recommend: LitData's own, else torch's DataLoader;
    ours through RingLoader for the ``dcstore-ring`` rows."""
    from dcstore.loaders import RingLoader

    if name in RINGS:
        return RingLoader(ds.map(RING_MAPS[variant]), args.batch, num_workers=args.workers)
    if name == "ring-floor":
        return ds  # RingFloor: already a loader
    collate = COLLATES[variant]
    loader_class: Any = DataLoader
    extra = {}
    if name.startswith("litdata"):
        from litdata import StreamingDataLoader

        loader_class = StreamingDataLoader
    if name == "litdata-pf4":  # RingLoader's default depth, given to the fastest peer too
        extra["prefetch_factor"] = 4
    return loader_class(
        ds, batch_size=args.batch, num_workers=args.workers, collate_fn=collate, **extra
    )


def warm_up(name: str, factory: Callable[[], Any], variant: str, args: argparse.Namespace) -> None:
    """Untimed: the first ``--warmup-batches`` batches of a loader, so no loader's first
    repetition carries the run's one-off costs (imports, first worker forks, allocator)."""
    loader = make_loader(name, factory(), variant, args)
    it = iter(loader)
    for _, batch in zip(range(args.warmup_batches), it, strict=False):
        consume(batch, variant)
    del it, loader
    gc.collect()  # the warm-up's workers and buffers are gone before anything is timed


def run_epoch(
    name: str, factory: Callable[[], Any], variant: str, args: argparse.Namespace,
    pss: bool = False,
) -> dict:  # fmt: skip
    """One timed epoch; ``pss``: the memory epoch (PSS sampled, which slows the loaders)."""
    with MemorySampler(pss) as mem:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        loader = make_loader(name, factory(), variant, args)
        samples = nbytes = 0
        first = None
        for batch in loader:
            n, b = consume(batch, variant)
            samples, nbytes = samples + n, nbytes + b
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        cpu = time.process_time() - cpu0
    cpu += sum(mem.child_cpu.values())
    steady = end - (first or end)
    return {
        "samples": samples,
        "samples_s": samples / (end - t0),
        "mb_s": nbytes / 1e6 / (end - t0),
        "first_batch_s": (first or end) - t0,
        "steady_samples_s": samples / steady if steady else 0.0,
        "cpu_us": 1e6 * cpu / max(samples, 1),
        "rss_mib": mem.rss / 2**20,
        "pss_mib": mem.pss / 2**20,
    }


def _gpu_step(ms: float) -> Callable[[Any], None]:
    """A CUDA step of about ``ms`` milliseconds (a calibrated spin kernel), synchronised."""
    cycles = 10_000_000
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    per_ms = cycles / ((time.perf_counter() - t0) * 1e3)

    def step(batch: Any) -> None:
        data, _sizes = batch
        data[:: PAGE * 16].float().sum()
        torch.cuda._sleep(int(per_ms * ms))
        torch.cuda.synchronize()

    return step


def data_wait(factory: Callable[[], Any], args: argparse.Namespace) -> dict:
    """Data-wait % of a loop with a fixed step, through DeviceLoader (the step is a CUDA
    spin kernel on a GPU, else a sleep after reading the batch)."""
    from dcstore.loaders import DeviceLoader

    cuda = torch.cuda.is_available() and not args.cpu_step
    t0 = time.perf_counter()
    loader = DataLoader(factory(), batch_size=args.batch, num_workers=args.workers,
                        collate_fn=collate_tensor, pin_memory=cuda)  # fmt: skip
    feed = DeviceLoader(loader, "cuda" if cuda else "cpu", warmup=args.warmup_steps)
    if cuda:
        step = _gpu_step(args.step_ms)
    else:

        def step(batch: Any) -> None:
            consume(batch, "tensor")
            time.sleep(args.step_ms / 1000)

    for batch in feed:
        step(batch)
    s = feed.summary()
    s["total_s"] = time.perf_counter() - t0
    s["device"] = "cuda" if cuda else "cpu"
    return s


def raw_cipher_us(args: argparse.Namespace, reps: int = 20) -> float:
    """CPU us to AES-256-GCM-decrypt one mean payload with ``cryptography`` directly, in
    the format's default 4 MiB segments (the bound encrypted reads are held to)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    segment = 4 << 20
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, POOL[:segment], b"ad")
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(reps):
            aead.decrypt(nonce, sealed, b"ad")
        best = min(best, (time.process_time() - t0) / (reps * segment))
    return 1e6 * best * args.size_kib * 1024


def _decrypt_files(files: list[Path]) -> tuple[float, int]:
    """(CPU s, bytes) to AES-256-GCM-decrypt ``files`` in 4 MiB segments, mapped, into
    one reused buffer, under a random key (each tag check fails after the full work).
    Only the decrypts are timed: each file is mapped with ``MAP_POPULATE`` first, as the
    loaders map their windows, plaintext or not (so mapping is not encryption's cost; with
    pages faulted in one by one the bound swung from 25 to 44-50 us between runs)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    segment, tag = 4 << 20, 16
    aead, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(12)
    out = memoryview(bytearray(segment))
    done, cpu = 0, 0.0
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    for path in files:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, flags, mmap.PROT_READ) as mapped:
            view = memoryview(mapped)
            t0 = time.process_time()
            for start in range(0, len(view) - segment - tag + 1, segment + tag):
                with contextlib.suppress(InvalidTag):
                    aead.decrypt_into(nonce, view[start : start + segment + tag], b"", out)
                done += segment
            cpu += time.process_time() - t0
            view.release()
    return cpu, done


def raw_cipher_streamed_us(args: argparse.Namespace, processes: int = 1) -> float:
    """CPU us per mean payload to AES-256-GCM-decrypt the encrypted shards' own bytes the
    way a reader meets them: mapped from the (warm) page cache, 4 MiB segments into one
    reused buffer, every shard once (the bound from the bytes' side: they are not in the
    CPU's caches, unlike the repeated segment of :func:`raw_cipher_us`). ``processes``
    > 1: that many processes at once, each on its share of the shards, as the loader's
    workers decrypt side by side (sharing the memory bus and the CPUs' caches)."""
    from concurrent.futures import ProcessPoolExecutor

    files = sorted((Path(args.root) / "dcstore-enc" / "shards").rglob("*.tar"))
    if processes <= 1:
        parts = [_decrypt_files(files)]
    else:
        with ProcessPoolExecutor(processes) as pool:
            parts = list(pool.map(_decrypt_files, [files[i::processes] for i in range(processes)]))
    cpu, done = sum(c for c, _ in parts), sum(d for _, d in parts)
    return 1e6 * cpu / max(done, 1) * args.size_kib * 1024


def variants(args: argparse.Namespace) -> list[str]:
    return [v for v in args.variants.split(",") if v]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--size-kib", type=int, default=100)
    p.add_argument("--shard-mib", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup-batches", type=int, default=20, help="untimed, per loader, first")
    p.add_argument("--variants", default="touch,count,tensor", help='"" measures data-wait only')
    p.add_argument("--only", default="", help="comma-separated loader names")
    p.add_argument("--step-ms", type=float, default=20.0)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--root", default="bench/results/tmp/loaders")
    p.add_argument("--out", default="")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                   help="read in storage order (every loader); default: shuffle all")  # fmt: skip
    p.add_argument("--cpu-step", action="store_true", help="sleep for the step even with CUDA")
    p.add_argument("--no-pss", dest="pss", action="store_false",
                   help="skip the untimed epochs that measure peak PSS")  # fmt: skip
    p.add_argument("--prefetch-threads", type=int, default=None,
                   help="ShardedDataset's prefetch_threads (default: its own choice)")  # fmt: skip
    args = p.parse_args()
    args.root = str(Path(args.root).resolve())
    Path(args.root).mkdir(parents=True, exist_ok=True)
    if not args.prepare_only:
        # Write the datasets in a child process: litdata.optimize leaves this process
        # with a state that made every later epoch start 30x slower (first batch 3-5 s).
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--prepare-only"], check=True)
    factories = prepare(args)
    if args.only:
        factories = {k: v for k, v in factories.items() if k in args.only.split(",")}
    if args.prepare_only:
        return 0
    warm_page_cache(Path(args.root))
    results: dict[tuple[str, str], list[dict]] = {}
    names = list(factories)
    for variant, name in measured(names, args):
        warm_up(name, factories[name], variant, args)
    encrypted = "dcstore-encrypted" in factories or "dcstore-ring-encrypted" in factories
    streamed: list[float] = []  # the cipher's bound, once per rep: the host's speed drifts
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        if encrypted:
            streamed.append(raw_cipher_streamed_us(args))
        for variant, name in measured(order, args):
            r = run_epoch(name, factories[name], variant, args)
            results.setdefault((variant, name), []).append(r)
            print(
                f"rep {rep} {variant:6} {name:20} {r['samples_s']:8.0f} samples/s "
                f"cpu {r['cpu_us']:5.0f} us/sample "
                f"{r['mb_s']:7.0f} MB/s first {r['first_batch_s']:.2f}s "
                f"rss {r['rss_mib']:.0f} MiB",
                file=sys.stderr,
            )
    if args.pss:  # peak PSS: one more epoch per loader, apart from the timed ones
        for variant, name in measured(names, args):
            r = run_epoch(name, factories[name], variant, args, pss=True)
            for timed in results[(variant, name)]:
                timed["pss_mib"] = r["pss_mib"]
            print(f"memory {variant:6} {name:20} pss {r['pss_mib']:.0f} MiB", file=sys.stderr)
    waits = {n: data_wait(factories[n], args) for n in ("dcstore", "dcstore-encrypted")
             if n in factories}  # fmt: skip
    args.raw_cipher_us = raw_cipher_us(args)
    args.raw_cipher_streamed = streamed
    args.raw_cipher_streamed_us = statistics.median(streamed) if streamed else 0.0
    args.raw_cipher_parallel_us = (
        raw_cipher_streamed_us(args, args.workers) if encrypted and args.workers > 1 else 0.0
    )
    report = render(args, results, waits)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


def per_rep(what: str, rows: dict, name: str, others: tuple[str, ...]) -> str:
    """Ratios within each repetition (the loaders of one rep ran back to back)."""
    ratios = [
        rep["samples_s"] / max(rows[o][i]["samples_s"] for o in others if o in rows)
        for i, rep in enumerate(rows[name])
    ]
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    return f"\n{what}, per rep: {listed} (median {statistics.median(ratios):.2f}x)"


def render(args: argparse.Namespace, results: dict, waits: dict) -> str:
    libs = ("webdataset", "mosaicml-streaming", "litdata", "litdata-pf4")
    lines = [
        "# Loader comparison: one epoch, DataLoader("
        f"num_workers={args.workers}, batch_size={args.batch})",
        "",
        f"{args.samples} samples of {args.size_kib} KiB +-10 KiB, {args.shard_mib} MiB shards, "
        f"page cache warm, shuffling {'on' if args.shuffle else 'off'} for every loader, "
        f"{args.warmup_batches} untimed warm-up batches per loader first, then "
        f"{args.reps} interleaved reps (median shown; samples/s counts from "
        "DataLoader creation, so it includes worker start-up; LitData through its "
        "StreamingDataLoader).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"torch {torch.__version__}, "
        f"load average at the end {os.getloadavg()[0]:.1f}; `{' '.join(sys.argv)}`",
        "",
    ]
    for variant in variants(args):
        rows = {name: r for (v, name), r in results.items() if v == variant}
        med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in rows.items()}
        best_lib = max((med[n]["samples_s"] for n in libs if n in med), default=0.0)
        least_cpu = min((med[n]["cpu_us"] for n in libs if n in med), default=0.0)
        lines += [f"## variant `{variant}`", "",
                  "| loader | samples/s | MB/s | x fastest library | CPU us/sample | "
                  "x least-CPU library | first batch s | peak RSS MiB | peak PSS MiB (own epoch) | "
                  "reps (samples/s) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for name, m in sorted(med.items(), key=lambda kv: -kv[1]["samples_s"]):
            ratio = f"{m['samples_s'] / best_lib:.2f}" if best_lib else "-"
            cpu_ratio = f"{least_cpu / m['cpu_us']:.2f}" if least_cpu else "-"
            reps = ", ".join(f"{x['samples_s']:.0f}" for x in rows[name])
            lines.append(
                f"| {name} | {m['samples_s']:.0f} | {m['mb_s']:.0f} | {ratio} | "
                f"{m['cpu_us']:.0f} | {cpu_ratio} | {m['first_batch_s']:.2f} | "
                f"{m['rss_mib']:.0f} | {f'{pss:.0f}' if (pss := m['pss_mib']) else '-'} | "
                f"{reps} |"
            )
        for plain in ("dcstore", "dcstore-ring"):
            enc_name = f"{plain}-encrypted" if plain != "dcstore" else "dcstore-encrypted"
            if plain not in med or enc_name not in med:
                continue
            enc = med[enc_name]["samples_s"] / med[plain]["samples_s"]
            enc_cpu = med[plain]["cpu_us"] / med[enc_name]["cpu_us"]
            extra = med[enc_name]["cpu_us"] - med[plain]["cpu_us"]
            raw, streamed = args.raw_cipher_us, args.raw_cipher_streamed_us
            parallel = args.raw_cipher_parallel_us
            side_by_side = ""
            if parallel:
                side_by_side = (f"; {extra / parallel:.2f}x it in {args.workers} processes at "
                                f"once, as the workers run ({parallel:.1f} us)")  # fmt: skip
            lines += ["", f"{enc_name} / {plain}: {enc:.2f}x samples/s, {enc_cpu:.2f}x by CPU; "
                      f"encryption adds {extra:.0f} CPU us/sample = {extra / raw:.2f}x the raw "
                      f"AES-256-GCM decrypt of a mean payload ({raw:.1f} us, `cryptography`, "
                      "4 MiB segments, same run), "
                      f"{extra / max(streamed, 1e-9):.2f}x the same decrypt streamed from the "
                      f"encrypted shards in the page cache ({streamed:.1f} us, median of "
                      f"one measure per rep: "
                      f"{', '.join(f'{x:.1f}' for x in args.raw_cipher_streamed)})"
                      + side_by_side]  # fmt: skip
            lines.append(per_rep(f"{enc_name} / {plain}", rows, enc_name, (plain,)))
            paired = [  # within each rep: the two ran back to back
                (e["cpu_us"] - p["cpu_us"]) / max(bound, 1e-9)
                for e, p, bound in zip(
                    rows[enc_name], rows[plain], args.raw_cipher_streamed, strict=True
                )
            ]
            lines.append(
                f"\nencryption's extra CPU per rep / that rep's streamed decrypt: "
                f"{', '.join(f'{x:.2f}' for x in paired)} "
                f"(median {statistics.median(paired):.2f}x)"
            )
        for ours in ("dcstore", "dcstore-ring"):
            if ours in med and any(n in med for n in libs):
                lines.append(per_rep(f"{ours} / fastest library", rows, ours, libs))
        lines.append("")
    if waits:
        lines += [f"## ShardedDataset with a {args.step_ms:g} ms synthetic step "
                  f"(tensor variant, {args.warmup_steps} warm-up steps excluded; on CUDA the "
                  "step is a spin kernel and batches go through DeviceLoader, pinned)", "",
                  "| dataset | step on | steps | data-wait % | wait p50 ms | wait p99 ms | "
                  "first batch s |",
                  "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for name, s in waits.items():
            lines.append(
                f"| {name} | {s['device']} | {s['steps']:.0f} | {s['data_wait_pct']:.2f} | "
                f"{s['wait_p50_ms']:.2f} | {s['wait_p99_ms']:.2f} | {s['first_batch_s']:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
