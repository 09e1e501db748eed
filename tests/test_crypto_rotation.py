"""Rotation rewraps headers only (payload byte-for-byte identical); usage; retire; verify."""

from __future__ import annotations

import argparse
import contextlib
import os
import uuid

import pytest

from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import EncryptedBackend, Keyring, parse_header
from dcstore.crypto.rotation import check_retirable, key_usage, rewrap, rotate
from dcstore.crypto.verify import verify
from dcstore.errors import ConfigError, IntegrityError, KeyAccessError, StorageFullError
from dcstore.testing.instrumented import InstrumentedBackend

SEG = 4096


def fresh(keyring: Keyring) -> tuple[EncryptedBackend, MemoryBackend]:
    inner = MemoryBackend(f"rot-{uuid.uuid4().hex[:8]}")
    return EncryptedBackend(inner, keyring, segment_size=SEG), inner


def payload_of(blob: bytes) -> bytes:
    return blob[parse_header(blob, "t").size :]


def test_rotation_keeps_payload_bytes_identical() -> None:
    old = Keyring.generate("old")
    enc, inner = fresh(old)
    data = {f"d/{i}": os.urandom(i * 3000 + 1) for i in range(6)}
    data["d/empty"] = b""
    for key, value in data.items():
        enc.put(key, value)
    before = {key: inner.get(key) for key in data}

    new = old.with_new_key("a-much-longer-new-key-id")  # header grows: payload moves
    rotated = EncryptedBackend(inner, new, segment_size=SEG)
    results = list(rotate(rotated, "d/"))
    assert {r.status for r in results} == {"rewrapped"} and len(results) == len(data)
    for key, value in data.items():
        after = inner.get(key)
        assert payload_of(after) == payload_of(before[key]), key  # byte-for-byte
        header = parse_header(after, key)
        assert header.key_id == "a-much-longer-new-key-id"
        assert header.nonce_prefix == parse_header(before[key], key).nonce_prefix
        assert rotated.get(key) == value
    assert {r.status for r in rotate(rotated, "d/")} == {"current"}  # idempotent

    usage = key_usage(rotated)
    assert usage.objects == {"a-much-longer-new-key-id": len(data)}
    check_retirable(rotated, "old")
    retired = EncryptedBackend(inner, new.retire("old"), segment_size=SEG)
    assert all(retired.get(k) == v for k, v in data.items())
    inner.put("d/1", before["d/1"])  # an object still under the retired key
    with pytest.raises(KeyAccessError, match="retired"):
        retired.get("d/1")


def test_retire_refused_while_objects_depend_on_the_key() -> None:
    old = Keyring.generate("old")
    enc, inner = fresh(old)
    enc.put("a", b"1")
    enc.put("b", b"2")
    new = old.with_new_key("new")
    rotated = EncryptedBackend(inner, new, segment_size=SEG)
    rewrap(rotated, "a")
    usage = key_usage(rotated)
    assert usage.objects == {"old": 1, "new": 1}
    with pytest.raises(ConfigError, match="still wraps 1 object"):
        check_retirable(rotated, "old")
    with pytest.raises(ConfigError, match="primary"):
        check_retirable(rotated, "new")
    inner.put("junk", b"not encrypted")
    rewrap(rotated, "b")
    with pytest.raises(ConfigError, match="unreadable"):
        check_retirable(rotated, "old")
    inner.delete("junk")
    assert check_retirable(rotated, "old") == 2


def test_rotation_reports_failures_and_continues() -> None:
    enc, inner = fresh(Keyring.generate("k1"))
    enc.put("a", b"1")
    inner.put("b-plain", b"plaintext object")
    enc.put("c", b"3")
    stranger = EncryptedBackend(inner, Keyring.generate("other"), segment_size=SEG)
    stranger.put("d-other", b"4")
    rotated = EncryptedBackend(inner, enc.keyring.with_new_key("k2"), segment_size=SEG)
    results = {r.key: r for r in rotate(rotated)}
    assert results["a"].status == results["c"].status == "rewrapped"
    assert results["b-plain"].status == "failed" and "encrypted object" in results["b-plain"].error
    assert results["d-other"].status == "failed" and "'other'" in results["d-other"].error


class FillsUp(MemoryBackend):
    """A store that is full after ``room`` more puts."""

    room = 1

    def put(self, key: str, data):  # type: ignore[no-untyped-def]
        if self.room <= 0:
            raise StorageFullError(f"{self.url}: put {key!r}: no space left on device")
        self.room -= 1
        return super().put(key, data)


