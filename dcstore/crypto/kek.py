"""Key-encryption keys (KEKs) of each type: how one KEK wraps and unwraps data keys.

Types (``KEY_TYPES``):

* ``aes`` — 32 secret bytes; AES-256-GCM wrap, format version 1.
* ``rsa`` — an RSA key pair, 3072..8192 bits; RSA-OAEP with SHA-256 (and
  MGF1-SHA-256), the wrap associated data as the OAEP label; format version 2.
* ``x25519`` — an X25519 key pair; HPKE (RFC 9180) base mode with
  DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM from
  ``cryptography``, the wrap associated data as the HPKE ``info``; version 2.

Guarantees:

* Key material is never in ``repr``, messages or pickles (a KEK refuses to pickle).
* A public-key KEK may hold only its public half (what ingest nodes get from
  ``dcstore keys export-public``): it wraps new data keys, and any unwrap
  raises :class:`KeyAccessError` saying the private half is missing.
* Unwrapped data keys of public-key KEKs are cached per wrapped key (at most
  ``UNWRAP_CACHE_ENTRIES``, in memory only): a private-key operation costs
  milliseconds and readers unwrap once per request, e.g. per ranged read.
"""

from __future__ import annotations

import abc
import base64
import binascii
import dataclasses
import os
import threading
from collections import OrderedDict
from typing import Any, ClassVar, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dcstore.crypto.format import (
    DEK_SIZE,
    MAX_WRAPPED_SIZE,
    WRAP_AES_GCM,
    WRAP_HPKE_X25519,
    WRAP_NONCE_SIZE,
    WRAP_RSA_OAEP_SHA256,
    Header,
)
from dcstore.errors import ConfigError, KeyAccessError

KEY_TYPES = ("aes", "rsa", "x25519")
AES_KEK_SIZE = 32
MIN_RSA_BITS = 3072
MAX_RSA_BITS = MAX_WRAPPED_SIZE * 8
DEFAULT_RSA_BITS = 3072
UNWRAP_CACHE_ENTRIES = 4096
KEY_TYPE_OF_WRAP = {WRAP_AES_GCM: "aes", WRAP_RSA_OAEP_SHA256: "rsa", WRAP_HPKE_X25519: "x25519"}


class Kek(abc.ABC):
    """One key-encryption key. Subclasses hold the material; nothing else does."""

    key_type: ClassVar[str]
    wrap_type: ClassVar[int]

    @property
    def has_private(self) -> bool:
        """Whether this KEK can unwrap (false for a public-only key)."""
        return True

    @abc.abstractmethod
    def wrap(self, header: Header, dek: bytes) -> Header:
        """``header`` (key id, segment size, nonce prefix set) carrying ``dek`` wrapped."""

    @abc.abstractmethod
    def unwrap(self, header: Header, what: str) -> bytes:
        """The data key of ``header``; :class:`KeyAccessError` if it does not unwrap."""

    @abc.abstractmethod
    def entry(self) -> dict[str, str]:
        """The key file fields holding the material (secret unless public-only)."""

    def public_only(self) -> Kek | None:
        """This KEK without its private half; ``None`` for a secret (AES) key."""
        return None

    def __repr__(self) -> str:
        half = "" if self.has_private else ", public only"
        return f"{type(self).__name__}({self.key_type}{half})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("key-encryption keys never pickle; pass a KeySource")


def _does_not_unwrap(header: Header, what: str) -> KeyAccessError:
    return KeyAccessError(
        f"{what}: the data key does not unwrap under key {header.key_id!r} "
        "(wrong key material for that id, or an altered header)"
    )


