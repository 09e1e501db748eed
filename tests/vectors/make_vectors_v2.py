"""Regenerate ``format-v2.json``: vectors of public-key (RSA-OAEP, HPKE X25519) wraps.

Run: ``.venv/bin/python tests/vectors/make_vectors_v2.py``. Version 2 cannot be
fully deterministic: RSA key generation, OAEP padding and the HPKE ephemeral key
are random inside ``cryptography``. So the key pairs and wrapped data keys are
stored in ``format-v2.json`` and a regeneration reuses them (fresh ones only for
what the file lacks); data keys, nonce prefixes, plaintexts and damage are
derived as in ``make_vectors.py``. ``tests/test_crypto_vectors_v2.py`` checks
them with an independent decryptor written from ``docs/format.md``.
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from pathlib import Path

from dcstore.crypto.format import Header, parse_header
from dcstore.crypto.kek import KEY_TYPE_OF_WRAP, PublicKek, RsaKek, X25519Kek
from dcstore.crypto.segments import ObjectCipher

sys.path.insert(0, str(Path(__file__).parent))
from make_vectors import Change, build, det, flip, plaintext, write

OUT = Path(__file__).with_name("format-v2.json")

KEYS_V2 = {"rsa-a": RsaKek, "rsa-b": RsaKek, "x25519-a": X25519Kek, "x25519-b": X25519Kek}
"""Stored key pairs: ``*-a`` wrap the vectors, ``*-b`` are the wrong key pairs."""

CASES_V2 = [
    # (case id, key id, stored key, segment size, object name, plaintext size)
    ("rsa-empty", "rsa-1", "rsa-a", 16, "empty.tar", 0),
    ("rsa-one-byte", "rsa-1", "rsa-a", 16, "a", 1),
    ("rsa-partial-last-segment", "kek-rsa.3072", "rsa-a", 32, "shards/train-000.tar", 100),
    ("x25519-empty", "x-1", "x25519-a", 16, "empty.tar", 0),
    ("x25519-three-full-segments", "x-1", "x25519-a", 16, "shards/exact.tar", 48),
    ("x25519-unicode-name", "kek-x25519", "x25519-a", 64, "données/名前.bin", 200),
]


def reseal_v2(obj: bytes) -> bytes:
    """A version-2 ``obj`` with its header CRC recomputed (``24 + L + W`` bytes)."""
    end = 20 + obj[5] + int.from_bytes(obj[18:20], "big")
    return obj[:end] + zlib.crc32(obj[:end]).to_bytes(4, "big") + obj[end + 4 :]


def set_at(obj: bytes, at: int, value: bytes) -> bytes:
    return obj[:at] + value + obj[at + len(value) :]


def v2_wrapped_at(obj: bytes) -> int:
    return 20 + obj[5]


# (case, source vector or "v1:<case>", what is done, error class, change,
#  object name or None, (key id, stored key) offered or None, public half only)
REJECTED_V2: list[tuple[str, str, str, str, Change, str | None, tuple[str, str] | None, bool]] = [
    (
        "rsa-flipped-wrapped-key-bit",
        "rsa-one-byte",
        "one bit of wrapped_dek flipped, CRC recomputed",
        "KeyAccessError",
        lambda b: reseal_v2(flip(b, v2_wrapped_at(b) + 100)),
        None,
        None,
        False,
    ),
    (
        "rsa-forged-segment-size",
        "rsa-partial-last-segment",
        "segment size 32 -> 33 (sizes still fit), CRC recomputed (the OAEP label binds it)",
        "KeyAccessError",
        lambda b: reseal_v2(b[:9] + bytes([33]) + b[10:]),
        None,
        None,
        False,
    ),
    (
        "x25519-forged-nonce-prefix",
        "x25519-three-full-segments",
        "one bit of the nonce prefix flipped, CRC recomputed (the HPKE info binds it)",
        "KeyAccessError",
        lambda b: reseal_v2(flip(b, 12)),
        None,
        None,
        False,
    ),
    (
        "x25519-flipped-enc-bit",
        "x25519-empty",
        "one bit of the HPKE encapsulated key flipped, CRC recomputed",
        "KeyAccessError",
        lambda b: reseal_v2(flip(b, v2_wrapped_at(b) + 3)),
        None,
        None,
        False,
    ),
    (
        "wrap-type-swapped",
        "rsa-one-byte",
        "wrap type 1 (rsa) -> 2 (x25519), CRC recomputed; the key id names an rsa key",
        "KeyAccessError",
        lambda b: reseal_v2(set_at(b, 17, b"\x02")),
        None,
        None,
        False,
    ),
    (
        "unknown-wrap-type",
        "x25519-empty",
        "wrap type 2 -> 3, CRC recomputed",
        "IntegrityError",
        lambda b: reseal_v2(set_at(b, 17, b"\x03")),
        None,
        None,
        False,
    ),
    (
        "wrapped-length-zero",
        "x25519-empty",
        "W = 0",
        "IntegrityError",
        lambda b: set_at(b, 18, b"\x00\x00"),
        None,
        None,
        False,
    ),
    (
        "wrapped-length-over-maximum",
        "rsa-one-byte",
        "W = 1025 (maximum 1024)",
        "IntegrityError",
        lambda b: set_at(b, 18, (1025).to_bytes(2, "big")),
        None,
        None,
        False,
    ),
    (
        "wrapped-length-past-the-end",
        "rsa-one-byte",
        "W = 1024, longer than the object",
        "IntegrityError",
        lambda b: set_at(b, 18, (1024).to_bytes(2, "big")),
        None,
        None,
        False,
    ),
    (
        "truncated-in-wrapped-key",
        "rsa-empty",
        "cut inside wrapped_dek",
        "IntegrityError",
        lambda b: b[: v2_wrapped_at(b) + 50],
        None,
        None,
        False,
    ),
    (
        "flipped-tag-bit",
        "rsa-partial-last-segment",
        "one bit of the last tag flipped",
        "IntegrityError",
        lambda b: flip(b, len(b) - 1),
        None,
        None,
        False,
    ),
    (
        "truncated-at-segment-boundary",
        "x25519-three-full-segments",
        "the last whole segment removed",
        "IntegrityError",
        lambda b: b[:-32],
        None,
        None,
        False,
    ),
    (
        "renamed-object",
        "x25519-unicode-name",
        "decrypted under another object name",
        "IntegrityError",
        lambda b: b,
        "données/autre.bin",
        None,
        False,
    ),
    (
        "rsa-wrong-key-pair",
        "rsa-one-byte",
        "another rsa key pair under the same id",
        "KeyAccessError",
        lambda b: b,
        None,
        ("rsa-1", "rsa-b"),
        False,
    ),
    (
        "x25519-wrong-key-pair",
        "x25519-empty",
        "another x25519 key pair under the same id",
        "KeyAccessError",
        lambda b: b,
        None,
        ("x-1", "x25519-b"),
        False,
    ),
    (
        "rsa-public-half-only",
        "rsa-one-byte",
        "only the public half of the right key is offered",
        "KeyAccessError",
        lambda b: b,
        None,
        None,
        True,
    ),
    (
        "x25519-public-half-only",
        "x25519-empty",
        "only the public half of the right key is offered",
        "KeyAccessError",
        lambda b: b,
        None,
        None,
        True,
    ),
    (
        "v1-object-under-an-rsa-key",
        "v1:one-byte",
        "a version-1 (aes) object whose key id names an rsa key",
        "KeyAccessError",
        lambda b: b,
        None,
        ("kek-1", "rsa-a"),
        False,
    ),
]


def load_keys_v2(existing: dict) -> dict[str, PublicKek]:
    """The stored key pairs (new ones for names the file lacks)."""
    keys = {}
    for name, cls in KEYS_V2.items():
        stored = existing.get("keys", {}).get(name)
        if stored is None:
            keys[name] = cls.generate()
        else:
            entry = {
                k: base64.b64encode(bytes.fromhex(stored[k])).decode()
                for k in ("public", "private")
            }
            keys[name] = cls.from_entry(entry, name)
    return keys


def key_table(keys: dict[str, PublicKek]) -> dict[str, dict[str, str]]:
    out = {}
    for name, kek in keys.items():
        entry = kek.entry()
        out[name] = {
            "type": kek.key_type,
            **{k: base64.b64decode(entry[k]).hex() for k in ("public", "private")},
        }
    return out


def build_v2(existing: dict) -> dict:
    """Version-2 vectors; stored key pairs and wrapped data keys come from ``existing``."""
    keys = load_keys_v2(existing)
    old = {v["case"]: bytes.fromhex(v["object"]) for v in existing.get("vectors", [])}
    vectors = []
    for case, key_id, key_name, size, name, plain_size in CASES_V2:
        kek, dek = keys[key_name], det(f"dek:{case}", 32)
        bare = Header(key_id, size, det(f"prefix:{case}", 7), b"", b"", kek.wrap_type)
        header = kek.wrap(bare, dek)
        if case in old:  # keep the stored wrap if it still unwraps to this case's data key
            stored = parse_header(old[case], case)
            if stored.wrap_ad() == bare.wrap_ad() and kek.unwrap(stored, case) == dek:
                header = stored
        data = plaintext(plain_size)
        blob = ObjectCipher(header, dek, name, case).encrypt(data)
        vectors.append(
            {
                "case": case,
                "object_name": name,
                "key_id": key_id,
                "key": key_name,
                "key_type": KEY_TYPE_OF_WRAP[header.wrap_type],
                "dek": dek.hex(),
                "segment_size": size,
                "plaintext": data.hex(),
                "object": bytes(blob).hex(),
            }
        )
    by_case = {v["case"]: v for v in vectors}
    v1 = {v["case"]: v for v in build()["vectors"]}
    rejected = []
    for case, source, what, error, change, name, offered, public_only in REJECTED_V2:
        base = v1[source[3:]] if source.startswith("v1:") else by_case[source]
        key_id, key_name = offered or (base["key_id"], base["key"])
        rejected.append(
            {
                "case": case,
                "from": source,
                "change": what,
                "error": error,
                "object_name": name or base["object_name"],
                "key_id": key_id,
                "key": key_name,
                "public_only": public_only,
                "object": change(bytes.fromhex(base["object"])).hex(),
            }
        )
    return {
        "format": "dcstore encrypted object v2, public-key wraps (docs/format.md)",
        "plaintext_rule": "byte i = (31*i + 7) mod 256",
        "keys": key_table(keys),
        "vectors": vectors,
        "rejected": rejected,
    }


if __name__ == "__main__":
    existing = json.loads(OUT.read_text("utf-8")) if OUT.exists() else {}
    write(OUT, build_v2(existing))
