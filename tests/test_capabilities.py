"""Declared capabilities (read alignment, the encryption key id, sweep) travel through
every wrapper: one more wrapper on top never switches them off."""

from __future__ import annotations

import pytest

from dcstore import ShardedDataset, ShardWriter, open_store
from dcstore.backends.base import Backend, Wrapper
from dcstore.backends.memory import MemoryBackend
from dcstore.cache import CachedBackend
from dcstore.crypto import EncryptedBackend, Keyring, StaticKeySource
from dcstore.loaders.manifest import load_manifest
from dcstore.loaders.reader import aligned_window
from dcstore.retry import RetryingBackend
from dcstore.testing.instrumented import InstrumentedBackend


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


def stacks(origin: Backend, keyring: Keyring) -> list[Backend]:
    encrypted = EncryptedBackend(CachedBackend(RetryingBackend(origin), "memory"),
                                 StaticKeySource(keyring), segment_size=65536)  # fmt: skip
    return [
        encrypted,
        InstrumentedBackend(encrypted),
        RetryingBackend(InstrumentedBackend(encrypted)),
    ]


def test_plain_backends_declare_nothing() -> None:
    plain = MemoryBackend("memory://caps-plain")
    for store in (
        plain,
        RetryingBackend(plain),
        InstrumentedBackend(CachedBackend(plain, "memory")),
    ):
        assert store.read_alignment is None and store.encryption_key_id is None
        assert store.sweep() is None  # puts in memory leave nothing behind


def test_wrappers_forward_alignment_and_key_id(keyring: Keyring) -> None:
    for store in stacks(MemoryBackend("memory://caps"), keyring):
        assert isinstance(store, Wrapper)
        assert store.read_alignment == 65536
        assert store.encryption_key_id == str(keyring.primary)
        assert aligned_window(store, 100_000) == 131072


def test_a_dataset_packed_through_an_extra_wrapper_records_its_key(keyring: Keyring) -> None:
    origin = MemoryBackend("memory://caps-pack")
    top = stacks(origin, keyring)[2]
    with ShardWriter(top, shard_size=4096) as writer:
        for i in range(30):
            writer.write({"__key__": f"s{i:02d}", "bin": bytes([i]) * 300})
    manifest = load_manifest(top)
    assert {s.key_id for s in manifest.shards} == {str(keyring.primary)}
    assert [s["__key__"] for s in ShardedDataset(top)] == [f"s{i:02d}" for i in range(30)]
    with pytest.raises(Exception, match="encrypted"):  # without keys: never parsed as plaintext
        load_manifest(open_store(origin))