class AesKek(Kek):
    """32 secret bytes; AES-256-GCM wrap with a random 12-byte nonce (format v1)."""

    key_type = "aes"
    wrap_type = WRAP_AES_GCM
    __slots__ = ("_aead", "_material")

    def __init__(self, material: bytes):
        if not isinstance(material, bytes) or len(material) != AES_KEK_SIZE:
            raise ConfigError(f"an aes key must be {AES_KEK_SIZE} bytes")
        self._material = material
        self._aead = AESGCM(material)

    @classmethod
    def generate(cls) -> AesKek:
        return cls(os.urandom(AES_KEK_SIZE))

    def wrap(self, header: Header, dek: bytes) -> Header:
        nonce = os.urandom(WRAP_NONCE_SIZE)
        bare = dataclasses.replace(header, wrap_type=WRAP_AES_GCM, wrap_nonce=nonce)
        return dataclasses.replace(bare, wrapped_dek=self._aead.encrypt(nonce, dek, bare.wrap_ad()))

    def unwrap(self, header: Header, what: str) -> bytes:
        try:
            return self._aead.decrypt(header.wrap_nonce, header.wrapped_dek, header.wrap_ad())
        except InvalidTag:
            raise _does_not_unwrap(header, what) from None

    def entry(self) -> dict[str, str]:
        return {"key": base64.b64encode(self._material).decode("ascii")}


class PublicKek(Kek):
    """A key pair (or its public half); version-2 headers; cached unwraps."""

    __slots__ = ("_cache", "_lock", "_private", "_public")

    def __init__(self, public: Any, private: Any = None):
        self._public = public
        self._private = private
        self._cache: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def has_private(self) -> bool:
        return self._private is not None

    @abc.abstractmethod
    def _encrypt(self, dek: bytes, ad: bytes) -> bytes: ...

    @abc.abstractmethod
    def _decrypt(self, wrapped: bytes, ad: bytes) -> bytes: ...

    def wrap(self, header: Header, dek: bytes) -> Header:
        bare = dataclasses.replace(header, wrap_type=self.wrap_type, wrap_nonce=b"")
        return dataclasses.replace(bare, wrapped_dek=self._encrypt(dek, bare.wrap_ad()))

    def unwrap(self, header: Header, what: str) -> bytes:
        if self._private is None:
            raise KeyAccessError(
                f"{what}: needs the private half of {self.key_type} key {header.key_id!r}; "
                "this key file holds only its public half (it can write, not read)"
            )
        ad = header.wrap_ad()
        cache_key = (ad, header.wrapped_dek)
        with self._lock:
            dek = self._cache.get(cache_key)
            if dek is not None:
                self._cache.move_to_end(cache_key)
                return dek
        try:
            dek = self._decrypt(header.wrapped_dek, ad)
        except (InvalidTag, ValueError):
            raise _does_not_unwrap(header, what) from None
        if len(dek) != DEK_SIZE:
            raise _does_not_unwrap(header, what)
        with self._lock:
            self._cache[cache_key] = dek
            while len(self._cache) > UNWRAP_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return dek

    def entry(self) -> dict[str, str]:
        der = self._public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fields = {"public": base64.b64encode(der).decode("ascii")}
        if self._private is not None:
            der = self._private.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fields["private"] = base64.b64encode(der).decode("ascii")
        return fields

    def public_only(self) -> PublicKek:
        return type(self)(self._public)

    @classmethod
    def from_entry(cls, entry: dict[str, Any], what: str) -> PublicKek:
        """Load the DER halves of a key file entry; :class:`ConfigError` naming ``what``."""
        private = None
        try:
            public = serialization.load_der_public_key(_b64(entry.get("public")))
            if entry.get("private") is not None:
                # OpenSSL's RSA key check costs 0.1-2 s per load (every process, every
                # key file change); key files are trusted (0600, refused when others may
                # write them), and _check's pairwise test catches a damaged key instead.
                private = serialization.load_der_private_key(
                    _b64(entry["private"]), None, unsafe_skip_rsa_key_validation=True
                )
        except (ValueError, TypeError, binascii.Error):
            raise ConfigError(f"{what} does not hold a valid {cls.key_type} key") from None
        kek = cls(public, private)
        kek._check(what)
        return kek

    def _check(self, what: str) -> None:
        """The private half, if any, belongs to the public half and unwraps what the
        public half wraps (a pairwise test: one wrap and unwrap of a random key)."""
        if self._private is None:
            return
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        mismatch = ConfigError(f"{what}: its private half does not match its public half")
        if self._private.public_key().public_bytes(*spki) != self._public.public_bytes(*spki):
            raise mismatch
        probe, ad = os.urandom(DEK_SIZE), b"dcstore pairwise test"
        try:
            if self._decrypt(self._encrypt(probe, ad), ad) != probe:
                raise mismatch
        except (InvalidTag, ValueError):
            raise mismatch from None


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError("not base64 text")
    return base64.b64decode(value, validate=True)


