"""Bad input: every kind of tampering is rejected, naming the object, never returning plaintext.

Every test runs for each key type: ``aes`` (format v1) and the public-key
wraps ``rsa`` and ``x25519`` (format v2).
"""

from __future__ import annotations

import functools
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import EncryptedBackend, Keyring, parse_header
from dcstore.crypto.format import TAG_SIZE, Layout
from dcstore.crypto.kek import KEY_TYPES
from dcstore.errors import IntegrityError, InvalidRangeError, KeyAccessError

SEG = 64
KEY = "shards/train-000.tar"


@pytest.fixture(scope="module", params=KEY_TYPES)
def key_type(request: pytest.FixtureRequest) -> str:
    return request.param


@functools.cache
def keyring_of(key_type: str, key_id: str = "kek-a", variant: int = 0) -> Keyring:
    """A keyring with one fresh key (cached: RSA key generation is slow; keyrings
    are immutable). Another ``variant`` is other key material under the same id."""
    return Keyring.generate(key_id, key_type)


def make(key_type: str, segment_size: int = SEG) -> tuple[EncryptedBackend, MemoryBackend, Keyring]:
    keyring = keyring_of(key_type)
    inner = MemoryBackend(f"tamper-{uuid.uuid4().hex[:8]}")
    return EncryptedBackend(inner, keyring, segment_size=segment_size), inner, keyring


def plaintext(size: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(size))


def layout_of(blob: bytes) -> Layout:
    header = parse_header(blob, "test")
    return Layout.from_cipher_size(header.size, header.segment_size, len(blob), "test")


def assert_rejected(enc: EncryptedBackend, key: str, size_hint: int, exc: type = IntegrityError):
    """get, and a get_range of the first ``size_hint`` bytes, fail with ``exc`` naming ``key``."""
    with pytest.raises(exc) as info:
        enc.get(key)
    assert repr(key) in str(info.value)
    if size_hint:
        with pytest.raises(exc):
            enc.get_range(key, 0, size_hint)


@pytest.fixture
def stored(key_type: str) -> tuple[EncryptedBackend, MemoryBackend, bytes, bytes]:
    enc, inner, _ = make(key_type)
    data = plaintext(3 * SEG + 20)  # 3 full segments and a partial one
    enc.put(KEY, data)
    return enc, inner, data, inner.get(KEY)


def test_layout_of_fixture(stored) -> None:
    enc, _, data, blob = stored
    layout = layout_of(blob)
    assert layout.segments == 4 and layout.plain_size == len(data)
    assert enc.get(KEY) == data


def test_every_single_bit_flip_is_rejected(stored) -> None:
    enc, inner, data, blob = stored
    layout = layout_of(blob)
    for byte in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[byte] ^= 1 << bit
            inner.put(KEY, bytes(bad))
            with pytest.raises(IntegrityError) as info:
                enc.get(KEY)
            assert repr(KEY) in str(info.value), (byte, bit)
            if byte >= layout.header_size:  # the segment holding the flip fails alone too
                seg = (byte - layout.header_size) // (SEG + TAG_SIZE)
                p0, p1 = layout.plain_span(seg)
                with pytest.raises(IntegrityError):
                    enc.get_range(KEY, p0, max(p1, p0 + 1))
    inner.put(KEY, blob)
    assert enc.get(KEY) == data


def test_flips_in_other_segments_do_not_affect_a_range(stored) -> None:
    """Random access: a damaged segment does not stop reads of intact ones."""
    enc, inner, data, blob = stored
    layout = layout_of(blob)
    bad = bytearray(blob)
    bad[layout.cipher_span(2)[0] + 5] ^= 0x10
    inner.put(KEY, bytes(bad))
    assert enc.get_range(KEY, 0, 2 * SEG) == data[: 2 * SEG]
    with pytest.raises(IntegrityError):
        enc.get_range(KEY, 2 * SEG, 2 * SEG + 1)


def test_swapped_segments(stored) -> None:
    enc, inner, _, blob = stored
    layout = layout_of(blob)
    s0, s1 = (slice(*layout.cipher_span(i)) for i in (0, 1))
    bad = bytearray(blob)
    bad[s0], bad[s1] = blob[s1], blob[s0]
    inner.put(KEY, bytes(bad))
    assert_rejected(enc, KEY, 2 * SEG)


def test_segment_moved_from_another_object(stored) -> None:
    enc, inner, data, blob = stored
    enc.put("other", data)  # same plaintext, same name length, other data key
    other = inner.get("other")
    layout = layout_of(blob)
    s1 = slice(*layout.cipher_span(1))
    bad = bytearray(blob)
    bad[s1] = other[s1]
    inner.put(KEY, bytes(bad))
    assert_rejected(enc, KEY, len(data))


def test_renamed_or_copied_object(stored) -> None:
    enc, inner, data, blob = stored
    inner.put("shards/train-001.tar", blob)
    assert_rejected(enc, "shards/train-001.tar", len(data))
    assert enc.get(KEY) == data


