"""hdfs-native across ``fork``: warn where its reads would stall, never free an inherited client.

Measured with hdfs-native 0.14.7 in a process forked after the driver was used:

* freeing a client inherited from the parent never returns (it waits for runtime threads
  the child does not have, with the GIL held), so the whole child hangs;
* a new client works, but DataNode reads stall until the socket timeout: idle DataNode
  connections sit in a process-wide cache bound to the parent's runtime.

Guarantees: a forked child keeps every client this module was told about (:func:`opened`)
alive for good, including ones reachable only from garbage, so neither reconnecting, a
``close()`` nor the garbage collector frees one there; the first client opened in such a
child comes with a :class:`HdfsForkWarning` (use ``forkserver`` or ``spawn`` workers).
"""

from __future__ import annotations

import os
import warnings
import weakref
from typing import Any


class HdfsForkWarning(RuntimeWarning):
    """hdfs-native was used before this process was forked; its reads may stall here."""


#: The process that last opened a client (inherited, hence stale, after fork).
_driver_pid = 0
#: Clients this process opened; a forked child moves them to ``_INHERITED``, never freed.
_OPENED: weakref.WeakSet[Any] = weakref.WeakSet()
_INHERITED: list[Any] = []


def note_open() -> None:
    """Call before opening a client: warns in a process forked after the driver was used."""
    global _driver_pid
    pid = os.getpid()
    if _driver_pid and _driver_pid != pid:
        warnings.warn(
            "hdfs-native was used in the parent before this process was forked and its "
            "reads may stall here: start DataLoader workers with "
            "multiprocessing_context='forkserver' or 'spawn'",
            HdfsForkWarning,
            stacklevel=3,
        )
    _driver_pid = pid


def opened(client: Any) -> None:
    """Record a client this process opened (a forked child will never free it)."""
    _OPENED.add(client)


def _keep_inherited_clients() -> None:
    _INHERITED.extend(_OPENED)
    _OPENED.clear()


os.register_at_fork(after_in_child=_keep_inherited_clients)
