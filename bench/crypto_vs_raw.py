"""Encrypted shards vs raw AES-GCM, and encrypted vs plaintext reads through a backend.

Usage::

    .venv/bin/python bench/crypto_vs_raw.py [--object-mib 64] [--repeat 5] [--min-time 0.4]
        [--threads 1,2] [--segments-mib 1,4,16] [--read-mib 16,256] [--dir /var/tmp/x]
        [--out bench/results/crypto.md]

Sections (all measured in one run, interleaved, median of ``--repeat``):

1. cipher layer on the same buffers, preallocated outputs: dcstore's segment
   encryption/decryption (``ObjectCipher.encrypt_into`` / ``decrypt_into``) vs
   raw ``AESGCM.encrypt_into`` / ``decrypt_into`` over the same segment-sized
   chunks, and raw ``AESGCM.encrypt`` / ``decrypt`` (allocating bytes), for each
   segment size, on 1 and 2 threads (aggregate MB/s; each thread has its own
   output buffer).
2. size overhead of the format at 4 MiB segments.
3. ``EncryptedBackend(LocalBackend).get`` vs ``LocalBackend.get`` of a
   plaintext copy, page cache warm, 1 and 2 reader threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dcstore.backends.local import LocalBackend
from dcstore.bench.machine import cpu_model
from dcstore.crypto import EncryptedBackend, Keyring
from dcstore.crypto.format import TAG_SIZE, Layout, segment_nonce
from dcstore.crypto.segments import ObjectCipher

MiB = 1 << 20


def rate(fns: list[Callable[[], int]], min_time: float) -> float:
    """Aggregate MB/s of thread ``i`` running ``fns[i]`` (returns bytes done) repeatedly."""
    for fn in fns:
        fn()  # warm up: buffers faulted in, caches hot
    barrier = threading.Barrier(len(fns) + 1)
    totals = [0] * len(fns)
    stop = threading.Event()

    def worker(i: int) -> None:
        barrier.wait()
        while not stop.is_set():
            totals[i] += fns[i]()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(len(fns))]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(min_time)
    stop.set()
    for t in pool:
        t.join()
    return sum(totals) / (time.perf_counter() - t0) / 1e6


def measure(cases: dict[str, Callable[[], Callable[[], int]]], threads: int, args) -> dict:
    """Interleave the cases ``repeat`` times; median MB/s each. A case is a factory
    making one closure (with its own output buffers) per thread."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, factory in cases.items():
            samples[name].append(rate([factory() for _ in range(threads)], args.min_time))
    return {name: statistics.median(v) for name, v in samples.items()}


def cipher_cases(data: bytes, segment: int) -> dict[str, Callable[[], Callable[[], int]]]:
    keyring = Keyring.generate("bench-kek")
    header, dek = keyring.new_header(segment)
    cipher = ObjectCipher(header, dek, "bench/object.tar", "bench")
    layout = cipher.layout(len(data))
    blob = bytes(cipher.encrypt(data))
    payload = memoryview(blob)[layout.header_size :]
    aead = AESGCM(dek)
    ad = b"raw"
    nonce = segment_nonce(header.nonce_prefix, 0, False)
    chunks = [layout.plain_span(i) for i in range(layout.segments)]
    raw_blob = b"".join(aead.encrypt(nonce, data[a:b], ad) for a, b in chunks)
    n = len(data)

    def ours_enc() -> Callable[[], int]:
        out = bytearray(layout.cipher_size)
        return lambda: (cipher.encrypt_into(data, out), n)[1]

    def raw_enc_into() -> Callable[[], int]:
        out = memoryview(bytearray(len(raw_blob)))
        src = memoryview(data)

        def go() -> int:
            for i, (a, b) in enumerate(chunks):
                c = a + i * TAG_SIZE
                aead.encrypt_into(nonce, src[a:b], ad, out[c : c + (b - a) + TAG_SIZE])
            return n

        return go

    def raw_enc_bytes() -> Callable[[], int]:
        src = memoryview(data)

        def go() -> int:
            for a, b in chunks:
                aead.encrypt(nonce, src[a:b], ad)
            return n

        return go

    def ours_dec() -> Callable[[], int]:
        out = bytearray(n)
        return lambda: (cipher.decrypt_into(layout, 0, layout.segments, payload, out), n)[1]

    def raw_dec_into() -> Callable[[], int]:
        out = memoryview(bytearray(n))
        src = memoryview(raw_blob)

        def go() -> int:
            for i, (a, b) in enumerate(chunks):
                c = a + i * TAG_SIZE
                aead.decrypt_into(nonce, src[c : c + (b - a) + TAG_SIZE], ad, out[a:b])
            return n

        return go

    def raw_dec_bytes() -> Callable[[], int]:
        src = memoryview(raw_blob)

        def go() -> int:
            for i, (a, b) in enumerate(chunks):
                c = a + i * TAG_SIZE
                aead.decrypt(nonce, src[c : c + (b - a) + TAG_SIZE], ad)
            return n

        return go

    return {
        "encrypt dcstore": ours_enc,
        "encrypt raw encrypt_into": raw_enc_into,
        "encrypt raw encrypt": raw_enc_bytes,
        "decrypt dcstore": ours_dec,
        "decrypt raw decrypt_into": raw_dec_into,
        "decrypt raw decrypt": raw_dec_bytes,
    }


