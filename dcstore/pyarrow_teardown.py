"""At exit, wait for pyarrow's threads to let go of what a dcstore file handed them.

pyarrow (26.0.1 and earlier; apache/arrow#39162) tears down a ``read_table`` over a
Python filesystem on its own thread pool, sometimes after the call has returned: it
releases the buffers our ``read_buffer`` gave it, then its references to the file and
the filesystem. If the interpreter has begun to finalize by then, the pool thread's
attempt to take the GIL ends it inside a C++ destructor and the process aborts
("terminate called without an active exception", exit status 134) after the user's
program has finished, in about half of the runs that read and exit at once.

:func:`track` watches each buffer handed to a reader (a weak reference). An ``atexit``
hook, which runs before the interpreter finalizes, lets those threads finish: it waits
while tracked buffers are alive (until none has been released for ``QUIET_S``: the
program itself still holds them, and the main thread releases them safely later), then
until ``GRACE_S`` after the last release (the rest of the same teardown: files, the
filesystem). A process that read nothing through dcstore's files waits for nothing; one
that last read ``GRACE_S`` ago or more waits for nothing either.
"""

from __future__ import annotations

import atexit
import time
import weakref
from typing import TypeVar

QUIET_S = 0.05
GRACE_S = 0.05
MAX_WAIT_S = 1.0

_T = TypeVar("_T")
_live: dict[int, weakref.ref[object]] = {}
_last_release = 0.0
_hooked = False


def track(buffer: _T) -> _T:
    """``buffer`` (a weak-referenceable object, e.g. a ``memoryview``), watched until
    it is released; the exit hook is registered at the first call."""
    global _hooked
    key = id(buffer)

    def released(_ref: object, key: int = key) -> None:
        global _last_release
        _live.pop(key, None)
        _last_release = time.monotonic()

    _live[key] = weakref.ref(buffer, released)
    if not _hooked:
        _hooked = True
        atexit.register(wait_for_teardown)
    return buffer


def wait_for_teardown() -> None:
    """Sleep (the GIL released) until pyarrow's threads are done with tracked buffers
    and the teardown around them; at most ``MAX_WAIT_S``."""
    start = time.monotonic()
    while _live:
        now = time.monotonic()
        if now - start >= MAX_WAIT_S or now - max(_last_release, start) >= QUIET_S:
            break
        time.sleep(0.001)
    if _last_release:
        left = min(GRACE_S - (time.monotonic() - _last_release), MAX_WAIT_S)
        if left > 0:
            time.sleep(left)