class RsaKek(PublicKek):
    """RSA-OAEP-SHA256 (MGF1-SHA256), label = wrap associated data; 3072..8192 bits."""

    key_type = "rsa"
    wrap_type = WRAP_RSA_OAEP_SHA256
    __slots__ = ()

    @classmethod
    def generate(cls, bits: int = DEFAULT_RSA_BITS) -> RsaKek:
        check_rsa_bits(bits)
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls(private.public_key(), private)

    @staticmethod
    def _padding(ad: bytes) -> padding.OAEP:
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=ad)

    def _encrypt(self, dek: bytes, ad: bytes) -> bytes:
        return bytes(self._public.encrypt(dek, self._padding(ad)))

    def _decrypt(self, wrapped: bytes, ad: bytes) -> bytes:
        return bytes(self._private.decrypt(wrapped, self._padding(ad)))

    def _check(self, what: str) -> None:
        if not isinstance(self._public, rsa.RSAPublicKey) or not (
            self._private is None or isinstance(self._private, rsa.RSAPrivateKey)
        ):
            raise ConfigError(f"{what} is not an rsa key")
        try:
            check_rsa_bits(self._public.key_size)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None
        super()._check(what)


def check_rsa_bits(bits: int) -> int:
    """``bits`` if it is an allowed RSA modulus size, else :class:`ConfigError`."""
    if not (MIN_RSA_BITS <= bits <= MAX_RSA_BITS) or bits % 8:
        raise ConfigError(
            f"rsa keys must have {MIN_RSA_BITS}..{MAX_RSA_BITS} bits (a multiple of 8), got {bits}"
        )
    return bits


class X25519Kek(PublicKek):
    """HPKE base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, info = wrap AD."""

    key_type = "x25519"
    wrap_type = WRAP_HPKE_X25519
    __slots__ = ()
    SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

    @classmethod
    def generate(cls) -> X25519Kek:
        private = x25519.X25519PrivateKey.generate()
        return cls(private.public_key(), private)

    def _encrypt(self, dek: bytes, ad: bytes) -> bytes:
        return self.SUITE.encrypt(dek, self._public, info=ad)

    def _decrypt(self, wrapped: bytes, ad: bytes) -> bytes:
        return self.SUITE.decrypt(wrapped, self._private, info=ad)

    def _check(self, what: str) -> None:
        if not isinstance(self._public, x25519.X25519PublicKey) or not (
            self._private is None or isinstance(self._private, x25519.X25519PrivateKey)
        ):
            raise ConfigError(f"{what} is not an x25519 key")
        super()._check(what)


def new_kek(key_type: str = "aes", bits: int | None = None) -> Kek:
    """A fresh KEK of ``key_type``; ``bits`` only for ``rsa`` (default 3072)."""
    if bits is not None and key_type != "rsa":
        raise ConfigError(f"--bits applies to rsa keys only, not {key_type}")
    if key_type == "aes":
        return AesKek.generate()
    if key_type == "rsa":
        return RsaKek.generate(bits or DEFAULT_RSA_BITS)
    if key_type == "x25519":
        return X25519Kek.generate()
    raise ConfigError(f"key type must be one of {', '.join(KEY_TYPES)}, got {key_type!r}")


def kek_from_entry(entry: dict[str, Any], what: str) -> Kek:
    """The KEK of a key file entry (no ``type``: ``aes``); :class:`ConfigError` naming ``what``."""
    key_type = entry.get("type", "aes")
    if key_type == "aes":
        try:
            return AesKek(_b64(entry.get("key")))
        except (binascii.Error, TypeError, ValueError, ConfigError):
            raise ConfigError(f"{what} is not {AES_KEK_SIZE} base64 bytes") from None
    if key_type == "rsa":
        return RsaKek.from_entry(entry, what)
    if key_type == "x25519":
        return X25519Kek.from_entry(entry, what)
    raise ConfigError(f"{what} has an unknown type (expected one of {', '.join(KEY_TYPES)})")
