"""Test vectors of docs/format.md, checked by an independent decryptor.

``decrypt_per_spec`` is written from docs/format.md alone, using only
``cryptography``'s AESGCM, ``zlib.crc32`` and ``int.from_bytes`` — it does not
import dcstore. The same vectors then go through dcstore's own reader.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FILE = json.loads((Path(__file__).parent / "vectors" / "format-v1.json").read_text("utf-8"))
VECTORS = FILE["vectors"]
REJECTED = FILE["rejected"]


class Rejected(Exception):
    """docs/format.md: the object is corrupt (dcstore: IntegrityError)."""


class KeyProblem(Exception):
    """docs/format.md: a key access error (dcstore: KeyAccessError)."""


SPEC_ERRORS = {"IntegrityError": Rejected, "KeyAccessError": KeyProblem}


def u32(b: bytes) -> int:
    return int.from_bytes(b, "big")


def decrypt_per_spec(obj: bytes, name: str, keks: dict[str, bytes]) -> bytes:
    """docs/format.md, section "Decrypting", steps 1-4."""
    # 1. header
    if len(obj) < 82 or obj[0:4] != b"DCSE" or obj[4] != 1:
        raise Rejected("magic/version")
    kid_len = obj[5]
    h = 81 + kid_len
    if not 1 <= kid_len <= 64 or len(obj) < h:
        raise Rejected("key id length")
    if u32(obj[77 + kid_len : 81 + kid_len]) != zlib.crc32(obj[: 77 + kid_len]):
        raise Rejected("crc")
    s = u32(obj[6:10])
    if not 16 <= s <= 2**28:
        raise Rejected("segment size")
    prefix = obj[10:17]
    key_id = obj[17 : 17 + kid_len]
    wrap_nonce = obj[17 + kid_len : 29 + kid_len]
    wrapped = obj[29 + kid_len : 77 + kid_len]
    # 2. sizes
    d, f = len(obj) - h, s + 16
    if d < 16:
        raise Rejected("no segment")
    n = -(-d // f)
    last = d - (n - 1) * f
    if last < 16 or (n > 1 and last < 17):
        raise Rejected("partial tag, or a final segment without plaintext")
    # 3. unwrap
    wrap_ad = b"dcstore/v1 wrap\x00" + bytes([kid_len]) + key_id + obj[6:10] + prefix
    kek = keks.get(key_id.decode("ascii"))
    if kek is None:
        raise KeyProblem("no such key")
    try:
        dek = AESGCM(kek).decrypt(wrap_nonce, wrapped, wrap_ad)
    except InvalidTag:
        raise KeyProblem("does not unwrap") from None
    # 4. segments
    ad = b"dcstore/v1 segment\x00" + obj[6:10] + name.encode("utf-8")
    aead = AESGCM(dek)
    out = []
    for i in range(n):
        seg = obj[h + i * f : min(h + (i + 1) * f, len(obj))]
        nonce = prefix + i.to_bytes(4, "big") + bytes([1 if i == n - 1 else 0])
        try:
            out.append(aead.decrypt(nonce, seg, ad))
        except InvalidTag:
            raise Rejected(f"segment {i}") from None
    return b"".join(out)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["case"])
def test_vector_decrypts_per_spec(vector: dict) -> None:
    obj = bytes.fromhex(vector["object"])
    keks = {vector["key_id"]: bytes.fromhex(vector["kek"])}
    plain = bytes.fromhex(vector["plaintext"])
    assert plain == bytes((31 * i + 7) % 256 for i in range(len(plain)))
    assert decrypt_per_spec(obj, vector["object_name"], keks) == plain
    segments = max(1, -(-len(plain) // vector["segment_size"]))
    assert len(obj) == 81 + len(vector["key_id"]) + len(plain) + 16 * segments


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["case"])
def test_vector_rejected_under_another_name_or_with_a_flip(vector: dict) -> None:
    obj = bytes.fromhex(vector["object"])
    keks = {vector["key_id"]: bytes.fromhex(vector["kek"])}
    with pytest.raises(Rejected):
        decrypt_per_spec(obj, vector["object_name"] + ".renamed", keks)
    with pytest.raises(Rejected):
        decrypt_per_spec(obj[:-1], vector["object_name"], keks)
    flipped = bytearray(obj)
    flipped[-1] ^= 0x80
    with pytest.raises(Rejected):
        decrypt_per_spec(bytes(flipped), vector["object_name"], keks)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["case"])
def test_dcstore_reads_the_vectors(vector: dict) -> None:
    from dcstore.backends.memory import MemoryBackend
    from dcstore.crypto import EncryptedBackend, Keyring

    keyring = Keyring({vector["key_id"]: bytes.fromhex(vector["kek"])}, vector["key_id"])
    inner = MemoryBackend(f"vectors-{vector['case']}")
    inner.put(vector["object_name"], bytes.fromhex(vector["object"]))
    enc = EncryptedBackend(inner, keyring)
    plain = bytes.fromhex(vector["plaintext"])
    assert enc.get(vector["object_name"]) == plain
    assert enc.head(vector["object_name"]).size == len(plain)
    if plain:
        assert enc.get_range(vector["object_name"], 1, len(plain)) == plain[1:]


@pytest.mark.parametrize("vector", REJECTED, ids=lambda v: v["case"])
def test_rejected_vector_per_spec(vector: dict) -> None:
    keks = {vector["key_id"]: bytes.fromhex(vector["kek"])}
    with pytest.raises(SPEC_ERRORS[vector["error"]]):
        decrypt_per_spec(bytes.fromhex(vector["object"]), vector["object_name"], keks)


@pytest.mark.parametrize("vector", REJECTED, ids=lambda v: v["case"])
def test_dcstore_rejects_with_the_named_error(vector: dict) -> None:
    from dcstore.backends.memory import MemoryBackend
    from dcstore.crypto import EncryptedBackend, Keyring
    from dcstore.crypto.verify import verify

    keyring = Keyring({vector["key_id"]: bytes.fromhex(vector["kek"])}, vector["key_id"])
    inner = MemoryBackend(f"rejected-{vector['case']}")
    name = vector["object_name"]
    inner.put(name, bytes.fromhex(vector["object"]))
    enc = EncryptedBackend(inner, keyring)
    with pytest.raises(Exception) as info:
        enc.get(name)
    assert type(info.value).__name__ == vector["error"]
    assert repr(name) in str(info.value)
    (check,) = verify(enc)
    assert check.kind == {"IntegrityError": "integrity", "KeyAccessError": "key"}[vector["error"]]


def test_rejected_vectors_cover_the_listed_attacks() -> None:
    assert {v["case"] for v in REJECTED} >= {
        "appended-empty-final-segment",
        "truncated-at-segment-boundary",
        "swapped-segments",
        "flipped-tag-bit",
        "flipped-header-bit",
        "flipped-wrapped-key-bit",
        "renamed-object",
        "wrong-kek",
        "bad-magic",
        "bad-version",
    }


def test_vectors_file_is_up_to_date() -> None:
    """The checked-in vectors equal what the generator produces now (format unchanged)."""
    import importlib.util

    path = Path(__file__).parent / "vectors" / "make_vectors.py"
    spec = importlib.util.spec_from_file_location("make_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build()
    assert built["vectors"] == VECTORS and built["rejected"] == REJECTED
