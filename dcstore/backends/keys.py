"""Object key rules shared by every backend.

A key is a relative, ``/``-separated path of non-empty segments. Rejected:
the empty key, a leading or trailing ``/``, empty segments (``a//b``), ``.``
and ``..`` segments, NUL and other control characters, backslashes, keys
longer than :data:`MAX_KEY_BYTES` UTF-8 bytes, and segments starting with the
reserved prefix :data:`RESERVED_PREFIX` (used for temporary files and
internal bookkeeping). Unicode, dots inside names and deep nesting are fine.
"""

from __future__ import annotations

import re

from dcstore.errors import InvalidKeyError

MAX_KEY_BYTES = 1024
RESERVED_PREFIX = ".dcstore"
_CONTROL = re.compile("[\x00-\x1f\x7f]")
"""NUL and the other control characters (one search instead of a loop per character)."""


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is valid, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"object key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("object key must not be empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"object key {key!r} is not valid UTF-8") from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key is {len(encoded)} bytes, the limit is {MAX_KEY_BYTES}")
    if _CONTROL.search(key):
        raise InvalidKeyError(f"object key {key!r} contains NUL or a control character")
    if "\\" in key:
        raise InvalidKeyError(f"object key {key!r} contains a backslash")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {key!r} is absolute; keys are relative")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKeyError(f"object key {key!r} has an empty path segment")
        if segment in (".", ".."):
            raise InvalidKeyError(f"object key {key!r} has a {segment!r} segment (path traversal)")
        if segment.startswith(RESERVED_PREFIX):
            raise InvalidKeyError(
                f"object key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: ``""``, or a key, optionally ending in ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix
