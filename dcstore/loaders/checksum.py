"""Per-sample checksums of plaintext datasets (xxHash XXH3-64).

Each sample's checksum covers its whole tar record in the shard (headers,
payloads and padding: manifest bytes ``[offset, offset + length)``), so a
flipped byte anywhere in a sample is caught when the sample is read.
Encrypted datasets record it too, but their samples are checked by AES-GCM
instead: every byte a reader gets from an encrypted store was authenticated
on the way, so the checksum would check nothing more (``dcstore verify`` of a
decrypted copy still can).

XXH3-64 runs at memory speed (see ``docs/samples.md`` for the measured cost
per 100 KiB sample); it detects accidental corruption, not tampering.
"""

from __future__ import annotations

from dataclasses import dataclass

import xxhash

ALGORITHM = "xxh3_64"


def sample_checksum(data: bytes | bytearray | memoryview) -> int:
    """The checksum of one sample's tar record."""
    return xxhash.xxh3_64_intdigest(data)


@dataclass(frozen=True, slots=True)
class CorruptSample:
    """Stands in for a sample whose bytes do not match the manifest's checksum."""

    index: int
    message: str


def mismatch(url: str, key: str | None, index: int) -> CorruptSample:
    """The :class:`CorruptSample` of global sample ``index`` (key ``key``; ``None``: its tar
    header is too damaged to tell) in shard ``url``."""
    name = repr(key) if key is not None else "(key unreadable: its tar header is damaged)"
    return CorruptSample(
        index, f"shard {url}: sample {name} (index {index}) does not match its checksum"
    )
