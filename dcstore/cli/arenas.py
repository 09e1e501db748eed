"""At most two glibc malloc arenas for the CLI's streaming commands (``put``, ``get``, ``cp``).

A stream runs several threads (read-ahead, the cipher, write-behind, the driver's I/O)
that allocate and free buffers of megabytes. glibc gives threads arenas of their own (up
to eight per core) and, after the first large free, raises its mmap threshold, so such
buffers come from arenas that keep what was freed. Measured, a 1 GiB encrypted ``dcstore
cp`` within one Cassandra (2 vCPUs): peak RSS 239-250 MiB with the default, 206-218 MiB with
two arenas in the same time (a fixed mmap threshold: 159 MiB, but twice as slow).

Only the console script does this, for its own process (``entry``); the library and
``main()`` called in-process leave the allocator alone. ``MALLOC_ARENA_MAX`` set by the
user wins. Off glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_ARENA_MAX = -8
"""``mallopt`` parameter number of ``M_ARENA_MAX`` (glibc's malloc.h, stable since 2.10)."""

STREAM_ARENAS = 2


def limit_arenas(arenas: int = STREAM_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True if set. Call before threads start
    (existing arenas stay)."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
