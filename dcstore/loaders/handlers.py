"""webdataset's error-handler convention for pipeline stages.

A stage given ``handler=h`` calls ``h(exc)`` when processing one item
raises: ``True`` drops the item and continues, ``False`` ends the stage
quietly, and a handler may re-raise. The three handlers below behave as
webdataset's namesakes, so ``webdataset.warn_and_continue`` works too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

ErrorHandler = Callable[[Exception], bool]


def reraise_exception(exc: Exception) -> bool:
    """Raise ``exc`` (the default: errors are never silent)."""
    raise exc


def warn_and_continue(exc: Exception) -> bool:
    """Warn with ``repr(exc)`` and its notes (where it happened: the sample, the field)
    and drop the item."""
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
    warnings.warn(repr(exc) + notes, stacklevel=2)
    return True


def ignore_and_continue(exc: Exception) -> bool:
    """Drop the item silently."""
    return True


__all__ = ["ErrorHandler", "ignore_and_continue", "reraise_exception", "warn_and_continue"]