def test_a_full_store_stops_rotation_and_keeps_what_was_rewrapped(monkeypatch) -> None:
    """A full disk failed every later object one by one and exited 1, not 7."""
    inner = FillsUp(f"rot-{uuid.uuid4().hex[:8]}")
    enc = EncryptedBackend(MemoryBackend(inner.name), Keyring.generate("k1"), segment_size=SEG)
    for key in ("a", "b", "c"):
        enc.put(key, key.encode() * 100)
    rotated = EncryptedBackend(inner, enc.keyring.with_new_key("k2"), segment_size=SEG)
    done = []
    with pytest.raises(StorageFullError):
        done.extend(rotate(rotated))
    assert [r.status for r in done] == ["rewrapped"]
    assert all(rotated.get(k) == k.encode() * 100 for k in ("a", "b", "c"))

    import dcstore.cli.keys as keys_cli
    import dcstore.loaders.versions as versions

    repinned = []
    monkeypatch.setattr(keys_cli, "rotate", lambda store, prefix: rotate(rotated, prefix))
    monkeypatch.setattr(versions, "repin", lambda store, new: repinned.append(new) or 0)
    monkeypatch.setattr(keys_cli, "_encrypted_store", lambda *a: contextlib.nullcontext(rotated))
    inner.room = 1
    args = argparse.Namespace(store="x", prefix="", verbose=False)
    with pytest.raises(StorageFullError):
        keys_cli.cmd_rotate(args)
    assert len(repinned) == 1 and len(repinned[0]) == 1  # the one rewrapped before it stopped


def test_verify_reports_every_failure() -> None:
    enc, inner = fresh(Keyring.generate("k1"))
    for i in range(5):
        enc.put(f"v/{i}", os.urandom(5 * SEG + 7))
    blob = bytearray(inner.get("v/1"))
    h = parse_header(blob, "v/1").size
    blob[h + 10] ^= 1  # segment 0
    blob[h + 3 * (SEG + 16) + 5] ^= 1  # segment 3
    inner.put("v/1", bytes(blob))
    inner.put("v/3", inner.get("v/3")[:-1])
    inner.put("v/renamed", inner.get("v/4"))
    EncryptedBackend(inner, Keyring.generate("k9"), segment_size=SEG).put("v/strange-key", b"x")
    checks = {c.key: c for c in verify(enc, "v/")}
    assert len(checks) == 7
    assert [k for k, c in checks.items() if c.ok] == ["v/0", "v/2", "v/4"]
    assert checks["v/1"].bad_segments == [0, 3] and checks["v/1"].kind == "integrity"
    assert checks["v/3"].kind == "integrity"
    assert checks["v/renamed"].bad_segments == list(range(6))
    assert checks["v/strange-key"].kind == "key"


def test_ranges_read_only_needed_segments() -> None:
    counting = InstrumentedBackend(MemoryBackend(f"count-{uuid.uuid4().hex[:8]}"))
    enc = EncryptedBackend(counting, Keyring.generate(), segment_size=SEG)
    data = os.urandom(40 * SEG + 123)
    enc.put("big", data)
    counting.ranges.clear()
    assert enc.get_range("big", 10 * SEG + 5, 11 * SEG + 9) == data[10 * SEG + 5 : 11 * SEG + 9]
    assert counting.gets == 0
    read = sum(end - start for _, start, end in counting.ranges)
    assert read == 2 * (SEG + 16)  # two segments; the header came from the cache of put
    counting.ranges.clear()
    fresh_reader = EncryptedBackend(counting, enc.keys, segment_size=SEG)
    assert fresh_reader.get_range("big", 0, 1) == data[:1]
    assert sum(e - s for _, s, e in counting.ranges) <= 200 + SEG + 16  # header + one segment
    counting.ranges.clear()
    assert fresh_reader.head("big").size == len(data)
    assert counting.ranges == []  # header cached by version


