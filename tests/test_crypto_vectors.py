"""Test vectors of docs/format.md, checked by an independent decryptor.

``decrypt_per_spec`` is written from docs/format.md alone, using only
``cryptography``'s AESGCM, RSA-OAEP and X25519, ``hmac``/``hashlib`` (for the
HPKE key schedule of RFC 9180, written out here rather than taken from
``cryptography.hazmat.primitives.hpke``), ``zlib.crc32`` and ``int.from_bytes``
— it does not import dcstore. The same vectors then go through dcstore's own
reader. Version 1: ``format-v1.json``; version 2 (public-key wraps):
``format-v2.json``, whose key pairs are stored in the file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dcstore import errors

FILE = json.loads((Path(__file__).parent / "vectors" / "format-v1.json").read_text("utf-8"))
VECTORS = FILE["vectors"]
REJECTED = FILE["rejected"]
FILE_V2 = json.loads((Path(__file__).parent / "vectors" / "format-v2.json").read_text("utf-8"))
VECTORS_V2 = FILE_V2["vectors"]
REJECTED_V2 = FILE_V2["rejected"]


class Rejected(Exception):
    """docs/format.md: the object is corrupt (dcstore: IntegrityError)."""


class KeyProblem(Exception):
    """docs/format.md: a key access error (dcstore: KeyAccessError)."""


SPEC_ERRORS = {"IntegrityError": Rejected, "KeyAccessError": KeyProblem}


def u32(b: bytes) -> int:
    return int.from_bytes(b, "big")


def hpke_open_x25519(private_der: bytes, wrapped: bytes, info: bytes) -> bytes:
    """RFC 9180 base mode, single-shot Open: DHKEM(X25519, HKDF-SHA256) (0x0020),
    HKDF-SHA256 (0x0001), AES-256-GCM (0x0002), empty aad; ``wrapped = enc || ct``."""

    def extract(salt: bytes, ikm: bytes) -> bytes:
        return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()

    def expand(prk: bytes, info: bytes, length: int) -> bytes:
        out, block = b"", b""
        for i in range(1, -(-length // 32) + 1):
            block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
            out += block
        return out[:length]

    def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return extract(salt, b"HPKE-v1" + suite + label + ikm)

    def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
        return expand(prk, n.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, n)

    sk = serialization.load_der_private_key(private_der, None)
    enc, ct = wrapped[:32], wrapped[32:]
    pk_rm = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))  # type: ignore[union-attr]
    kem = b"KEM\x00\x20"
    eae_prk = labeled_extract(kem, b"", b"eae_prk", dh)
    shared = labeled_expand(kem, eae_prk, b"shared_secret", enc + pk_rm, 32)
    suite = b"HPKE\x00\x20\x00\x01\x00\x02"
    context = (
        b"\x00"
        + labeled_extract(suite, b"", b"psk_id_hash", b"")
        + labeled_extract(suite, b"", b"info_hash", info)
    )
    secret = labeled_extract(suite, shared, b"secret", b"")
    key = labeled_expand(suite, secret, b"key", context, 32)
    nonce = labeled_expand(suite, secret, b"base_nonce", context, 12)
    return AESGCM(key).decrypt(nonce, ct, b"")


WRAP_TYPES = {0: "aes", 1: "rsa", 2: "x25519"}


def unwrap_per_spec(kek: tuple[str, bytes | None], wrap_type: int, header: dict) -> bytes:
    """Step 3 after the key lookup: ``kek`` is (type, AES key or private key DER or None)."""
    kind, material = kek
    if kind != WRAP_TYPES[wrap_type] or material is None:
        raise KeyProblem("wrong key type, or no private half")
    ad, wrapped = header["wrap_ad"], header["wrapped"]
    try:
        if kind == "aes":
            dek = AESGCM(material).decrypt(header["wrap_nonce"], wrapped, ad)
        elif kind == "rsa":
            oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), ad)
            dek = serialization.load_der_private_key(material, None).decrypt(wrapped, oaep)  # type: ignore[union-attr]
        else:
            dek = hpke_open_x25519(material, wrapped, ad)
    except (InvalidTag, ValueError):
        raise KeyProblem("does not unwrap") from None
    if len(dek) != 32:
        raise KeyProblem("not a data key")
    return dek


def decrypt_per_spec(
    obj: bytes, name: str, keks: dict[str, bytes | tuple[str, bytes | None]]
) -> bytes:
    """docs/format.md, section "Decrypting", steps 1-4; ``keks`` maps a key id to AES key
    bytes or to (type, private key DER, or None for a public half only)."""
    # 1. header
    if len(obj) < 20 or obj[0:4] != b"DCSE" or obj[4] not in (1, 2):
        raise Rejected("magic/version")
    kid_len = obj[5]
    if not 1 <= kid_len <= 64:
        raise Rejected("key id length")
    if obj[4] == 1:
        wrap_type, kid_at, h = 0, 17, 81 + kid_len
    else:
        wrap_type, kid_at, w = obj[17], 20, int.from_bytes(obj[18:20], "big")
        if wrap_type not in (1, 2) or not 1 <= w <= 1024:
            raise Rejected("wrap type or wrapped key length")
        h = 24 + kid_len + w
    if len(obj) < h:
        raise Rejected("shorter than its header")
    if u32(obj[h - 4 : h]) != zlib.crc32(obj[: h - 4]):
        raise Rejected("crc")
    s = u32(obj[6:10])
    if not 16 <= s <= 2**28:
        raise Rejected("segment size")
    prefix = obj[10:17]
    key_id = obj[kid_at : kid_at + kid_len]
    wrap_at = kid_at + kid_len + (12 if wrap_type == 0 else 0)
    label = (
        b"dcstore/v1 wrap\x00" if wrap_type == 0 else b"dcstore/v2 wrap\x00" + bytes([wrap_type])
    )
    header = {
        "wrap_nonce": obj[kid_at + kid_len : wrap_at],
        "wrapped": obj[wrap_at : h - 4],
        "wrap_ad": label + bytes([kid_len]) + key_id + obj[6:10] + prefix,
    }
    # 2. sizes
    d, f = len(obj) - h, s + 16
    if d < 16:
        raise Rejected("no segment")
    n = -(-d // f)
    last = d - (n - 1) * f
    if last < 16 or (n > 1 and last < 17):
        raise Rejected("partial tag, or a final segment without plaintext")
    # 3. unwrap
    kek = keks.get(key_id.decode("ascii"))
    if kek is None:
        raise KeyProblem("no such key")
    dek = unwrap_per_spec(("aes", kek) if isinstance(kek, bytes) else kek, wrap_type, header)
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
    assert isinstance(info.value, getattr(errors, vector["error"]))  # or a subclass of it
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


# -- version 2: public-key wraps ----------------------------------------------


def v2_keks(vector: dict) -> dict[str, tuple[str, bytes | None]]:
    """The key the vector offers, for the spec decryptor: (type, private DER or None)."""
    stored = FILE_V2["keys"][vector["key"]]
    private = None if vector.get("public_only") else bytes.fromhex(stored["private"])
    return {vector["key_id"]: (stored["type"], private)}


def v2_keyring(vector: dict):  # -> dcstore Keyring
    import base64

    from dcstore.crypto import Keyring
    from dcstore.crypto.kek import kek_from_entry

    stored = FILE_V2["keys"][vector["key"]]
    halves = ["public"] if vector.get("public_only") else ["public", "private"]
    entry = {h: base64.b64encode(bytes.fromhex(stored[h])).decode() for h in halves}
    kek = kek_from_entry({"type": stored["type"], **entry}, "vector key")
    return Keyring({vector["key_id"]: kek}, vector["key_id"])


@pytest.mark.parametrize("vector", VECTORS_V2, ids=lambda v: v["case"])
def test_v2_vector_decrypts_per_spec(vector: dict) -> None:
    obj = bytes.fromhex(vector["object"])
    plain = bytes.fromhex(vector["plaintext"])
    assert decrypt_per_spec(obj, vector["object_name"], v2_keks(vector)) == plain
    wrapped = {"rsa": 384, "x25519": 80}[vector["key_type"]]  # RSA-3072; HPKE enc 32 + 48
    assert obj[4] == 2 and int.from_bytes(obj[18:20], "big") == wrapped
    segments = max(1, -(-len(plain) // vector["segment_size"]))
    assert len(obj) == 24 + len(vector["key_id"]) + wrapped + len(plain) + 16 * segments


@pytest.mark.parametrize("vector", VECTORS_V2, ids=lambda v: v["case"])
def test_dcstore_reads_the_v2_vectors(vector: dict) -> None:
    from dcstore.backends.memory import MemoryBackend
    from dcstore.crypto import EncryptedBackend

    inner = MemoryBackend(f"vectors-v2-{vector['case']}")
    inner.put(vector["object_name"], bytes.fromhex(vector["object"]))
    enc = EncryptedBackend(inner, v2_keyring(vector))
    plain = bytes.fromhex(vector["plaintext"])
    assert enc.get(vector["object_name"]) == plain
    assert enc.head(vector["object_name"]).size == len(plain)
    if plain:
        assert enc.get_range(vector["object_name"], 1, len(plain)) == plain[1:]


@pytest.mark.parametrize("vector", REJECTED_V2, ids=lambda v: v["case"])
def test_rejected_v2_vector_per_spec(vector: dict) -> None:
    with pytest.raises(SPEC_ERRORS[vector["error"]]):
        decrypt_per_spec(bytes.fromhex(vector["object"]), vector["object_name"], v2_keks(vector))


@pytest.mark.parametrize("vector", REJECTED_V2, ids=lambda v: v["case"])
def test_dcstore_rejects_v2_with_the_named_error(vector: dict) -> None:
    from dcstore.backends.memory import MemoryBackend
    from dcstore.crypto import EncryptedBackend
    from dcstore.crypto.verify import verify

    inner = MemoryBackend(f"rejected-v2-{vector['case']}")
    name = vector["object_name"]
    inner.put(name, bytes.fromhex(vector["object"]))
    enc = EncryptedBackend(inner, v2_keyring(vector))
    with pytest.raises(Exception) as info:
        enc.get(name)
    assert isinstance(info.value, getattr(errors, vector["error"]))  # or a subclass of it
    assert repr(name) in str(info.value)
    (check,) = verify(enc)
    assert check.kind == {"IntegrityError": "integrity", "KeyAccessError": "key"}[vector["error"]]


def test_v2_vectors_file_is_up_to_date() -> None:
    """Regenerating from the stored key pairs and wraps gives the checked-in file."""
    import importlib.util

    path = Path(__file__).parent / "vectors" / "make_vectors_v2.py"
    spec = importlib.util.spec_from_file_location("make_vectors_v2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build_v2(FILE_V2) == FILE_V2
