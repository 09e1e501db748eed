"""Read a worker's planned token items: windows fetched ahead, items sliced out of them.

Guarantees:

* Each plan block's items are fetched as a few contiguous windows of at most
  ``window_bytes`` (plus one item), read with the object version the manifest
  pins, at most ``prefetch_bytes`` ahead; only the bytes (and, encrypted, only
  the segments) the items touch are read, plus gaps under ``max_gap`` tokens.
* Items are numpy views of windows the reader owns (writable, never the page
  cache or a cache tier's buffer): zero-copy per item; an item that straddles
  two shards is joined by one copy.
* A failed read raises naming the store and the shard; nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dcstore.backends.base import Backend
from dcstore.errors import DcstoreError, IntegrityError
from dcstore.loaders.plan import WorkerPlan
from dcstore.loaders.prefetch import Prefetcher
from dcstore.loaders.reader import _named
from dcstore.loaders.resumable import Progress
from dcstore.tokens.manifest import DTYPES, TokenManifest
from dcstore.tokens.spans import Spans

DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024
MAX_GAP_TOKENS = 4096


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` of the stream, fetched as one owned buffer."""

    start: int
    end: int


def plan_windows(starts: np.ndarray, ends: np.ndarray, limit: int) -> list[Window]:
    """Windows covering every item ``[starts[i], ends[i])`` (any order): items are taken in
    stream order and a window grows while it stays under ``limit`` tokens and the gap to the
    next item is under :data:`MAX_GAP_TOKENS`."""
    order = np.argsort(starts, kind="stable")
    windows: list[Window] = []
    lo = hi = -1
    for s, e in zip(starts[order].tolist(), ends[order].tolist(), strict=True):
        if lo >= 0 and s - hi <= MAX_GAP_TOKENS and max(hi, e) - lo <= limit:
            hi = max(hi, e)
            continue
        if lo >= 0:
            windows.append(Window(lo, hi))
        lo, hi = s, e
    if lo >= 0:
        windows.append(Window(lo, hi))
    return windows


def fetch_tokens(store: Backend, manifest: TokenManifest, start: int, end: int) -> np.ndarray:
    """Tokens ``[start, end)`` of the stream, in one writable buffer owned by the caller."""
    size = manifest.itemsize
    out: np.ndarray = np.empty(end - start, dtype=DTYPES[manifest.dtype])
    raw = out.view(np.uint8)
    at = 0
    for shard, a, b in manifest.pieces(start, end):
        info = manifest.shards[shard]
        mapped = data = None
        try:
            mapped = store.map_range(info.key, a * size, b * size, version=info.version)
            data = (
                store.get_range(info.key, a * size, b * size, version=info.version)
                if mapped is None
                else mapped
            )
            if len(data) != (b - a) * size:
                raise IntegrityError(
                    f"shard {store.url}/{info.key} is shorter than its manifest says "
                    f"(wanted bytes {a * size}..{b * size}, got {len(data)})"
                )
            raw[at : at + len(data)] = np.frombuffer(data, dtype=np.uint8)
        except DcstoreError as exc:
            raise _named(store, info.key, exc)  # noqa: B904 - the same exception
        finally:
            del mapped, data  # release a page-cache view now
        at += (b - a) * size
    return out


def read_items(
    store: Backend,
    manifest: TokenManifest,
    spans: Spans,
    plan: WorkerPlan,
    prefetcher: Prefetcher,
    progress: Progress,
    window_bytes: int = DEFAULT_WINDOW_BYTES,
    max_tokens: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(item id, tokens)`` of the plan's items in order (at most ``max_tokens`` of each)."""
    limit = max(1, window_bytes // manifest.itemsize)

    def bounds(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = spans.bounds(ids)
        return starts, ends if max_tokens is None else np.minimum(ends, starts + max_tokens)

    def unit(ids: np.ndarray) -> tuple[np.ndarray, list[Window]]:
        return ids, plan_windows(*bounds(ids), limit)

    order = plan.indices() if plan.order is not None else None
    units = iter([unit(order)]) if order is not None else (unit(b) for b in plan.blocks)
    ahead, units = itertools.tee(units)

    def wanted() -> Iterator[Window]:
        for _, windows in ahead:
            yield from windows

    fetched = prefetcher.map(
        lambda w: fetch_tokens(store, manifest, w.start, w.end),
        wanted(),
        lambda w: (w.end - w.start) * manifest.itemsize,
    )
    with contextlib.closing(fetched):
        for ids, windows in units:
            buffers = []
            for _ in windows:
                got = next(fetched)
                if got.error is not None:
                    raise got.error
                buffers.append(got.value)
            lows = np.asarray([w.start for w in windows], dtype=np.int64)
            starts, ends = bounds(ids)
            where = np.searchsorted(lows, starts, side="right") - 1
            for i, s, e, w in zip(ids.tolist(), starts.tolist(), ends.tolist(), where.tolist(),
                                  strict=True):  # fmt: skip
                base = windows[w].start
                progress.pos += 1
                yield i, buffers[w][s - base : e - base]
            del buffers