def test_header_swapped_between_objects(stored) -> None:
    enc, inner, data, blob = stored
    enc.put("other", data)
    other = inner.get("other")
    h = layout_of(blob).header_size
    inner.put(KEY, other[:h] + blob[h:])
    assert_rejected(enc, KEY, len(data))


def test_truncation_at_every_length(stored) -> None:
    """Every prefix: segment boundaries, mid-segment, mid-tag, inside the header, empty."""
    enc, inner, _, blob = stored
    layout = layout_of(blob)
    boundaries = {layout.cipher_span(i)[1] for i in range(layout.segments - 1)}
    assert boundaries
    for length in range(len(blob)):
        inner.put(KEY, blob[:length])
        with pytest.raises(IntegrityError) as info:
            enc.get(KEY)
        assert repr(KEY) in str(info.value), length


def test_truncation_at_a_boundary_is_seen_only_with_the_new_last_segment(stored) -> None:
    """The guarantee as docs/format.md words it: head and ranges away from the end
    see an authentic but shorter object; get, verify and a range that includes the
    (new) last segment reject it; a range past the new end is out of range."""
    from dcstore.crypto.verify import verify

    enc, inner, data, blob = stored
    layout = layout_of(blob)
    inner.put(KEY, blob[: layout.cipher_span(1)[1]])  # segments 0 and 1 left
    assert enc.head(KEY).size == 2 * SEG
    assert enc.get_range(KEY, 0, SEG) == data[:SEG]
    with pytest.raises(IntegrityError):
        enc.get_range(KEY, SEG, SEG + 1)
    with pytest.raises(IntegrityError):
        enc.get(KEY)
    with pytest.raises(InvalidRangeError):
        enc.get_range(KEY, 0, 3 * SEG)
    assert [c.bad_segments for c in verify(enc)] == [[1]]


@pytest.mark.parametrize("extra", [1, 15, 16, 17, SEG, SEG + TAG_SIZE, SEG + TAG_SIZE + 1, 999])
def test_bytes_appended(stored, extra: int) -> None:
    enc, inner, data, blob = stored
    inner.put(KEY, blob + plaintext(extra))
    assert_rejected(enc, KEY, len(data))


@pytest.mark.parametrize("segments", [1, 3])
@pytest.mark.parametrize("extra", [1, 15, 16, 17, SEG + TAG_SIZE])
def test_bytes_appended_to_whole_segments(key_type: str, segments: int, extra: int) -> None:
    """A plaintext of whole segments leaves no partial segment to absorb an append:
    16 appended bytes looked like an empty final segment and were once accepted."""
    enc, inner, _ = make(key_type)
    data = plaintext(segments * SEG)
    enc.put(KEY, data)
    inner.put(KEY, inner.get(KEY) + plaintext(extra))
    assert_rejected(enc, KEY, len(data))
    if extra <= TAG_SIZE:  # no layout fits: even head (which authenticates nothing) sees it
        with pytest.raises(IntegrityError):
            enc.head(KEY)


def test_empty_final_segment_only_for_an_empty_object() -> None:
    full = SEG + TAG_SIZE
    assert Layout.from_cipher_size(10, SEG, 10 + TAG_SIZE, "t").plain_size == 0
    assert Layout.from_cipher_size(10, SEG, 10 + 2 * full, "t").plain_size == 2 * SEG
    for size in (10 + full + TAG_SIZE, 10 + 2 * full + TAG_SIZE):
        with pytest.raises(IntegrityError, match="final segment without plaintext"):
            Layout.from_cipher_size(10, SEG, size, "t")


def test_valid_tail_segment_appended(stored) -> None:
    """Appending a copy of the (authentic) last segment is still detected."""
    enc, inner, data, blob = stored
    layout = layout_of(blob)
    tail = blob[slice(*layout.cipher_span(layout.segments - 1))]
    inner.put(KEY, blob + tail)
    assert_rejected(enc, KEY, len(data))


def test_zero_length_object(key_type: str) -> None:
    enc, inner, _ = make(key_type)
    enc.put("empty", b"")
    blob = inner.get("empty")
    assert enc.get("empty") == b"" and enc.head("empty").size == 0
    assert len(blob) == layout_of(blob).header_size + TAG_SIZE
    inner.put("empty", blob[:-1])  # tag cut short
    assert_rejected(enc, "empty", 0)
    inner.put("empty", b"")  # a zero-length ciphertext is not an encrypted object
    assert_rejected(enc, "empty", 0)
    bad = bytearray(blob)
    bad[-1] ^= 1
    inner.put("empty", bytes(bad))
    assert_rejected(enc, "empty", 0)


def test_plaintext_object_is_not_accepted(key_type: str) -> None:
    enc, inner, _ = make(key_type)
    inner.put("plain.tar", plaintext(5000))
    assert_rejected(enc, "plain.tar", 10)
    with pytest.raises(IntegrityError):
        enc.head("plain.tar")