def test_range_read_survives_a_concurrent_overwrite() -> None:
    """A range whose header was read before an overwrite is retried, not reported corrupt."""
    counting = InstrumentedBackend(MemoryBackend(f"race-{uuid.uuid4().hex[:8]}"))
    enc = EncryptedBackend(counting, Keyring.generate(), segment_size=SEG)
    enc.put("r", b"a" * 3 * SEG)
    original_get_range = counting.get_range
    raced = []

    def racing_get_range(key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        if start > 0 and not raced:  # the first segment read: overwrite just before it
            raced.append(True)
            enc.put("r", b"b" * 3 * SEG)
        return original_get_range(key, start, end, version=version)

    counting.get_range = racing_get_range  # type: ignore[method-assign]
    assert enc.get_range("r", SEG, SEG + 10) == b"b" * 10
    assert raced


def test_a_stale_cached_header_is_dropped_not_fatal() -> None:
    counting = InstrumentedBackend(MemoryBackend(f"stale-{uuid.uuid4().hex[:8]}"))
    enc = EncryptedBackend(counting, Keyring.generate(), segment_size=SEG)
    enc.put("s", b"x" * 3 * SEG)
    enc.put("other", b"y" * 3 * SEG)
    meta = counting.head("s")
    other_header = enc._header(counting.head("other"))
    enc._remember(("s", meta.version), other_header, meta.size)  # as if a token were reused
    assert enc.get_range("s", 5, SEG + 5) == b"x" * SEG
    blob = bytearray(counting.get("s"))
    blob[parse_header(blob, "s").size + 3] ^= 1  # real damage: raised after one fresh retry
    counting.put("s", bytes(blob))
    counting.ranges.clear()
    with pytest.raises(IntegrityError):
        enc.get_range("s", 0, 10)
    headers_read = [r for r in counting.ranges if r[1] == 0]
    assert len(headers_read) == 1


def test_rotation_key_usage_and_verify_refuse_a_stack_with_a_cache() -> None:
    """They read through the cache: a forged cached header made retire destroy a key the
    stored object needed, a damaged cached segment was written back over the good object
    by rotate, and verify passed an object damaged in storage while the cache was warm."""
    from dcstore.cache import CachedBackend, LruTier
    from dcstore.crypto import StaticKeySource

    keys = StaticKeySource(Keyring.generate("k"))
    cached = EncryptedBackend(
        CachedBackend(MemoryBackend(f"rot-{uuid.uuid4().hex}"), LruTier(max_bytes=1 << 20)), keys
    )
    cached.put("a", b"x" * 100)
    for check in (
        lambda: list(rotate(cached)),
        lambda: rewrap(cached, "a"),
        lambda: key_usage(cached),
        lambda: check_retirable(cached, "old"),
        lambda: list(verify(cached)),
    ):
        with pytest.raises(ConfigError, match=r"reads the storage itself: open .* without a cache"):
            check()


def test_rotation_is_not_re_encryption_and_the_docs_say_how_to_re_encrypt(tmp_path) -> None:
    """Outside review: the docs said to rotate and retire after a compromise, but rotation
    keeps each object's data key and ciphertext, so the stolen key plus any old copy of a
    header (a backup, a snapshot, a cache) still decrypts the rotated object. The docs now
    say so and tell to re-encrypt; the recipes they give are checked here."""
    import subprocess
    import sys
    from pathlib import Path

    from dcstore import open_store
    from dcstore.backends.local import LocalBackend
    from dcstore.crypto import FileKeySource

    def cli(*args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DCSTORE_KEYS")}
        done = subprocess.run(
            [sys.executable, "-m", "dcstore", *args], capture_output=True, text=True,
            timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stderr)

    def opened_by_the_thief(header_from: bytes, payload_from: bytes) -> bytes:
        blob = header_from[: parse_header(header_from, "a/x").size] + payload_of(payload_from)
        inner = MemoryBackend(f"thief-{uuid.uuid4().hex[:8]}")
        inner.put("a/x", blob)
        return EncryptedBackend(inner, stolen, segment_size=SEG).get("a/x")

    keys, old, new = tmp_path / "kek.json", tmp_path / "old", tmp_path / "new"
    FileKeySource(keys).save(Keyring.generate("stolen"))
    stolen = FileKeySource(keys).load()  # what the thief holds
    data = os.urandom(3 * SEG + 5)
    EncryptedBackend(LocalBackend(old), f"file://{keys}", segment_size=SEG).put("a/x", data)
    backup = (old / "a" / "x").read_bytes()  # an old copy of the object: a backup
    FileKeySource(keys).update(lambda keyring: keyring.with_new_key("fresh"))

    cli("keys", "rotate", str(old), "--keys", str(keys))
    rotated = (old / "a" / "x").read_bytes()
    assert parse_header(rotated, "a/x").key_id == "fresh"
    assert opened_by_the_thief(backup, rotated) == data  # rotation alone leaves it open

    cli("cp", "-r", str(old), str(new), "--keys", str(keys))  # docs: re-encrypt to a new store
    copied = (new / "a" / "x").read_bytes()
    assert parse_header(copied, "a/x").key_id == "fresh"
    assert payload_of(copied) != payload_of(backup)
    with pytest.raises(IntegrityError):
        opened_by_the_thief(backup, copied)
    cli("keys", "retire", "stolen", str(new), "--keys", str(keys), "--min-age", "0")
    with open_store(new, keys=str(keys)) as store:
        assert store.get("a/x") == data

    with open_store(old, keys=str(keys)) as store:  # docs: in place, in Python
        store.put("a/x", store.get("a/x"))
    with pytest.raises(IntegrityError):
        opened_by_the_thief(backup, (old / "a" / "x").read_bytes())

    root = Path(__file__).parents[1]
    fmt = " ".join((root / "docs" / "format.md").read_text().split())
    assert "Rotation is not re-encryption: it keeps each object's DEK and ciphertext" in fmt
    assert "`dcstore cp -r OLD NEW --keys kek.json`" in fmt
    assert "`store.put(key, store.get(key))` re-encrypts one object in place" in fmt
    assert "rotate, and retire with `--min-age 0`" not in fmt  # the advice the review faulted
    readme = " ".join((root / "README.md").read_text().split())
    assert "After a compromise, re-encrypt" in readme
    assert "`dcstore cp -r ./vault ./vault2 --keys vault.json`" in readme
