"""The dcstore encrypted-object format, versions 1 and 2: header layout and derivations.

Pure functions over bytes; no keys are held here. ``docs/format.md`` is the
normative description; this module is its reference implementation.

Layout of an encrypted object::

    header (v1: 81 + L bytes, v2: 24 + L + W) | segment 0 | ... | segment n-1

Version-1 header (all integers big-endian)::

    0       4   magic  b"DCSE"
    4       1   format version (1)
    5       1   L = key id length, 1..64
    6       4   S = plaintext segment size, MIN_SEGMENT_SIZE..MAX_SEGMENT_SIZE
    10      7   nonce prefix (random per object)
    17      L   key id (ASCII)
    17+L   12   wrap nonce (random)
    29+L   48   wrapped data key: AES-256-GCM(KEK, wrap nonce, DEK, wrap AD) = 32 + 16 tag
    77+L    4   CRC-32 of bytes [0, 77+L)  (corruption check, not security)

Version 2 is the same object with a header for a public-key wrap (RSA-OAEP or
HPKE; the version-1 header stays what AES key-encryption keys write)::

    0       4   magic  b"DCSE"
    4       1   format version (2)
    5       1   L = key id length, 1..64
    6       4   S = plaintext segment size
    10      7   nonce prefix
    17      1   wrap type (WRAP_RSA_OAEP_SHA256 or WRAP_HPKE_X25519)
    18      2   W = wrapped data key length, 1..MAX_WRAPPED_SIZE
    20      L   key id (ASCII)
    20+L    W   wrapped data key (wrap AD: OAEP label or HPKE info)
    20+L+W  4   CRC-32 of bytes [0, 20+L+W)

Every segment but the last holds exactly ``S`` plaintext bytes; the last holds
0..S (an empty object is one empty final segment). Each segment is the
AES-256-GCM ciphertext followed by its 16-byte tag, under the data key, with
nonce ``prefix || u32(index) || u8(last)`` and associated data
``SEGMENT_AD_LABEL || u32(S) || utf8(object name)``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from dcstore.errors import IntegrityError, KeyAccessError, NotEncryptedError

MAGIC = b"DCSE"
VERSION = 1
"""Format version of headers wrapped with AES-256-GCM (``WRAP_AES_GCM``)."""
PUBLIC_KEY_VERSION = 2
"""Format version of headers wrapped with a public key (every other wrap type)."""
WRAP_AES_GCM = 0
"""Wrap type of version-1 headers (implicit: not stored)."""
WRAP_RSA_OAEP_SHA256 = 1
WRAP_HPKE_X25519 = 2
"""HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM."""
PUBLIC_KEY_WRAPS = frozenset({WRAP_RSA_OAEP_SHA256, WRAP_HPKE_X25519})
MAX_WRAPPED_SIZE = 1024
"""Largest wrapped data key of a version-2 header (an RSA-8192 ciphertext)."""
TAG_SIZE = 16
DEK_SIZE = 32
NONCE_PREFIX_SIZE = 7
WRAP_NONCE_SIZE = 12
WRAPPED_DEK_SIZE = DEK_SIZE + TAG_SIZE
FIXED_HEADER_SIZE = 81
"""Header size without the key id: ``header_size = FIXED_HEADER_SIZE + len(key_id)``."""
MAX_KEY_ID_SIZE = 64
MAX_V1_HEADER_SIZE = FIXED_HEADER_SIZE + MAX_KEY_ID_SIZE
V2_FIXED_HEADER_SIZE = 24
"""Version-2 header size without key id and wrapped key: ``24 + L + W``."""
MAX_HEADER_SIZE = V2_FIXED_HEADER_SIZE + MAX_KEY_ID_SIZE + MAX_WRAPPED_SIZE
"""Largest header of any version: a reader fetching this many bytes has the whole header."""
MIN_SEGMENT_SIZE = 16
MAX_SEGMENT_SIZE = 1 << 28
DEFAULT_SEGMENT_SIZE = 4 << 20
MAX_SEGMENTS = 1 << 32

SEGMENT_AD_LABEL = b"dcstore/v1 segment\x00"
WRAP_AD_LABEL = b"dcstore/v1 wrap\x00"
PUBLIC_WRAP_AD_LABEL = b"dcstore/v2 wrap\x00"

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")

_CRC_SIZE = 4


def check_key_id(key_id: str) -> str:
    """Return ``key_id`` if it is 1..64 characters of ``[A-Za-z0-9._-]``, else ValueError."""
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
        raise ValueError(f"key id must be 1..64 characters of [A-Za-z0-9._-], got {key_id!r}")
    return key_id


def check_segment_size(segment_size: int) -> int:
    """Return ``segment_size`` if the format allows it, else ValueError."""
    if not (MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE):
        raise ValueError(
            f"segment size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes, got {segment_size}"
        )
    return segment_size


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header. ``wrapped_dek`` is ciphertext; no secret is held here.

    ``wrap_type`` is ``WRAP_AES_GCM`` for version 1 (with ``wrap_nonce``), else
    a public-key wrap of version 2 (``wrap_nonce`` empty).
    """

    key_id: str
    segment_size: int
    nonce_prefix: bytes
    wrap_nonce: bytes
    wrapped_dek: bytes
    wrap_type: int = WRAP_AES_GCM

    @property
    def version(self) -> int:
        return VERSION if self.wrap_type == WRAP_AES_GCM else PUBLIC_KEY_VERSION

    @property
    def size(self) -> int:
        """Encoded length in bytes; the first segment starts here."""
        if self.wrap_type == WRAP_AES_GCM:
            return FIXED_HEADER_SIZE + len(self.key_id)
        return V2_FIXED_HEADER_SIZE + len(self.key_id) + len(self.wrapped_dek)

    def wrap_ad(self) -> bytes:
        """Associated data of the data-key wrap: binds key id, segment size, nonce
        prefix and, in version 2, the wrap type."""
        kid = self.key_id.encode("ascii")
        if self.wrap_type == WRAP_AES_GCM:
            label = WRAP_AD_LABEL
        else:
            label = PUBLIC_WRAP_AD_LABEL + bytes([self.wrap_type])
        size = self.segment_size.to_bytes(4, "big")
        return label + bytes([len(kid)]) + kid + size + self.nonce_prefix

    def encode(self) -> bytes:
        """The header bytes, CRC included."""
        kid = self.key_id.encode("ascii")
        if self.wrap_type == WRAP_AES_GCM:
            wrap = (self.wrap_nonce, self.wrapped_dek)
            fields = (bytes([VERSION, len(kid)]), self.segment_size.to_bytes(4, "big"))
            tail: tuple[bytes, ...] = (self.nonce_prefix, kid, *wrap)
        else:
            fields = (bytes([PUBLIC_KEY_VERSION, len(kid)]), self.segment_size.to_bytes(4, "big"))
            wrap_info = bytes([self.wrap_type]) + len(self.wrapped_dek).to_bytes(2, "big")
            tail = (self.nonce_prefix, wrap_info, kid, self.wrapped_dek)
        body = b"".join((MAGIC, *fields, *tail))
        return body + zlib.crc32(body).to_bytes(4, "big")


