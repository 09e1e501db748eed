"""hdfs-native across ``fork``: no stalled reads, never free an inherited client.

Measured with hdfs-native 0.14.7 in a process forked after the driver was used:

* freeing a client inherited from the parent never returns (it waits for runtime threads
  the child does not have, with the GIL held), so the whole child hangs;
* a new client works, but a DataNode read stalls until the socket timeout (60 s) when it
  picks up an idle connection the parent left in the driver's process-wide cache
  (``DATANODE_CACHE``): that connection is bound to the parent's runtime. Cached
  connections expire :data:`DATANODE_CACHE_EXPIRY_S` after their last use, and the
  cache drops expired ones before every lookup.

Guarantees: a forked child keeps every client this module was told about (:func:`opened`)
alive for good, including ones reachable only from garbage, so neither reconnecting, a
``close()`` nor the garbage collector frees one there. A child that opens a client within
:data:`DATANODE_CACHE_EXPIRY_S` of the parent's last read (:func:`note_read`) first waits
until the parent's cached connections have expired (at most that long, once per
process), so its reads open fresh connections: a default ``fork`` ``DataLoader`` is safe.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import Any

log = logging.getLogger(__name__)

#: hdfs-native's ``DATANODE_CACHE_EXPIRY`` (``hdfs/connection.rs``), plus a margin.
DATANODE_CACHE_EXPIRY_S = 3.0
_MARGIN_S = 0.25

#: The process that last opened a client (inherited, hence stale, after fork).
_driver_pid = 0
#: ``time.monotonic()`` after this process's (or, after fork, the parent's) last read.
_last_read = float("-inf")
#: Clients this process opened; a forked child moves them to ``_INHERITED``, never freed.
_OPENED: weakref.WeakSet[Any] = weakref.WeakSet()
_INHERITED: list[Any] = []


def note_read() -> None:
    """Call after each DataNode read: it may have left a connection in the driver's cache."""
    global _last_read
    _last_read = time.monotonic()


def note_open() -> None:
    """Call before opening a client: in a process forked after a recent read, waits until
    the connections the parent cached have expired."""
    global _driver_pid
    pid = os.getpid()
    if _driver_pid and _driver_pid != pid:
        wait = _last_read + DATANODE_CACHE_EXPIRY_S + _MARGIN_S - time.monotonic()
        if wait > 0:
            log.debug("forked after an hdfs-native read: waiting %.2f s for its cache", wait)
            time.sleep(wait)
    _driver_pid = pid


def opened(client: Any) -> None:
    """Record a client this process opened (a forked child will never free it)."""
    _OPENED.add(client)


def _keep_inherited_clients() -> None:
    _INHERITED.extend(_OPENED)
    _OPENED.clear()


os.register_at_fork(after_in_child=_keep_inherited_clients)
