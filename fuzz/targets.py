"""Fuzz targets: every parser of untrusted bytes, with the property each must keep.

Each ``target_<name>(data)`` feeds ``data`` to one parser. The property checked
for all of them: only the documented errors escape (``ALLOWED[name]``); anything
else is a crash the fuzzer reports. Targets also check what a parse that
*succeeds* must satisfy (a decrypted object is the one that was encrypted; parsed
tar members lie inside the buffer). Hangs are caught by the runner's per-input
timeout, and allocations by its RSS limit (see fuzz/README.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dcstore.backends.memory import MemoryBackend
from dcstore.backends.options import parse_url
from dcstore.backends.registry import open_backend
from dcstore.cache.resp import Desync, ReplyError, read_mget, reply_capacity
from dcstore.crypto.backend import EncryptedBackend
from dcstore.crypto.format import Layout, header_size_hint, parse_header
from dcstore.crypto.keyring import Keyring
from dcstore.errors import ConfigError, IntegrityError, KeyAccessError
from dcstore.loaders.manifest import Manifest
from dcstore.loaders.tario import group_samples, iter_samples, parse_members
from dcstore.tokens.manifest import TokenManifest

# A fixed keyring and one object encrypted under it: the decrypt target's seed.
FIXED_KEYRING = Keyring.from_document(
    json.dumps(
        {
            "format": "dcstore-keyring",
            "version": 1,
            "primary": "fuzz-k1",
            "keys": [{"id": "fuzz-k1", "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}],
        }
    ),
    "fuzz keyring",
)
PLAINTEXT = bytes(range(256)) * 20
SEGMENT = 1024


def _encrypted_store() -> tuple[EncryptedBackend, MemoryBackend]:
    inner = MemoryBackend("fuzz-decrypt")
    return EncryptedBackend(inner, FIXED_KEYRING, segment_size=SEGMENT), inner


def seed_ciphertext() -> bytes:
    """A valid encrypted object of PLAINTEXT named ``obj`` (for the corpus)."""
    store, inner = _encrypted_store()
    store.put("obj", PLAINTEXT)
    return inner.get("obj")


def target_tar(data: bytes) -> None:
    members = parse_members(data)
    for m in members:
        assert 0 <= m.offset <= m.offset + m.size <= len(data), m
    group_samples(members)
    for _ in iter_samples(data):
        pass


def target_header(data: bytes) -> None:
    hint = header_size_hint(data)
    assert hint >= 0
    header = parse_header(data, "fuzz")
    Layout.from_cipher_size(header.size, header.segment_size, len(data), "fuzz")


SEED_OBJECT = Path(__file__).resolve().parent / "corpus" / "decrypt" / "object"


def target_decrypt(data: bytes) -> None:
    """Only the committed seed object (PLAINTEXT under the fixed key) may decrypt: any
    other input decrypting means a forgery or an accepted alteration (appended bytes,
    a changed header field)."""
    store, inner = _encrypted_store()
    inner.put("obj", data)
    plain = store.get("obj")
    assert plain == PLAINTEXT, "ciphertext decrypted to another plaintext"
    assert data == SEED_OBJECT.read_bytes(), "an altered ciphertext decrypted"


def target_manifest(data: bytes) -> None:
    manifest = Manifest.from_parquet(data, where="fuzz")
    for shard in manifest.shards:
        assert len(shard.offsets) == len(shard.lengths), shard.key


def target_tokens(data: bytes) -> None:
    manifest = TokenManifest.from_parquet(data, where="fuzz")
    starts, lengths = manifest.document_spans()
    assert ((starts >= 0) & (lengths >= 0) & (starts + lengths <= manifest.num_tokens)).all()
    for start in starts[:50].tolist():  # every document start maps to a shard of the stream
        manifest.pieces(start, start)


def target_keyfile(data: bytes) -> None:
    Keyring.from_document(data, "fuzz key file")


def target_url(data: bytes) -> None:
    url = data.decode("utf-8", "replace")
    parsed = parse_url(url)
    if parsed.scheme in ("memory", "file"):  # open only what needs no server
        open_backend(url).close()


class _Feed:
    """A socket stand-in that hands out ``data`` in the chunk sizes it encodes."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def recv_into(self, view: memoryview) -> int:
        step = 1 + (self.data[self.pos] % 97 if self.pos < len(self.data) else 0)
        piece = self.data[self.pos : self.pos + min(step, len(view))]
        view[: len(piece)] = piece
        self.pos += len(piece)
        return len(piece)


def target_resp(data: bytes) -> None:
    if len(data) < 2:
        return
    count = data[0] % 5
    sizes = [data[1] * (i + 1) % 300 for i in range(count)]
    reply = data[2:]
    buf = bytearray(7 + reply_capacity(sizes))
    values, end = read_mget(_Feed(reply), buf, 7, sizes)  # type: ignore[arg-type]
    assert len(values) == len(sizes) and end <= len(buf)
    for (offset, size), expected in zip(values, sizes, strict=True):
        assert size == expected
        assert offset is None or 7 <= offset <= offset + size <= end


TARGETS: dict[str, Callable[[bytes], None]] = {
    "tar": target_tar,
    "header": target_header,
    "decrypt": target_decrypt,
    "manifest": target_manifest,
    "tokens": target_tokens,
    "keyfile": target_keyfile,
    "url": target_url,
    "resp": target_resp,
}

ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "tar": (IntegrityError,),
    "header": (IntegrityError, KeyAccessError),
    "decrypt": (IntegrityError, KeyAccessError),
    "manifest": (IntegrityError,),
    "tokens": (IntegrityError,),
    "keyfile": (ConfigError,),
    "url": (ConfigError,),
    # The Redis tier turns these into "tier unavailable" (the read goes to the origin).
    "resp": (ReplyError, Desync, ConnectionError),
}


def check(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; raise only if a non-documented error escapes."""
    try:
        TARGETS[name](data)
    except ALLOWED[name]:
        pass


__all__ = ["ALLOWED", "TARGETS", "check", "seed_ciphertext"]
