"""Wrappers forward every contract method explicitly (no __getattr__ delegation);
``open_read`` and ``put_stream`` are built on those in the base class."""

from __future__ import annotations

import importlib

import pytest

from dcstore.backends.base import Backend

CONTRACT = (
    "get",
    "get_range",
    "map_range",
    "map_object",
    "put",
    "open_write",
    "head",
    "list_objects",
    "delete",
    "close",
    "url",
)
WRAPPERS = [
    ("dcstore.retry", "RetryingBackend"),
    ("dcstore.cache", "CachedBackend"),
    ("dcstore.crypto", "EncryptedBackend"),
]


@pytest.mark.parametrize("module,name", WRAPPERS)
def test_wrapper_defines_every_contract_method(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, Backend)
    missing = [m for m in CONTRACT if m not in cls.__dict__]
    assert not missing, f"{name} must forward {missing} explicitly"
    assert "__getattr__" not in cls.__dict__
