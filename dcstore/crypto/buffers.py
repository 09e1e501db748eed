"""Output buffers that become ``bytes`` without a copy.

``Backend.get`` returns ``bytes``, but ``decrypt_into`` needs a writable
buffer. Copying a ``bytearray`` into ``bytes`` costs a full extra pass over
memory — and for buffers above glibc's mmap threshold (32 MiB) a second
round of page faults, which runs at under 1 GB/s on a 2-vCPU VM
(``bench/page_faults.py``; ``bench/results/page-faults.md``).

On CPython, :func:`new_bytes` does what C extensions do: allocate an
uninitialised ``bytes`` with ``PyBytes_FromStringAndSize(NULL, n)`` and fill
it through ``PyBytes_AsString`` before any other code sees it. The object is
never hashed or shared while being written. Elsewhere (or for small sizes,
where the copy is cheap and CPython may share singletons) it falls back to
a ``bytearray`` that :meth:`OutputBuffer.finish` copies into ``bytes``.

Ownership: the memory is owned by the Python objects that views hold (the
``bytes`` through the ctypes array, or the ``bytearray``), never by a raw
address, so a thread writing through a view cannot outlive the memory.
Measured (``get`` of an encrypted object, 1 thread, 2-vCPU VM, medians of 15):
4 MiB 2.8-3.3 GB/s direct vs 0.5-0.6 GB/s through a bytearray and a copy;
64 MiB 0.70 vs 0.40-0.51 GB/s.
"""

from __future__ import annotations

import ctypes
import platform

DIRECT_MIN_SIZE = 64 * 1024
"""Smaller outputs use the bytearray path (a cheap copy, no singleton risk)."""


def _direct_api() -> tuple[object, object] | None:
    if platform.python_implementation() != "CPython":
        return None
    try:
        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        new.restype = ctypes.py_object
        new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
        addr = ctypes.pythonapi.PyBytes_AsString
        addr.restype = ctypes.c_void_p
        addr.argtypes = (ctypes.py_object,)
    except (AttributeError, OSError):
        return None
    return new, addr


_API = _direct_api()


class OutputBuffer:
    """A writable ``view`` of ``size`` bytes; :meth:`finish` returns them as ``bytes``."""

    __slots__ = ("_array", "_result", "view")

    def __init__(self, size: int):
        self._array: object = None
        if _API is not None and size >= DIRECT_MIN_SIZE:
            new, addr = _API
            self._result: bytes | bytearray = new(None, size)  # type: ignore[operator]
            array = (ctypes.c_char * size).from_address(addr(self._result))  # type: ignore[operator]
            # from_address does not own the memory: the array must keep its ``bytes`` alive.
            # Every view (and slice of one) holds the array, so memory that a thread is
            # still writing through a view can never be freed under it, whatever the caller
            # does with this OutputBuffer (discard after an interrupt included).
            array.owner = self._result  # type: ignore[attr-defined]  # a plain attribute
            self._array = array
            self.view = memoryview(array).cast("B")
        else:
            self._result = bytearray(size)
            self.view = memoryview(self._result)

    def finish(self) -> bytes:
        """The filled buffer as ``bytes``; the view is released."""
        self.view.release()
        self._array = None
        result = self._result
        return result if isinstance(result, bytes) else bytes(result)

    def discard(self) -> None:
        """Drop the (possibly partly decrypted) contents.

        Safe while other threads still write through slices of :attr:`view`:
        they keep the memory alive until they finish; nobody reads it after.
        """
        self.view.release()
        self._array = None
        self._result = b""


def direct() -> bool:
    """Whether large outputs are filled in place (CPython)."""
    return _API is not None