def header_size_hint(prefix: bytes | memoryview) -> int:
    """Header length announced by the first 6 (version 2: 20) bytes, not yet
    checked by the CRC; at most :data:`MAX_HEADER_SIZE`."""
    if len(prefix) < 6:
        return FIXED_HEADER_SIZE
    if prefix[4] != PUBLIC_KEY_VERSION:
        return FIXED_HEADER_SIZE + prefix[5]
    if len(prefix) < 20:
        return V2_FIXED_HEADER_SIZE + prefix[5]
    wrapped = min(int.from_bytes(prefix[18:20], "big"), MAX_WRAPPED_SIZE)
    return V2_FIXED_HEADER_SIZE + prefix[5] + wrapped


NOT_ENCRYPTED = (
    "damaged, or written without keys (plaintext: open the store without keys to read it)"
)
"""What an object that does not start like an encrypted one may be."""


def parse_header(data: bytes | memoryview, what: str) -> Header:
    """Parse and check the header at the start of ``data``.

    Raises :class:`IntegrityError` (naming ``what``) for a wrong magic (its subclass
    :class:`NotEncryptedError`, as for data too short to be a header), an
    unsupported version or wrap type, a bad length or segment size, or a CRC
    mismatch. Lengths are checked against their stated maxima before use, so
    nothing is sized by an unchecked field. Authenticity is established later,
    by unwrapping the data key and the segment tags.
    """
    mv = memoryview(data)
    too_short = f"{what}: too short to be an encrypted object ({len(mv)} bytes)"
    if len(mv) < 20:
        raise NotEncryptedError(f"{too_short}: {NOT_ENCRYPTED}")
    if bytes(mv[0:4]) != MAGIC:
        raise NotEncryptedError(
            f"{what}: not a dcstore encrypted object (bad magic): {NOT_ENCRYPTED}"
        )
    if mv[4] not in (VERSION, PUBLIC_KEY_VERSION):
        raise IntegrityError(f"{what}: unsupported encrypted format version {mv[4]}")
    kid_len = mv[5]
    if not 1 <= kid_len <= MAX_KEY_ID_SIZE:
        raise IntegrityError(f"{what}: corrupt header (bad key id length)")
    if mv[4] == VERSION:
        wrap_type, kid_at, wrapped_size = WRAP_AES_GCM, 17, WRAPPED_DEK_SIZE
        size = FIXED_HEADER_SIZE + kid_len
    else:
        wrap_type, kid_at = mv[17], 20
        wrapped_size = int.from_bytes(mv[18:20], "big")
        if wrap_type not in PUBLIC_KEY_WRAPS:
            raise IntegrityError(f"{what}: corrupt header (unknown wrap type {wrap_type})")
        if not 1 <= wrapped_size <= MAX_WRAPPED_SIZE:
            raise IntegrityError(f"{what}: corrupt header (bad wrapped key length)")
        size = V2_FIXED_HEADER_SIZE + kid_len + wrapped_size
    if len(mv) < size:
        raise IntegrityError(too_short)
    crc_at = size - _CRC_SIZE
    if zlib.crc32(mv[:crc_at]) != int.from_bytes(mv[crc_at:size], "big"):
        raise IntegrityError(f"{what}: corrupt header (checksum mismatch)")
    segment_size = int.from_bytes(mv[6:10], "big")
    try:
        key_id = check_key_id(bytes(mv[kid_at : kid_at + kid_len]).decode("ascii"))
        check_segment_size(segment_size)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"{what}: corrupt header ({exc})") from None
    at = kid_at + kid_len
    nonce_size = WRAP_NONCE_SIZE if wrap_type == WRAP_AES_GCM else 0
    return Header(
        key_id=key_id,
        segment_size=segment_size,
        nonce_prefix=bytes(mv[10:17]),
        wrap_nonce=bytes(mv[at : at + nonce_size]),
        wrapped_dek=bytes(mv[at + nonce_size : at + nonce_size + wrapped_size]),
        wrap_type=wrap_type,
    )


