"""The one way a storage driver's exceptions become dcstore errors.

Each backend keeps a *table* (a ``classify`` function: driver exception -> dcstore
error class and a one-line detail, or None for exceptions that are not the driver's);
:func:`mapped_errors` applies it and raises the dcstore error ``from`` the driver's,
with a message of one shape, ``<url>: <operation> '<key>': <detail>``, and the
``url`` / ``key`` attributes set. dcstore errors raised inside pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dcstore.errors import DcstoreError

Classify = Callable[[Exception], "tuple[type[DcstoreError], str] | None"]


def location(url: str, op: str, key: str = "") -> str:
    """``<url>: <op> '<key>'`` (no key part when ``key`` is empty)."""
    return f"{url}: {op}" + (f" {key!r}" if key else "")


@contextmanager
def mapped_errors(url: str, op: str, key: str, classify: Classify) -> Iterator[None]:
    """Translate what ``classify`` recognises among the exceptions raised inside."""
    try:
        yield
    except DcstoreError:
        raise
    except Exception as exc:
        found = classify(exc)
        if found is None:
            raise
        error, detail = found
        raise error(f"{location(url, op, key)}: {detail}", url=url, key=key or None) from exc
