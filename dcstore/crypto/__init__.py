"""Encrypted shards: segmented AES-256-GCM envelope encryption with key rotation.

``EncryptedBackend(inner, keys)`` stacks on any backend; ``keys`` comes from
:func:`open_key_source`. The byte format is specified in ``docs/format.md``.
"""

from __future__ import annotations

from dcstore.crypto.backend import EncryptedBackend
from dcstore.crypto.format import DEFAULT_SEGMENT_SIZE, Header, Layout, parse_header
from dcstore.crypto.keyring import Keyring, new_key_id
from dcstore.crypto.sources import (
    EnvKeySource,
    FileKeySource,
    KeySource,
    StaticKeySource,
    open_key_source,
    write_key_file,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "EncryptedBackend",
    "EnvKeySource",
    "FileKeySource",
    "Header",
    "KeySource",
    "Keyring",
    "Layout",
    "StaticKeySource",
    "new_key_id",
    "open_key_source",
    "parse_header",
    "write_key_file",
]