def read_cases(root: Path, size: int, keyring: Keyring) -> dict:
    data = os.urandom(size)
    plain = LocalBackend(root / "plain", fsync=False)
    enc1 = EncryptedBackend(LocalBackend(root / "enc", fsync=False), keyring)
    enc2 = EncryptedBackend(LocalBackend(root / "enc", fsync=False), keyring, threads=2)
    plain.put("obj", data)
    enc1.put("obj", data)
    assert enc1.get("obj") == data and enc2.get("obj") == data and plain.get("obj") == data
    return {
        "plaintext LocalBackend.get": lambda: lambda: len(plain.get("obj")),
        "encrypted get (threads=1)": lambda: lambda: len(enc1.get("obj")),
        "encrypted get (threads=2)": lambda: lambda: len(enc2.get("obj")),
    }


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}; "
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{openssl_backend.openssl_version_text()}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--object-mib", type=int, default=64)
    p.add_argument("--segments-mib", default="1,4,16")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--read-mib", default="16,256")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.4)
    p.add_argument("--dir", default=None, help="directory for the read test (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write the markdown report here")
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    lines = [f"Machine: {machine()}", ""]

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    emit(f"## 1. Cipher layer, {args.object_mib} MiB object, same buffers (MB/s, median)")
    emit()
    emit("| segment | threads | op | dcstore | raw *_into | raw (bytes) | dcstore / raw_into |")
    emit("|---|---|---|---|---|---|---|")
    data = os.urandom(args.object_mib * MiB)
    for seg_mib in (int(s) for s in args.segments_mib.split(",")):
        cases = cipher_cases(data, seg_mib * MiB)
        for t in threads:
            r = measure(cases, t, args)
            for op in ("encrypt", "decrypt"):
                ours, into, plain = (
                    r[f"{op} dcstore"],
                    r[f"{op} raw {op}_into"],
                    r[f"{op} raw {op}"],
                )
                emit(
                    f"| {seg_mib} MiB | {t} | {op} | {ours:,.0f} | {into:,.0f} | {plain:,.0f} "
                    f"| {ours / into:.1%} |"
                )

    emit()
    emit("## 2. Size overhead at 4 MiB segments (key id of 19 characters)")
    emit()
    emit("| plaintext | ciphertext | overhead |")
    emit("|---|---|---|")
    for size in (100 * 1024, 4 * MiB, 64 * MiB, 1024 * MiB):
        layout = Layout(81 + 19, 4 * MiB, size)
        extra = layout.cipher_size - size
        emit(f"| {size:,} | {layout.cipher_size:,} | {extra} B = {extra / size:.5%} |")

    emit()
    emit("## 3. Read through LocalBackend, page cache warm (MB/s, median)")
    emit()
    emit("| object | readers | plaintext get | encrypted threads=1 | ratio | threads=2 | ratio |")
    emit("|---|---|---|---|---|---|---|")
    keyring = Keyring.generate("bench-kek")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size_mib in (int(s) for s in args.read_mib.split(",")):
            cases = read_cases(Path(tmp) / str(size_mib), size_mib * MiB, keyring)
            for t in threads:
                r = measure(cases, t, args)
                base = r["plaintext LocalBackend.get"]
                e1, e2 = r["encrypted get (threads=1)"], r["encrypted get (threads=2)"]
                emit(
                    f"| {size_mib} MiB | {t} | {base:,.0f} | {e1:,.0f} | {e1 / base:.1%} "
                    f"| {e2:,.0f} | {e2 / base:.1%} |"
                )
    emit()
    emit(f"Load average after the run: {os.getloadavg()[0]:.2f}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
