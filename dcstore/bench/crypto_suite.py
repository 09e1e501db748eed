"""``dcstore bench crypto``: our encrypted format next to raw AES-GCM on the same buffers.

Two implementations, interleaved within each repetition:

* ``aesgcm``: one-shot ``cryptography`` ``AESGCM.encrypt`` / ``decrypt`` of the
  whole buffer (a fresh random nonce per encryption): the ceiling.
* ``dcstore``: :class:`~dcstore.crypto.EncryptedBackend` ``put`` / ``get`` over an
  in-process store that keeps references (no copies), so the figure is our
  format's whole cost: per-object data key and its wrapping, segmenting, tags,
  header parsing and authentication of every segment.

Decryptions are checked against the plaintext (outside the timed window). The
ratio dcstore / aesgcm is computed within each repetition.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range, check_version
from dcstore.bench.payload import ObjectSet
from dcstore.bench.results import BenchResult
from dcstore.bench.runner import LoadSpec
from dcstore.bench.session import Reporter, Session, interleave
from dcstore.bench.units import format_size
from dcstore.bench.workloads import Check, Operation, worker_rng
from dcstore.errors import ConfigError, NotFoundError

IMPLS = {"aesgcm": "raw AESGCM (cryptography)", "dcstore": "dcstore EncryptedBackend"}
DIRECTIONS = ("encrypt", "decrypt")
_versions = itertools.count(1)


class HoldingBackend(Backend):
    """A dict of references: ``put`` keeps the caller's buffer, ``get`` returns it.

    For isolating encryption costs only; not a general store (no copies, no
    pickling of contents: each process starts empty).
    """

    def __init__(self) -> None:
        self._objects: dict[str, tuple[Buffer, str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._objects = {}

    @property
    def url(self) -> str:
        return "memory://bench-holding"

    def _entry(self, key: str, version: str | None = None) -> tuple[Buffer, str]:
        try:
            entry = self._objects[key]
        except KeyError:
            raise NotFoundError(f"{self.url}: no object {key!r}") from None
        check_version(self.url, key, version, entry[1])
        return entry

    def get(self, key: str, *, version: str | None = None) -> bytes:
        return self._entry(key, version)[0]  # type: ignore[return-value]

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        data = self._entry(key, version)[0]
        check_range(key, start, end, len(data))
        return bytes(memoryview(data)[start:end])

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        version = f"h{next(_versions)}"
        self._objects[key] = (data, version)
        return ObjectMeta(key, memoryview(data).nbytes, version)

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        data, version = self._entry(key, version)
        return ObjectMeta(key, memoryview(data).nbytes, version)

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        for key in sorted(k for k in self._objects if k.startswith(prefix)):
            yield self.head(key)

    def delete(self, key: str) -> None:
        self._objects.pop(key, None)


@dataclass(frozen=True)
class CryptoConfig:
    sizes: tuple[int, ...] = (64 * 1024, 1024**2, 4 * 1024**2)
    directions: tuple[str, ...] = DIRECTIONS
    threads: tuple[int, ...] = (1,)
    processes: tuple[int, ...] = (1,)
    duration: float | None = 3.0
    op_count: int | None = None
    warmup: float = 0.5
    buffers: int = 4
    seed: int = 0
    repetitions: int = 3
    segment_size: int | None = None
    """dcstore segment size (default: the format's default)."""
    segment_threads: int = 1
    verify: bool = True
    max_errors: int = 0

    def __post_init__(self) -> None:
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise ConfigError(f"unknown direction(s) {bad}; accepted: encrypt, decrypt")
        if self.buffers < 1 or self.repetitions < 1:
            raise ConfigError("buffers and repetitions must be at least 1")


@dataclass
class CryptoWorkload:
    """One implementation and direction over the buffers of ``objects``."""

    impl: str
    direction: str
    objects: ObjectSet
    aes_key: bytes
    key_file: str
    segment_size: int | None
    segment_threads: int
    seed: int
    verify: bool
    _state: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_state": {}}

    def _prepare(self) -> dict[str, Any]:
        """Per process, once: the cipher objects and, for decryption, the ciphertexts."""
        state = self._state
        lock = state.setdefault("lock", threading.Lock())
        with lock:
            if "ready" in state:
                return state
            objects = self.objects.build()
            if self.impl == "aesgcm":
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM

                aead = AESGCM(self.aes_key)
                state["aead"] = aead
                if self.direction == "decrypt":
                    sealed = []
                    for i in range(objects.count):
                        nonce = os.urandom(12)
                        ad = objects.key(i).encode()
                        sealed.append((nonce, aead.encrypt(nonce, objects.content(i), ad), ad))
                    state["sealed"] = sealed
            else:
                from dcstore.crypto import EncryptedBackend

                options = {"threads": self.segment_threads}
                if self.segment_size:
                    options["segment_size"] = self.segment_size
                store = EncryptedBackend(HoldingBackend(), f"file://{self.key_file}", **options)
                state["store"] = store
                if self.direction == "decrypt":
                    for i in range(objects.count):
                        store.put(objects.key(i), objects.content(i))
            state["ready"] = True
            return state

    def operation(self, worker: int, workers: int) -> Operation:
        state = self._prepare()
        objects, verify = self.objects, self.verify
        rng = worker_rng(self.seed, worker)
        if self.impl == "aesgcm":
            aead = state["aead"]
            if self.direction == "encrypt":

                def encrypt() -> tuple[int, Check | None]:
                    i = rng.randrange(objects.count)
                    aead.encrypt(os.urandom(12), objects.content(i), objects.key(i).encode())
                    return objects.size, None

                return encrypt
            sealed = state["sealed"]

            def decrypt() -> tuple[int, Check | None]:
                i = rng.randrange(objects.count)
                nonce, blob, ad = sealed[i]
                plain = aead.decrypt(nonce, blob, ad)
                return len(plain), (lambda: objects.verify(i, plain)) if verify else None

            return decrypt
        store = state["store"]
        if self.direction == "encrypt":

            def put() -> tuple[int, Check | None]:
                i = rng.randrange(objects.count)
                store.put(objects.key(i), objects.content(i))
                return objects.size, None

            return put

        def get() -> tuple[int, Check | None]:
            i = rng.randrange(objects.count)
            plain = store.get(objects.key(i))
            return len(plain), (lambda: objects.verify(i, plain)) if verify else None

        return get

    def finish(self) -> None:
        self._state.clear()


def run_crypto(
    config: CryptoConfig, command: list[str] | None = None, reporter: Reporter | None = None
) -> tuple[BenchResult, BaseException | None]:
    """Run the matrix size x direction x load x repetition x implementation."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from dcstore.crypto import DEFAULT_SEGMENT_SIZE, Keyring, write_key_file

    session = Session(
        "crypto",
        {
            **asdict(config),
            "segment_size": config.segment_size or DEFAULT_SEGMENT_SIZE,
            "implementations": IMPLS,
        },
        command,
        reporter,
    )
    tmp = tempfile.TemporaryDirectory(prefix="dcstore-bench-keys-")
    key_file = str(Path(tmp.name) / "kek.json")

    def body() -> None:
        write_key_file(key_file, Keyring.generate())
        aes_key = AESGCM.generate_key(bit_length=256)
        for size in config.sizes:
            objects = ObjectSet(f"bench/{format_size(size)}", size, config.buffers, config.seed)
            for direction in config.directions:
                for p in config.processes:
                    for t in config.threads:
                        load = LoadSpec(
                            threads=t,
                            processes=p,
                            duration=config.duration,
                            ops=config.op_count,
                            warmup=config.warmup,
                            max_errors=config.max_errors,
                        )
                        for rep, impl in interleave(list(IMPLS), config.repetitions):
                            workload = CryptoWorkload(
                                impl, direction, objects, aes_key, key_file,
                                config.segment_size, config.segment_threads,
                                config.seed + rep, config.verify,
                            )  # fmt: skip
                            name = f"{direction} {format_size(size)} x{load.workers}"
                            measurement = session.measure(name, IMPLS[impl], load, workload)
                            workload.finish()
                            params = {
                                "op": direction,
                                "size": size,
                                "impl": impl,
                                "buffers": config.buffers,
                                "seed": config.seed + rep,
                                "repetition": rep,
                            }
                            session.record(name, IMPLS[impl], params, load, measurement)

    def cleanup(error: BaseException | None) -> None:
        with contextlib.suppress(OSError):
            tmp.cleanup()

    from dcstore.bench.compare import summarize

    result, error = session.run(body, cleanup)
    result.summary = summarize(result)
    return result, error
