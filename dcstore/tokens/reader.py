"""Read a worker's planned token items: windows fetched ahead, items sliced out of them.

Guarantees:

* Each plan block's items are fetched as windows of at most ``window_bytes``
  (rounded up to the encryption segment), cut at shard boundaries and at
  multiples of that size from each shard's start, so no segment is fetched or
  decrypted twice; read with the object version the manifest pins, at most
  ``prefetch_bytes`` ahead. Only the bytes the items touch are read, plus gaps
  under :data:`MAX_GAP_TOKENS` tokens.
* Items are numpy views of windows the reader owns (writable, never the page
  cache or a cache tier's buffer): zero-copy per item; an item that spans
  windows (or shards) is joined by one copy. An item is handed out as soon as
  its windows have arrived.
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
from dcstore.loaders.reader import aligned_window, named_error
from dcstore.loaders.resumable import Progress
from dcstore.loaders.shardinfo import read_as_packed
from dcstore.tokens.manifest import DTYPES, TokenManifest
from dcstore.tokens.spans import Spans

DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024
MAX_GAP_TOKENS = 4096


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` of the stream, inside one shard, fetched as one owned buffer."""

    start: int
    end: int


def plan_windows(
    starts: np.ndarray, ends: np.ndarray, shard_starts: np.ndarray, window_tokens: int
) -> list[Window]:
    """Windows covering every item ``[starts[i], ends[i])`` (any order), in stream order.

    Items are merged into runs (gaps under :data:`MAX_GAP_TOKENS` are read through), and
    runs are cut at shard boundaries and at multiples of ``window_tokens`` from each
    shard's start: with ``window_tokens`` a multiple of the encryption segment, no two
    windows share a segment, so each segment is fetched and decrypted once.
    """
    if len(starts) == 0:
        return []
    order = np.argsort(starts, kind="stable")
    s_sorted, e_sorted = starts[order], np.maximum.accumulate(ends[order])
    breaks = np.nonzero(s_sorted[1:] - e_sorted[:-1] > MAX_GAP_TOKENS)[0] + 1
    windows: list[Window] = []
    for lo, hi in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(order)].tolist(), strict=True):
        a, stop = int(s_sorted[lo]), int(e_sorted[hi - 1])
        while a < stop:
            shard = int(np.searchsorted(shard_starts, a, side="right")) - 1
            base = int(shard_starts[shard])
            b = min(
                stop,
                int(shard_starts[shard + 1]),
                base + ((a - base) // window_tokens + 1) * window_tokens,
            )
            windows.append(Window(a, b))
            a = b
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
            mapped = data = read_as_packed(store, info.key, info.version, a * size, b * size)
            if len(data) != (b - a) * size:
                raise IntegrityError(
                    f"shard {store.url}/{info.key} is shorter than its manifest says "
                    f"(wanted bytes {a * size}..{b * size}, got {len(data)})"
                )
            raw[at : at + len(data)] = np.frombuffer(data, dtype=np.uint8)
        except DcstoreError as exc:
            raise named_error(store, info.key, exc)  # noqa: B904 - the same exception
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
    """``(item id, tokens)`` of the plan's items in order (at most ``max_tokens`` of each).

    An item is handed out as soon as the windows it needs have arrived (in plan order),
    as a view of its window, or joined by one copy when it spans windows.
    """
    window_tokens = max(1, aligned_window(store, window_bytes) // manifest.itemsize)

    def bounds(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = spans.bounds(ids)
        return starts, ends if max_tokens is None else np.minimum(ends, starts + max_tokens)

    def unit(ids: np.ndarray) -> tuple[np.ndarray, list[Window]]:
        return ids, plan_windows(*bounds(ids), manifest.starts, window_tokens)

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
            lows = np.asarray([w.start for w in windows], dtype=np.int64)
            start_arr, end_arr = bounds(ids)
            first = (np.searchsorted(lows, start_arr, side="right") - 1).tolist()
            last_arr = np.searchsorted(lows, end_arr - 1, side="right") - 1
            last = np.where(end_arr > start_arr, last_arr, -1).tolist()  # empty: ready at once
            ids_l, starts, ends = ids.tolist(), start_arr.tolist(), end_arr.tolist()
            buffers: list[np.ndarray] = []
            at = 0
            for got in itertools.chain([None], itertools.islice(fetched, len(windows))):
                if got is not None:
                    if got.error is not None:
                        raise got.error
                    buffers.append(got.value)  # type: ignore[arg-type]
                while at < len(ids_l) and last[at] < len(buffers):  # its windows have arrived
                    progress.pos += 1
                    yield ids_l[at], _slice(buffers, windows, first[at], last[at],
                                            starts[at], ends[at])  # fmt: skip
                    at += 1
            del buffers


def _slice(
    buffers: list[np.ndarray], windows: list[Window], first: int, last: int, start: int, end: int
) -> np.ndarray:
    """Tokens ``[start, end)``: a view of one window, or the pieces of several joined."""
    if end <= start:
        return np.empty(0, dtype=buffers[0].dtype if buffers else np.uint16)
    if first == last:
        base = windows[first].start
        return buffers[first][start - base : end - base]
    pieces = [
        buffers[w][max(start, windows[w].start) - windows[w].start : min(end, windows[w].end)
                   - windows[w].start]
        for w in range(first, last + 1)
    ]  # fmt: skip
    return np.concatenate(pieces)
