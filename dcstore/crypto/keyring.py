"""Key-encryption keys (KEKs): a keyring with ids, a primary, and retired ids.

Guarantees:

* Key material never appears in ``repr``/``str``, log lines or exception
  messages, and a :class:`Keyring` refuses to pickle: processes receive a
  :class:`~dcstore.crypto.sources.KeySource` and load keys themselves.
* A keyring is immutable; :meth:`Keyring.with_new_key` and
  :meth:`Keyring.retire` return new keyrings. It records when each active key
  stopped being primary (:meth:`Keyring.demoted_at`), so retirement can wait
  until writes begun under it have landed.
* Data keys are wrapped under the primary KEK, whose type decides how
  (:mod:`dcstore.crypto.kek`): ``aes`` with AES-256-GCM and a random 12-byte
  nonce (format v1; random wrap nonces bound one KEK to about 2**32 wraps,
  every ``put`` and every rewrap is one), ``rsa`` with RSA-OAEP-SHA256 and
  ``x25519`` with HPKE (format v2). The associated data binds key id,
  segment size and nonce prefix (``docs/format.md``). A keyring may hold only
  the public half of public-key KEKs (:meth:`Keyring.public_only`): it wraps,
  and every unwrap under such a key raises :class:`KeyAccessError`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NoReturn

from dcstore.crypto.format import (
    DEK_SIZE,
    NONCE_PREFIX_SIZE,
    Header,
    check_key_id,
    check_segment_size,
)
from dcstore.crypto.kek import (
    AES_KEK_SIZE,
    KEY_TYPE_OF_WRAP,
    AesKek,
    Kek,
    kek_from_entry,
    new_kek,
)
from dcstore.errors import ConfigError, KeyAccessError

KEK_SIZE = AES_KEK_SIZE
KEYFILE_FORMAT = "dcstore-keyring"
KEYFILE_VERSION = 1


def new_key_id() -> str:
    """A fresh random key id such as ``kek-20261128-3f9a1c``."""
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    return f"kek-{day}-{secrets.token_hex(3)}"


class Keyring:
    """KEKs by id, the id of the primary (used for new wraps) and retired ids.

    ``keys`` maps ids to :class:`~dcstore.crypto.kek.Kek` objects, or to 32
    bytes for an ``aes`` key.
    """

    __slots__ = ("_demoted", "_keys", "_primary", "_retired")

    def __init__(
        self,
        keys: Mapping[str, bytes | Kek],
        primary: str,
        retired: Iterable[str] = (),
        demoted: Mapping[str, datetime] | None = None,
    ):
        keks: dict[str, Kek] = {}
        for key_id, material in keys.items():
            check_key_id(key_id)
            if isinstance(material, Kek):
                keks[key_id] = material
            elif isinstance(material, bytes) and len(material) == KEK_SIZE:
                keks[key_id] = AesKek(material)
            else:
                raise ConfigError(f"key {key_id!r} must be {KEK_SIZE} bytes or a Kek")
        retired_ids = frozenset(check_key_id(k) for k in retired)
        if primary not in keys:
            raise ConfigError(f"primary key {primary!r} is not in the keyring")
        if retired_ids & keys.keys():
            both = ", ".join(sorted(retired_ids & keys.keys()))
            raise ConfigError(f"key(s) {both} are both active and retired")
        self._keys = keks
        self._primary = primary
        self._retired = retired_ids
        self._demoted = {k: t for k, t in (demoted or {}).items() if k in keys and k != primary}

    @classmethod
    def generate(
        cls, key_id: str | None = None, key_type: str = "aes", bits: int | None = None
    ) -> Keyring:
        """A keyring holding one fresh KEK of ``key_type`` (``bits``: rsa only), primary."""
        key_id = check_key_id(key_id or new_key_id())
        return cls({key_id: new_kek(key_type, bits)}, key_id)

    @property
    def primary(self) -> str:
        return self._primary

    @property
    def ids(self) -> list[str]:
        """Ids of the usable (not retired) keys, sorted."""
        return sorted(self._keys)

    @property
    def retired(self) -> frozenset[str]:
        return self._retired

    def key_type(self, key_id: str) -> str:
        """``aes``, ``rsa`` or ``x25519`` for an active key (KeyError otherwise)."""
        return self._keys[key_id].key_type

    def can_unwrap(self, key_id: str) -> bool:
        """Whether the active key ``key_id`` holds what unwrapping needs (its private half)."""
        return self._keys[key_id].has_private

    def demoted_at(self, key_id: str) -> datetime | None:
        """When the active key ``key_id`` stopped being primary (``None``: unknown or primary)."""
        return self._demoted.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        retired = sorted(self._retired)
        return f"Keyring(primary={self._primary!r}, ids={self.ids!r}, retired={retired!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a Keyring never pickles; pass a KeySource (e.g. 'file:///path/kek.json') "
            "so each process loads the keys itself"
        )

    # -- evolving the keyring ------------------------------------------------

    def with_new_key(
        self,
        key_id: str | None = None,
        *,
        primary: bool = True,
        key_type: str = "aes",
        bits: int | None = None,
    ) -> Keyring:
        """A copy with a fresh KEK of ``key_type`` added (primary unless ``primary=False``)."""
        key_id = check_key_id(key_id or new_key_id())
        if key_id in self._keys or key_id in self._retired:
            raise ConfigError(f"key id {key_id!r} already exists in the keyring")
        keys = {**self._keys, key_id: new_kek(key_type, bits)}
        return Keyring(keys, self._primary, self._retired, self._demoted).with_primary(
            key_id if primary else self._primary
        )

    def with_primary(self, key_id: str) -> Keyring:
        """A copy whose primary is ``key_id`` (which must be usable); the old
        primary is recorded as demoted now."""
        self._require(key_id, "the keyring")
        demoted = dict(self._demoted)
        if key_id != self._primary:
            demoted[self._primary] = datetime.now(timezone.utc)
        return Keyring(self._keys, key_id, self._retired, demoted)

    def retire(self, key_id: str) -> Keyring:
        """A copy where ``key_id``'s material is destroyed and its id kept as retired.

        Callers must first check that nothing depends on it
        (:func:`dcstore.crypto.rotation.key_usage`). The primary cannot be retired.
        """
        self._require(key_id, "the keyring")
        if key_id == self._primary:
            raise ConfigError(f"key {key_id!r} is the primary; make another key primary first")
        keys = {k: v for k, v in self._keys.items() if k != key_id}
        return Keyring(keys, self._primary, self._retired | {key_id}, self._demoted)

    def public_only(self) -> Keyring:
        """The keyring an ingest node gets: the public halves of the public-key
        KEKs only (secret ``aes`` keys are left out), same primary, retired ids kept.

        :class:`ConfigError` if the primary is an ``aes`` key (it has no public half).
        """
        keys = {k: pub for k, kek in self._keys.items() if (pub := kek.public_only()) is not None}
        if self._primary not in keys:
            raise ConfigError(
                f"primary key {self._primary!r} is an aes key and has no public half; "
                "add a public-key primary first: dcstore keys new --type rsa"
            )
        return Keyring(keys, self._primary, self._retired, self._demoted)

    # -- wrapping data keys --------------------------------------------------

    def _require(self, key_id: str, what: str, source: str | None = None) -> Kek:
        """The active KEK ``key_id``; a missing one is a :class:`KeyAccessError` naming the
        ids held and, when given, where the keyring came from (``source``: no secrets)."""
        kek = self._keys.get(key_id)
        if kek is not None:
            return kek
        if key_id in self._retired:
            raise KeyAccessError(f"{what}: needs key {key_id!r}, which is retired")
        held = ", ".join(self.ids) or "none"
        where = f"the keys of {source}" if source else "the keyring"
        raise KeyAccessError(
            f"{what}: needs key {key_id!r}, which is not in {where} (they hold: {held}); "
            "is that the right key file?"
        )

    def new_header(self, segment_size: int) -> tuple[Header, bytes]:
        """A fresh data key and the header that carries it wrapped under the primary."""
        check_segment_size(segment_size)
        dek = os.urandom(DEK_SIZE)
        header = Header(self._primary, segment_size, os.urandom(NONCE_PREFIX_SIZE), b"", b"")
        return self._keys[self._primary].wrap(header, dek), dek

    def unwrap(self, header: Header, what: str, source: str | None = None) -> bytes:
        """The data key of ``header``.

        :class:`KeyAccessError` if its KEK is unknown (naming ``source``, where the
        keyring came from, when given), retired, of another type than the header's
        wrap, holds only its public half, or does not unwrap it (wrong key material
        under that id, or an altered header).
        """
        kek = self._require(header.key_id, what, source)
        if kek.wrap_type != header.wrap_type:
            raise KeyAccessError(
                f"{what}: its data key is wrapped for an {KEY_TYPE_OF_WRAP[header.wrap_type]} "
                f"key, but key {header.key_id!r} is an {kek.key_type} key"
            )
        return kek.unwrap(header, what)

    def rewrap(self, header: Header, what: str) -> Header:
        """``header`` with its data key rewrapped under the primary; payload unaffected."""
        dek = self.unwrap(header, what)
        fresh = Header(self._primary, header.segment_size, header.nonce_prefix, b"", b"")
        return self._keys[self._primary].wrap(fresh, dek)

    # -- key file document ---------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        """The JSON-able key file document. It holds key material: write it 0600."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        keys: list[dict[str, Any]] = []
        for key_id, kek in self._keys.items():
            entry = {"id": key_id, "type": kek.key_type, **kek.entry()}
            if key_id in self._demoted:
                entry["demoted"] = self._demoted[key_id].isoformat(timespec="seconds")
            keys.append(entry)
        keys += [{"id": k, "retired": True} for k in sorted(self._retired)]
        return {
            "format": KEYFILE_FORMAT,
            "version": KEYFILE_VERSION,
            "primary": self._primary,
            "updated": now,
            "keys": keys,
        }

    @classmethod
    def from_document(cls, text: str | bytes, where: str) -> Keyring:
        """Parse a key file document; :class:`ConfigError` naming ``where`` (never the content)."""
        try:
            doc = json.loads(text)
        except ValueError:
            raise ConfigError(f"{where}: not a JSON key file") from None
        if not isinstance(doc, dict) or doc.get("format") != KEYFILE_FORMAT:
            raise ConfigError(f"{where}: not a {KEYFILE_FORMAT} document")
        if doc.get("version") != KEYFILE_VERSION:
            raise ConfigError(f"{where}: unsupported key file version {doc.get('version')!r}")
        keys: dict[str, Kek] = {}
        retired: list[str] = []
        demoted: dict[str, datetime] = {}
        updated = _timestamp(doc.get("updated"))
        entries = doc.get("keys")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: 'keys' must be a non-empty list")
        for i, entry in enumerate(entries):
            key_id = entry.get("id") if isinstance(entry, dict) else None
            try:
                if not isinstance(key_id, str):
                    raise ValueError("not a string")
                check_key_id(key_id)
            except ValueError:
                raise ConfigError(f"{where}: keys[{i}] has a bad id") from None
            if key_id in keys or key_id in retired:
                raise ConfigError(f"{where}: key id {key_id!r} appears twice")
            if entry.get("retired"):
                retired.append(key_id)
                continue
            keys[key_id] = kek_from_entry(entry, f"{where}: key {key_id!r}")
            # Files written before "demoted" existed: the last update is a safe upper bound.
            when = _timestamp(entry.get("demoted")) or updated
            if when is not None:
                demoted[key_id] = when
        primary = doc.get("primary")
        if primary not in keys:
            raise ConfigError(f"{where}: primary {primary!r} is not an active key in the file")
        return cls(keys, primary, retired, demoted)


def _timestamp(value: object) -> datetime | None:
    """An ISO-8601 time with a zone from a key file, else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
