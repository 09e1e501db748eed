"""What copying a sample out of a decrypted segment costs, by segment size and timing.

An encrypted shard is decrypted a segment at a time; a loader handing out ``bytes`` then
copies each sample out of the decrypted segment. This times that copy (100 KiB samples,
one process) two ways: right after the sample's own segment is decrypted ("warm"), and
after every segment of a 64 MiB block is (a shuffled block hands its samples out
interleaved across its windows: "interleaved"), for several segment sizes, beside the
AES-256-GCM decrypt itself. It says whether building samples right after each segment is
decrypted would pay, and with which segment size.

Usage: .venv/bin/python bench/copy_after_decrypt.py [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SAMPLE = 100 * 1024
BLOCK = 64 << 20


def measure(segment: int, interleaved: bool) -> tuple[float, float]:
    """(copy us, decrypt us) per sample over one block of ``segment``-sized segments."""
    aead, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(12)
    count = BLOCK // segment
    sealed = [aead.encrypt(nonce, os.urandom(segment), b"") for _ in range(count)]
    plain = [bytearray(segment) for _ in range(count)]
    per = segment // SAMPLE
    copy = decrypt = 0.0
    for i in range(count):
        t = time.process_time()
        aead.decrypt_into(nonce, sealed[i], b"", plain[i])
        decrypt += time.process_time() - t
        if not interleaved:
            t = time.process_time()
            view = memoryview(plain[i])
            for k in range(per):
                bytes(view[k * SAMPLE : (k + 1) * SAMPLE])
            copy += time.process_time() - t
    if interleaved:
        t = time.process_time()
        views = [memoryview(p) for p in plain]
        for k in range(per):
            for view in views:
                bytes(view[k * SAMPLE : (k + 1) * SAMPLE])
        copy = time.process_time() - t
    n = per * count
    return 1e6 * copy / n, 1e6 * decrypt / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    print("| segment | copy right after its segment, us | copy interleaved, us | decrypt, us |")
    print("|---:|---:|---:|---:|")
    for segment in (4 << 20, 1 << 20, 256 << 10):
        warm = [measure(segment, False) for _ in range(args.reps)]
        cold = [measure(segment, True) for _ in range(args.reps)]
        best = (min(c for c, _ in warm), min(c for c, _ in cold), min(d for _, d in warm + cold))
        print(f"| {segment >> 10} KiB | {best[0]:.1f} | {best[1]:.1f} | {best[2]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
