"""``memory://``: an in-process object store for tests and small pipelines.

Backends opened with the same ``memory://NAME`` URL in one process share
their objects. Pickling carries a snapshot of the objects, so DataLoader
workers (fork or spawn) see the data that existed when they were started.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range, check_version
from dcstore.backends.keys import validate_key, validate_prefix
from dcstore.backends.options import Options, ParsedUrl
from dcstore.errors import NotFoundError

_versions = itertools.count(1)
_process_tag = uuid.uuid4().hex[:12]
"""Makes versions unique across processes sharing a cache (counters restart per process)."""


def _new_process_tag() -> None:
    global _process_tag
    _process_tag = uuid.uuid4().hex[:12]


os.register_at_fork(after_in_child=_new_process_tag)


class _Space:
    """The objects behind one ``memory://NAME``: a sorted key list plus a dict."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, tuple[bytes, ObjectMeta]] = {}
        """Each key's bytes and the metadata ``put`` returned for them."""
        self.sorted_keys: list[str] = []


_spaces: dict[str, _Space] = {}
_spaces_lock = threading.Lock()


def _space(name: str) -> _Space:
    with _spaces_lock:
        return _spaces.setdefault(name, _Space())


class MemoryBackend(Backend):
    """Objects held in this process's memory; puts replace a reference atomically."""

    def __init__(self, name: str = "default"):
        self.name = name
        self._space = _space(name)

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> MemoryBackend:
        return cls(name=(url.netloc + url.path).strip("/") or "default")

    @property
    def url(self) -> str:
        return f"memory://{self.name}"

    def _entry(self, key: str, version: str | None) -> tuple[bytes, ObjectMeta]:
        validate_key(key)
        entry = self._space.objects.get(key)
        if entry is None:
            raise NotFoundError(f"{self.url}: no object {key!r}")
        check_version(self.url, key, version, entry[1].version)
        return entry

    def get(self, key: str, *, version: str | None = None) -> bytes:
        return self._entry(key, version)[0]

    def get_range(self, key: str, start: int, end: int, *, version: str | None = None) -> bytes:
        data = self._entry(key, version)[0]
        check_range(key, start, end, len(data))
        return data[start:end]

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        validate_key(key)
        try:  # bytes(5) is five zero bytes, bytes([1, 2]) a list's values: buffers only
            blob = bytes(memoryview(data).cast("B"))
        except TypeError as exc:  # not a buffer, or one that is not contiguous
            raise TypeError(f"{self.url}: put {key!r}: {exc}") from None
        version = f"m{_process_tag}-{next(_versions)}"
        space = self._space
        with space.lock:
            previous = space.objects.get(key)
            if previous is None:
                bisect.insort(space.sorted_keys, key)
            # later than the version it replaces, whatever the clock did
            earlier = previous[1].modified if previous is not None else None
            modified = time.time() if earlier is None else max(time.time(), earlier + 1e-6)
            meta = ObjectMeta(key, len(blob), version, modified)
            space.objects[key] = (blob, meta)
        return meta

    def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        return self._entry(key, version)[1]

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        space = self._space
        with space.lock:
            start = bisect.bisect_left(space.sorted_keys, prefix)
            keys = list(
                itertools.takewhile(
                    lambda k: k.startswith(prefix), itertools.islice(space.sorted_keys, start, None)
                )
            )
        for key in keys:
            entry = space.objects.get(key)
            if entry is not None:
                yield entry[1]

    def delete(self, key: str) -> None:
        validate_key(key)
        space = self._space
        with space.lock:
            if space.objects.pop(key, None) is not None:
                space.sorted_keys.remove(key)

    def __getstate__(self) -> dict[str, Any]:
        with self._space.lock:
            return {"name": self.name, "objects": dict(self._space.objects)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._space = _space(self.name)
        with self._space.lock:
            for key, entry in state["objects"].items():
                if key not in self._space.objects:
                    bisect.insort(self._space.sorted_keys, key)
                    self._space.objects[key] = entry