def test_unknown_key_id_is_a_key_error(stored) -> None:
    """A well-formed header naming a key the keyring lacks (CRC fixed up) -> KeyAccessError."""
    enc, inner, _data, blob = stored
    h = layout_of(blob).header_size
    bad = bytearray(blob[:h])
    bad[blob.index(b"kek-a")] = ord("z")  # first character of the key id
    bad[h - 4 :] = zlib.crc32(bad[: h - 4]).to_bytes(4, "big")
    inner.put(KEY, bytes(bad) + blob[h:])
    with pytest.raises(KeyAccessError) as info:
        enc.get(KEY)
    assert repr(KEY) in str(info.value) and "'zek-a'" in str(info.value)


def test_wrong_key_material_under_the_same_id(key_type: str) -> None:
    enc, inner, _ = make(key_type)
    enc.put(KEY, plaintext(300))
    impostor = EncryptedBackend(inner, keyring_of(key_type, variant=1), segment_size=SEG)
    with pytest.raises(KeyAccessError) as info:
        impostor.get(KEY)
    assert repr(KEY) in str(info.value)
    with pytest.raises(KeyAccessError):
        impostor.get_range(KEY, 0, 10)


def test_missing_and_retired_keys(key_type: str) -> None:
    enc, inner, keyring = make(key_type)
    enc.put(KEY, plaintext(300))
    rotated = keyring.with_new_key("kek-b")
    other = EncryptedBackend(inner, keyring_of(key_type, "kek-b"), segment_size=SEG)
    with pytest.raises(KeyAccessError, match="not in the keys of"):
        other.get(KEY)
    retired = EncryptedBackend(inner, rotated.retire("kek-a"), segment_size=SEG)
    with pytest.raises(KeyAccessError, match="retired") as info:
        retired.get(KEY)
    assert repr(KEY) in str(info.value)
    assert EncryptedBackend(inner, rotated, segment_size=SEG).get(KEY) == plaintext(300)


def test_failure_messages_hold_no_secret(stored) -> None:
    enc, inner, _, blob = stored
    bad = bytearray(blob)
    bad[-1] ^= 1
    inner.put(KEY, bytes(bad))
    with pytest.raises(IntegrityError) as info:
        enc.get(KEY)
    text = str(info.value) + repr(info.value) + repr(enc) + repr(enc.keyring)
    header = parse_header(blob, "x")
    document = enc.keyring.to_document()["keys"][0]
    material = [document.get(field) for field in ("key", "private")]
    for secret in (header.wrapped_dek.hex(), header.nonce_prefix.hex(), *filter(None, material)):
        assert secret not in text


@settings(deadline=None)
@given(
    size=st.integers(0, 3000),
    segment_size=st.integers(16, 700),
    flip=st.integers(0, 10**9),
    bit=st.integers(0, 7),
    span=st.tuples(st.integers(0, 3000), st.integers(0, 3000)),
)
def test_random_sizes_round_trip_and_reject_flips(
    key_type: str, size: int, segment_size: int, flip: int, bit: int, span: tuple[int, int]
) -> None:
    enc, inner, _ = make(key_type, segment_size)
    data = plaintext(size)
    enc.put("h/obj", data)
    blob = inner.get("h/obj")
    layout = layout_of(blob)
    assert layout.segments == max(1, -(-size // segment_size))
    assert len(blob) == layout.header_size + size + TAG_SIZE * layout.segments
    assert enc.get("h/obj") == data and enc.head("h/obj").size == size
    start, end = sorted(s % (size + 1) for s in span)
    assert enc.get_range("h/obj", start, end) == data[start:end]
    bad = bytearray(blob)
    bad[flip % len(blob)] ^= 1 << bit
    inner.put("h/obj", bytes(bad))
    with pytest.raises(IntegrityError):
        enc.get("h/obj")


@pytest.mark.parametrize("threads", [1, 2])
def test_large_object_read_in_runs_rejects_damage_in_any_run(key_type: str, threads: int) -> None:
    """Objects above READ_CHUNK_BYTES are read in ranged runs (pipelined with threads)."""
    import os

    from dcstore.crypto.backend import READ_CHUNK_BYTES

    keyring = keyring_of(key_type)
    inner = MemoryBackend(f"runs-{uuid.uuid4().hex[:8]}")
    enc = EncryptedBackend(inner, keyring, segment_size=1 << 20, threads=threads)
    data = os.urandom(2 * READ_CHUNK_BYTES + 12345)
    enc.put(KEY, data)
    assert enc.get(KEY) == data
    assert enc.get_range(KEY, 5, len(data) - 3) == data[5:-3]
    blob = inner.get(KEY)
    first_segment = layout_of(blob).header_size + 100
    for offset in (first_segment, READ_CHUNK_BYTES + 7, len(blob) - 1):
        bad = bytearray(blob)
        bad[offset] ^= 4
        inner.put(KEY, bytes(bad))
        with pytest.raises(IntegrityError, match="failed authentication"):
            enc.get(KEY)
    inner.put(KEY, blob[: len(blob) - (1 << 20) - 16])  # last segment dropped
    with pytest.raises(IntegrityError):
        enc.get(KEY)
    enc.close()
