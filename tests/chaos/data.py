"""The chaos datasets' content: every sample's bytes follow from (generation, index), so
a reader checks what it got without a copy of the data."""

from __future__ import annotations

import hashlib
from typing import Any

from dcstore.testing.conformance import payload

SAMPLES = 400  # even, so two ranks split every epoch exactly (no padded repeats)
SHARD_SIZE = 96 * 1024


def sample(generation: int, index: int) -> dict[str, Any]:
    size = 1000 + (index * 7919 + generation * 104729) % 6000
    return {"__key__": f"s{index:05d}", "bin": payload(size, generation * 1_000_003 + index)}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def expected(generation: int) -> dict[str, str]:
    """``{key: digest of its bytes}`` for one generation."""
    samples = (sample(generation, i) for i in range(SAMPLES))
    return {s["__key__"]: digest(s["bin"]) for s in samples}


def fingerprint(item: dict[str, Any]) -> tuple[str, str]:
    """What a DataLoader worker hands back: (key, digest of the bytes it decoded)."""
    return str(item["__key__"]), digest(bytes(item["bin"]))


def pack(store: Any, generation: int) -> str:
    """Write one generation as a new dataset version; return the version committed."""
    from dcstore.loaders import ShardWriter

    with ShardWriter(store, shard_size=SHARD_SIZE, metadata={"generation": str(generation)}) as w:
        for i in range(SAMPLES):
            w.write(sample(generation, i))
    return w.version
