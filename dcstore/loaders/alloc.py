"""Allocator tuning for loader worker processes (glibc only; a no-op elsewhere).

Fetched runs are fresh ``bytes`` of up to 16 MiB. By default glibc may serve
such sizes with a new ``mmap`` and trim freed heap back to the OS, so every
run pays first-touch page faults (under 1 GB/s on a 2-vCPU VM, slower than
the read itself; ``bench/results/page-faults.md``). :func:`recycle_run_buffers` sets
``M_MMAP_THRESHOLD`` to 32 MiB and ``M_TRIM_THRESHOLD`` to 512 MiB, so run
buffers come from the heap and freed ones are reused. It is applied once per
process, and only inside ``DataLoader`` workers (never the training process).
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_done: set[int] = set()


def recycle_run_buffers(mmap_threshold: int = 32 << 20, trim: int = 512 << 20) -> bool:
    """Tune glibc malloc in this process; True if applied (now or before)."""
    if os.getpid() in _done:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")  # find_library would spawn ldconfig: too slow here
        ok = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(M_TRIM_THRESHOLD, trim)
    except (OSError, AttributeError):
        return False
    if ok:
        _done.add(os.getpid())
    return bool(ok)
