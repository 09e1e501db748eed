"""Regenerate ``format-v1.json`` (``make_vectors_v2.py``: ``format-v2.json``).

Run: ``.venv/bin/python tests/vectors/make_vectors.py``. The vectors are built
with the reference implementation (``dcstore.crypto``) from fixed "random"
values; ``tests/test_crypto_vectors.py`` checks them with an independent
decryptor written from ``docs/format.md``.


``rejected`` vectors are damaged copies of valid ones that every decryptor
must refuse, each with the error class dcstore raises: ``IntegrityError``
(corrupt) or ``KeyAccessError`` (unknown key id, or the data key does not
unwrap: wrong key material, or a header forged with a valid CRC).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
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


def reseal(obj: bytes) -> bytes:
    """``obj`` with its header CRC recomputed (so the next check in line is reached)."""
    end = 77 + obj[5]
    return obj[:end] + zlib.crc32(obj[:end]).to_bytes(4, "big") + obj[end + 4 :]


def flip(obj: bytes, at: int) -> bytes:
    return obj[:at] + bytes([obj[at] ^ 0x01]) + obj[at + 1 :]


def swap_first_segments(obj: bytes) -> bytes:
    h, f = 81 + obj[5], int.from_bytes(obj[6:10], "big") + 16
    return obj[:h] + obj[h + f : h + 2 * f] + obj[h : h + f] + obj[h + 2 * f :]


# (case, source vector, what is done, error class, change to the object bytes,
#  object name to decrypt under or None, (key id, KEK label) offered or None)
Change = Callable[[bytes], bytes]
REJECTED: list[tuple[str, str, str, str, Change, str | None, tuple[str, str] | None]] = [
    (
        "appended-empty-final-segment",
        "three-full-segments",
        "16 bytes appended to a plaintext of whole segments (looks like an empty final segment)",
        "IntegrityError",
        lambda b: b + det("junk-tag", 16),
        None,
        None,
    ),
    (
        "truncated-at-segment-boundary",
        "three-full-segments",
        "the last whole segment removed",
        "IntegrityError",
        lambda b: b[:-32],
        None,
        None,
    ),
    (
        "truncated-mid-tag",
        "partial-last-segment",
        "the last segment cut to 15 bytes",
        "IntegrityError",
        lambda b: b[: 81 + b[5] + 3 * 48 + 15],
        None,
        None,
    ),
    (
        "truncated-to-header",
        "one-byte",
        "only the header left",
        "IntegrityError",
        lambda b: b[: 81 + b[5]],
        None,
        None,
    ),
    (
        "swapped-segments",
        "three-full-segments",
        "segments 0 and 1 swapped",
        "IntegrityError",
        swap_first_segments,
        None,
        None,
    ),
    (
        "flipped-tag-bit",
        "partial-last-segment",
        "one bit of the last tag flipped",
        "IntegrityError",
        lambda b: flip(b, len(b) - 1),
        None,
        None,
    ),
    (
        "flipped-ciphertext-bit",
        "unicode-name",
        "one bit of segment 1 flipped",
        "IntegrityError",
        lambda b: flip(b, 81 + 5 + 80 + 3),
        None,
        None,
    ),
    (
        "flipped-header-bit",
        "one-byte",
        "one bit of the nonce prefix flipped (CRC not updated)",
        "IntegrityError",
        lambda b: flip(b, 12),
        None,
        None,
    ),
    (
        "forged-nonce-prefix",
        "one-byte",
        "one bit of the nonce prefix flipped, CRC recomputed (the wrap AD binds it)",
        "KeyAccessError",
        lambda b: reseal(flip(b, 12)),
        None,
        None,
    ),
    (
        "forged-segment-size",
        "partial-last-segment",
        "segment size 32 -> 33 (sizes still fit), CRC recomputed (the wrap AD binds it)",
        "KeyAccessError",
        lambda b: reseal(b[:9] + bytes([33]) + b[10:]),
        None,
        None,
    ),
    (
        "flipped-wrapped-key-bit",
        "one-full-segment",
        "one bit of wrapped_dek flipped, CRC recomputed",
        "KeyAccessError",
        lambda b: reseal(flip(b, 29 + b[5] + 5)),
        None,
        None,
    ),
    (
        "bad-magic",
        "one-byte",
        "magic DCSE -> DCSF",
        "IntegrityError",
        lambda b: reseal(b"DCSF" + b[4:]),
        None,
        None,
    ),
    (
        "bad-version",
        "one-byte",
        "format version 1 -> 2, CRC recomputed",
        "IntegrityError",
        lambda b: reseal(b[:4] + b"\x02" + b[5:]),
        None,
        None,
    ),
    (
        "renamed-object",
        "one-full-segment",
        "decrypted under another object name",
        "IntegrityError",
        lambda b: b,
        "full.renamed",
        None,
    ),
    (
        "wrong-kek",
        "one-byte",
        "the right key id with other key material",
        "KeyAccessError",
        lambda b: b,
        None,
        ("kek-1", "kek:other"),
    ),
    (
        "unknown-key-id",
        "one-byte",
        "only a key with another id is offered",
        "KeyAccessError",
        lambda b: b,
        None,
        ("kek-9", "kek:kek-1"),
    ),
]


def build_rejected(valid: dict[str, dict]) -> list[dict]:
    out = []
    for case, source, what, error, change, name, offered in REJECTED:
        base = valid[source]
        key_id, kek = (base["key_id"], base["kek"])
        if offered is not None:
            key_id, kek = offered[0], det(offered[1], 32).hex()
        out.append(
            {
                "case": case,
                "from": source,
                "change": what,
                "error": error,
                "object_name": name or base["object_name"],
                "key_id": key_id,
                "kek": kek,
                "object": change(bytes.fromhex(base["object"])).hex(),
            }
        )
    return out


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
        "rejected": build_rejected({v["case"]: v for v in vectors}),
    }


def write(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    write(OUT, build())
