"""Checking every segment of every object, reporting all failures.

:func:`verify` never stops at the first bad object, and within an object it
checks every segment, so a report says which segments are damaged. Memory
is bounded: ciphertext is read in runs of at most ``READ_BYTES`` and
decrypted into one reused scratch buffer; no plaintext leaves this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from dcstore.backends.base import ObjectMeta
from dcstore.backends.keys import validate_prefix
from dcstore.crypto.backend import EncryptedBackend
from dcstore.crypto.format import Layout
from dcstore.crypto.rotation import storage_only
from dcstore.crypto.segments import ObjectCipher
from dcstore.errors import DcstoreError, IntegrityError, KeyAccessError, NotFoundError

READ_BYTES = 64 << 20


@dataclass(frozen=True)
class ObjectCheck:
    """The verdict on one object. ``problem`` is ``None`` when it is intact."""

    key: str
    size: int
    """Ciphertext bytes checked."""
    problem: str | None = None
    kind: str = "ok"
    """``ok``, ``integrity`` (corrupt), ``key`` (missing/retired/wrong key) or ``error``."""
    bad_segments: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_object(store: EncryptedBackend, meta: ObjectMeta) -> ObjectCheck:
    """Check header, data key and every segment of the inner object ``meta``."""
    key = meta.key
    try:
        header, layout = store._layout(meta)
        cipher = store._cipher(header, key)
    except KeyAccessError as exc:
        return ObjectCheck(key, meta.size, str(exc), "key")
    except IntegrityError as exc:
        return ObjectCheck(key, meta.size, str(exc), "integrity")
    bad = _bad_segments(store, meta, layout, cipher)
    if not bad:
        return ObjectCheck(key, meta.size)
    shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
    problem = (
        f"{store._what(key)}: {len(bad)} of {layout.segments} segment(s) failed "
        f"authentication (segments {shown})"
    )
    return ObjectCheck(key, meta.size, problem, "integrity", bad)


def _bad_segments(
    store: EncryptedBackend, meta: ObjectMeta, layout: Layout, cipher: ObjectCipher
) -> list[int]:
    """Indices of the segments that fail; reads runs of at most READ_BYTES and
    decrypts each segment on its own into one reused scratch buffer."""
    scratch = memoryview(bytearray(min(layout.plain_size, layout.segment_size)))
    bad: list[int] = []
    for first, stop in layout.runs(0, layout.segments, READ_BYTES):
        c_base = layout.cipher_span(first)[0]
        blob = memoryview(store.inner.get_range(meta.key, c_base, layout.cipher_span(stop - 1)[1]))
        for i in range(first, stop):
            c0, c1 = layout.cipher_span(i)
            p0, p1 = layout.plain_span(i)
            try:
                cipher.decrypt_into(
                    layout, i, i + 1, blob[c0 - c_base : c1 - c_base], scratch[: p1 - p0]
                )
            except IntegrityError:
                bad.append(i)
    return bad


def verify(store: EncryptedBackend, prefix: str = "") -> Iterator[ObjectCheck]:
    """Check every object under ``prefix``; yields one :class:`ObjectCheck` each, in key
    order. Reads the storage itself: a store with a cache tier is refused."""
    validate_prefix(prefix)
    storage_only(store, "verify")
    for meta in store.inner.list_objects(prefix):
        try:
            yield verify_object(store, meta)
        except NotFoundError:
            continue  # deleted while verifying
        except DcstoreError as exc:
            yield ObjectCheck(meta.key, meta.size, f"{store._what(meta.key)}: {exc}", "error")
