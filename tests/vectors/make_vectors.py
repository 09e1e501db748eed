"""Regenerate ``format-v1.json``: deterministic vectors from fixed keys and nonces.

Run: ``.venv/bin/python tests/vectors/make_vectors.py``. The vectors are built
with the reference implementation (``dcstore.crypto``) from fixed "random"
values; ``tests/test_crypto_vectors.py`` checks them with an independent
decryptor written from ``docs/format.md``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dcstore.crypto.format import Header
from dcstore.crypto.segments import ObjectCipher

OUT = Path(__file__).with_name("format-v1.json")


def det(label: str, size: int) -> bytes:
    """Deterministic bytes standing in for CSPRNG output."""
    return hashlib.sha256(label.encode()).digest()[:size] if size <= 32 else b""


def plaintext(size: int) -> bytes:
    return bytes((i * 31 + 7) % 256 for i in range(size))


CASES = [
    # (case id, key id, segment size, object name, plaintext size)
    ("empty", "kek-1", 16, "empty.tar", 0),
    ("one-byte", "kek-1", 16, "a", 1),
    ("one-full-segment", "kek-1", 16, "full", 16),
    ("three-full-segments", "k", 16, "shards/exact.tar", 48),
    ("partial-last-segment", "kek-2.test_X", 32, "shards/train-000.tar", 100),
    ("unicode-name", "kek-1", 64, "données/名前.bin", 200),
    ("default-segment-size", "kek-1", 4 << 20, "big/one.bin", 1000),
]


def build() -> dict:
    vectors = []
    for case, key_id, size, name, plain_size in CASES:
        kek = det(f"kek:{key_id}", 32)
        dek = det(f"dek:{case}", 32)
        bare = Header(key_id, size, det(f"prefix:{case}", 7), det(f"wrap:{case}", 12), b"")
        wrapped = AESGCM(kek).encrypt(bare.wrap_nonce, dek, bare.wrap_ad())
        header = Header(key_id, size, bare.nonce_prefix, bare.wrap_nonce, wrapped)
        data = plaintext(plain_size)
        blob = ObjectCipher(header, dek, name, case).encrypt(data)
        vectors.append(
            {
                "case": case,
                "object_name": name,
                "key_id": key_id,
                "kek": kek.hex(),
                "dek": dek.hex(),
                "segment_size": size,
                "plaintext": data.hex(),
                "object": bytes(blob).hex(),
            }
        )
    return {
        "format": "dcstore encrypted object v1 (docs/format.md)",
        "plaintext_rule": "byte i = (31*i + 7) mod 256",
        "vectors": vectors,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