def is_encrypted_object(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts with a well-formed encrypted-object header (magic and CRC)."""
    if bytes(memoryview(data)[:4]) != MAGIC:
        return False
    try:
        parse_header(data, "object")
    except IntegrityError:
        return False
    return True


def refuse_ciphertext(
    data: bytes | bytearray | memoryview, what: str, why: str = ": pass keys=... (CLI: --keys URL)"
) -> None:
    """Raise :class:`KeyAccessError` (``"{what} is encrypted{why}"``) if ``data``, read
    without keys, is an encrypted object (its header: at most ``MAX_HEADER_SIZE`` bytes)."""
    if is_encrypted_object(memoryview(data)[:MAX_HEADER_SIZE]):
        raise KeyAccessError(f"{what} is encrypted{why}")


def segment_nonce(nonce_prefix: bytes, index: int, last: bool) -> bytes:
    """The 12-byte nonce of segment ``index``: ``prefix || u32 index || u8 last``."""
    return nonce_prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def segment_ad(segment_size: int, name: str) -> bytes:
    """Associated data of every segment: binds the segment size and the object name."""
    return SEGMENT_AD_LABEL + segment_size.to_bytes(4, "big") + name.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where segments lie for a plaintext of ``plain_size`` bytes."""

    header_size: int
    segment_size: int
    plain_size: int

    @property
    def segments(self) -> int:
        """Number of segments; at least one (an empty object has one empty segment)."""
        return max(1, -(-self.plain_size // self.segment_size))

    @property
    def cipher_size(self) -> int:
        return self.header_size + self.plain_size + TAG_SIZE * self.segments

    def plain_span(self, index: int) -> tuple[int, int]:
        """Plaintext ``[start, end)`` of segment ``index``."""
        start = index * self.segment_size
        return start, min(start + self.segment_size, self.plain_size)

    def cipher_span(self, index: int) -> tuple[int, int]:
        """Ciphertext ``[start, end)`` of segment ``index`` (tag included)."""
        start = self.header_size + index * (self.segment_size + TAG_SIZE)
        pstart, pend = self.plain_span(index)
        return start, start + (pend - pstart) + TAG_SIZE

    def segments_for(self, start: int, end: int) -> tuple[int, int]:
        """Segments ``[first, stop)`` holding plaintext ``[start, end)`` (``start < end``)."""
        return start // self.segment_size, (end - 1) // self.segment_size + 1

    def runs(self, first: int, stop: int, max_bytes: int) -> list[tuple[int, int]]:
        """``[first, stop)`` cut into runs of whole segments, each at most ``max_bytes``
        of ciphertext (at least one segment)."""
        step = max(1, max_bytes // (self.segment_size + TAG_SIZE))
        return [(i, min(stop, i + step)) for i in range(first, stop, step)]

    @classmethod
    def from_cipher_size(
        cls, header_size: int, segment_size: int, cipher_size: int, what: str
    ) -> Layout:
        """Invert :attr:`cipher_size`; :class:`IntegrityError` if no layout fits.

        The writer never produces a final segment without plaintext unless the
        object is empty, so such a size (e.g. 16 bytes appended to an object of
        whole segments) is rejected. A fitting layout is necessary, not
        sufficient: truncation at a segment boundary is detected only when the
        last segment is authenticated (its nonce carries the last-segment flag).
        """
        payload = cipher_size - header_size
        full = segment_size + TAG_SIZE
        if payload < TAG_SIZE:
            raise IntegrityError(f"{what}: truncated (no complete segment after the header)")
        count = -(-payload // full)
        last = payload - (count - 1) * full
        if last < TAG_SIZE:
            raise IntegrityError(f"{what}: truncated or extended (partial segment tag)")
        if last == TAG_SIZE and count > 1:
            raise IntegrityError(f"{what}: extended (a final segment without plaintext)")
        if count > MAX_SEGMENTS:
            raise IntegrityError(f"{what}: too many segments")
        layout = cls(header_size, segment_size, payload - TAG_SIZE * count)
        if layout.cipher_size != cipher_size:  # pragma: no cover - guaranteed by the checks above
            raise IntegrityError(f"{what}: size {cipher_size} fits no layout")
        return layout
