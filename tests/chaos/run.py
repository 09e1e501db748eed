"""The chaos run: rounds of a 2-rank x 2-worker training read over encrypted datasets on
HDFS (behind the Redis Cluster tier) and Cassandra (behind the Memcached tier), while the
seeded schedule injects faults and a parallel pack writes each round a new generation
of one dataset.

Asserted per epoch and dataset: every sample delivered exactly once across the ranks,
with the bytes of the generation its manifest names; the epoch ends within
``EPOCH_BOUND`` seconds. Per pack: it commits whole or leaves the previous generation
current (the next round reads it whole). Every error a user would see is one line.

Long run (from the repo root): ``PYTHONPATH=tests:. python -m chaos.run --faults 300``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.data import SAMPLES, expected, fingerprint, pack
from chaos.schedule import NODE_FAULTS, Injector, plan
from chaos.stack import ChaosStack
from dcstore import ShardedDataset, open_store
from dcstore.loaders import load_manifest

REPO = Path(__file__).resolve().parents[2]
EPOCH_BOUND = 120.0  # seconds one epoch of one dataset may take under faults
RETRIES = 12  # attempts per origin call: ~10 s of backoff, longer than any one fault
WORLD, WORKERS = 2, 2


@dataclass
class Report:
    rounds: int = 0
    epochs: int = 0
    samples_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong_bytes: int = 0
    hangs: int = 0
    slowest_epoch: float = 0.0
    errors: list[str] = field(default_factory=list)  # errors the readers surfaced
    packs: Counter[str] = field(default_factory=Counter)  # committed / failed
    pack_errors: list[str] = field(default_factory=list)
    disk_full: str = "not tried"
    injected: Counter[str] = field(default_factory=Counter)
    harness: list[str] = field(default_factory=list)  # failures of the harness itself

    def problems(self) -> list[str]:
        """Every broken promise; empty when the run passed."""
        found = [f"{n} {what}" for n, what in ((self.lost, "samples lost"),
                 (self.duplicated, "samples duplicated"), (self.wrong_bytes, "wrong bytes"),
                 (self.hangs, "hangs")) if n]  # fmt: skip
        found += [f"reader error: {e}" for e in self.errors]
        found += [f"multi-line error: {e!r}" for e in self.errors if "\n" in e]
        found += [f"multi-line error: {e!r}" for e in self.pack_errors if "\n" in e]
        found += self.harness
        if self.slowest_epoch > EPOCH_BOUND:
            found.append(f"an epoch took {self.slowest_epoch:.0f} s (bound {EPOCH_BOUND:.0f} s)")
        return found

    def summary(self) -> str:
        return json.dumps({**self.__dict__, "faults": sum(self.injected.values())}, indent=1)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ChaosRun:
    """One seeded run over a started :class:`ChaosStack`."""

    def __init__(
        self, stack: ChaosStack, work: Path, seed: int, faults: int, retries: int = RETRIES
    ) -> None:
        self.stack, self.work, self.seed, self.retries = stack, work, seed, retries
        keyfile = work / "kek.json"
        from dcstore.crypto import Keyring, write_key_file

        write_key_file(keyfile, Keyring.generate())
        self.keys = f"file://{keyfile}"
        root = f"run-{seed}-{int(time.time())}"
        self.datasets: list[dict[str, str]] = []
        if stack.hdfs is not None:
            self.datasets.append({"name": "hdfs", "url": stack.hdfs_url(root),
                                  "cache": stack.redis_url})  # fmt: skip
        if stack.cassandra:
            self.datasets.append({"name": "cassandra", "url": stack.cassandra_url(root),
                                  "cache": stack.memcached_url})  # fmt: skip
        self.generation = {d["name"]: 0 for d in self.datasets}
        nodes = [k for k in NODE_FAULTS if _available(stack, k)]
        self.injector = Injector(stack, plan(seed, faults, sorted(stack.links), nodes))
        self.report = Report()

    def store(self, dataset: dict[str, str]) -> Any:
        return open_store(dataset["url"], keys=self.keys, retries=self.retries)

    def run(self, min_rounds: int = 1, epochs: int = 2) -> Report:
        for d in self.datasets:  # generation 0, before any fault
            with self.store(d) as store:
                pack(store, 0)
        self.injector.start()
        disk = threading.Thread(target=self._disk_full, daemon=True)
        disk.start()
        try:
            while self.report.rounds < min_rounds or not self.injector.exhausted:
                self._round(epochs)
        finally:
            self.injector.stop()
            self.stack.proxy.reset()
            disk.join(timeout=120)
        self.report.injected = self.injector.injected
        self.report.harness += self.injector.failures
        for d in self.datasets:  # after the storm: the current generation reads whole
            self._check_final(d)
        return self.report

    def _round(self, epochs: int) -> None:
        r = self.report.rounds
        target = self.datasets[r % len(self.datasets)]
        before = dict(self.generation)
        datasets = self._pinned(r)  # once for every rank, as a launcher must (docs/pack.md)
        packer = threading.Thread(target=self._pack, args=(target, before[target["name"]] + 1))
        packer.start()
        outs = self._read(datasets, epochs, r)
        packer.join(timeout=EPOCH_BOUND * 2)
        if packer.is_alive():
            self.report.hangs += 1
            self.report.harness.append(f"round {r}: the pack of {target['name']} hung")
        for d in self.datasets:
            name = d["name"]
            allowed = {before[name], self.generation[name]}
            for epoch in range(epochs):
                self._check_epoch(name, epoch, [o.get((name, epoch)) for o in outs], allowed)
        self.report.rounds += 1

    def _pack(self, dataset: dict[str, str], generation: int) -> None:
        try:
            with self.store(dataset) as store:
                pack(store, generation)
            self.generation[dataset["name"]] = generation
            self.report.packs["committed"] += 1
        except Exception as exc:
            self.report.packs["failed"] += 1
            self.report.pack_errors.append(_one_line(exc))

    def _pinned(self, r: int) -> list[dict[str, str]]:
        """The datasets, each with the version of its current manifest: every rank reads
        that one, even if the round's pack commits while the ranks start."""
        pinned = []
        for d in self.datasets:
            try:
                with self.store(d) as store:
                    pinned.append({**d, "version": load_manifest(store).version})
            except Exception as exc:  # the ranks then open the current manifest each
                self.report.harness.append(f"round {r}: {d['name']}'s version: {_one_line(exc)}")
                pinned.append(d)
        return pinned

    def _read(
        self, datasets: list[dict[str, str]], epochs: int, r: int
    ) -> list[dict[tuple[str, int], dict[str, Any]]]:
        """Run the ranks as processes; return each rank's records by (dataset, epoch)."""
        procs, outs = [], []
        env = dict(os.environ, PYTHONPATH=f"{REPO / 'tests'}:{REPO}")
        for rank in range(WORLD):
            out = self.work / f"round{r}-rank{rank}.json"
            spec = {"datasets": datasets, "keys": self.keys, "retries": self.retries,
                    "seed": self.seed + r, "rank": rank, "world": WORLD, "workers": WORKERS,
                    "epochs": epochs, "out": str(out)}  # fmt: skip
            spec_path = self.work / f"round{r}-rank{rank}.spec.json"
            spec_path.write_text(json.dumps(spec))
            log = open(self.work / f"round{r}-rank{rank}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen([sys.executable, "-m", "chaos.reader", str(spec_path)],
                                          cwd=REPO, env=env, stdout=log, stderr=log))  # fmt: skip
            outs.append(out)
        deadline = time.monotonic() + 60 + EPOCH_BOUND * epochs * len(self.datasets)
        for rank, proc in enumerate(procs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.report.hangs += 1
                self.report.harness.append(f"round {r}: rank {rank} still reading at the bound")
            if proc.returncode not in (0, -9):
                self.report.harness.append(f"round {r}: rank {rank} exited {proc.returncode}")
        records = []
        for out in outs:
            found = json.loads(out.read_text()) if out.exists() else []
            records.append({(x["dataset"], x["epoch"]): x for x in found})
            for x in found:
                if x["epoch"] < 0:
                    self.report.errors.append(f"{x['dataset']} open: {x['error']}")
        return records

    def _check_epoch(self, name: str, epoch: int, ranks: list[Any], allowed: set[int]) -> None:
        rep = self.report
        rep.epochs += 1
        if any(x is None for x in ranks):
            rep.harness.append(f"{name} epoch {epoch}: a rank recorded nothing")
            rep.lost += SAMPLES
            return
        for x in ranks:
            rep.slowest_epoch = max(rep.slowest_epoch, x["seconds"])
            if "error" in x:
                rep.errors.append(f"{name} epoch {epoch}: {x['error']}")
        generations = {x["generation"] for x in ranks}
        if len(generations) != 1 or not generations <= allowed:
            rep.harness.append(
                f"{name} epoch {epoch}: generations {generations}, allowed {allowed}"
            )
        seen = Counter(k for x in ranks for k in x.get("keys", []))
        rep.samples_checked += sum(seen.values())
        rep.lost += SAMPLES - len(seen)
        rep.duplicated += sum(n - 1 for n in seen.values())
        rep.wrong_bytes += sum(len(x.get("bad", [])) for x in ranks)

    def _check_final(self, dataset: dict[str, str]) -> None:
        name = dataset["name"]
        with self.store(dataset) as store:
            ds = ShardedDataset(store)
            generation = int(ds.manifest.metadata["generation"])
            got = dict(fingerprint(s) for s in ds)
        if generation != self.generation[name]:
            self.report.harness.append(f"{name}: current generation {generation}, "
                                       f"last committed {self.generation[name]}")  # fmt: skip
        want = expected(generation)
        if got != want:
            self.report.harness.append(f"{name}: the final clean read differs")

    def _disk_full(self) -> None:
        """A pack onto a nearly full disk (a 1 MiB tmpfs, needs root) while the run goes on:
        one-line StorageFullError, the previous version still current and whole."""
        mount = self.work / "small-disk"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            self.report.disk_full = f"skipped: cannot mount a tmpfs ({done.stderr.strip()})"
            return
        try:
            url = f"file://{mount}/ds"
            from dcstore.loaders import ShardWriter

            with ShardWriter(url, keys=self.keys, metadata={"generation": "0"}) as w:
                w.write({"__key__": "only", "bin": b"small"})
            try:
                pack(open_store(url, keys=self.keys), 1)
                self.report.harness.append("disk full: a 2 MB pack fit on a 1 MiB disk")
            except Exception as exc:
                line = _one_line(exc)
                self.report.disk_full = line
                if "\n" in line or "StorageFullError" not in line:
                    self.report.harness.append(f"disk full: unexpected error {line!r}")
            ds = ShardedDataset(url, keys=self.keys)
            if ds.manifest.metadata["generation"] != "0" or [s["__key__"] for s in ds] != ["only"]:
                self.report.harness.append("disk full: the previous version is not current")
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _available(stack: ChaosStack, kind: str) -> bool:
    if kind in ("stop_datanode", "restart_namenode"):
        return stack.hdfs is not None
    if kind == "freeze_cassandra":
        return bool(stack.cassandra)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=300, help="faults to inject in all")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per round")
    parser.add_argument(
        "--retries",
        type=int,
        default=RETRIES,
        help="attempts per origin call (1: no retries, a negative control)",
    )
    parser.add_argument("--no-cassandra", action="store_true")
    parser.add_argument("--no-hdfs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dcstore-chaos-") as tmp:
        work = Path(tmp)
        stack = ChaosStack(work, hdfs=not args.no_hdfs, cassandra=not args.no_cassandra)
        started = time.monotonic()
        try:
            stack.start()
            chaos = ChaosRun(stack, work, args.seed, args.faults, args.retries)
            report = chaos.run(epochs=args.epochs)
        finally:
            with contextlib.suppress(Exception):
                stack.stop()
        print(report.summary())
        print("\n".join(chaos.injector.log[-5:]))
        print(f"wall {time.monotonic() - started:.0f} s; problems: {report.problems() or 'none'}")
        return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
