"""A hypothesis state machine comparing any Backend against a dict model."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from dcstore.backends.base import Backend
from dcstore.errors import NotFoundError

_KEYS = st.sampled_from(["a", "b", "a.b", "b/c", "b/d/e", "z"])
_DATA = st.binary(max_size=3000)


def run_model_test(backend: Backend, ns: str, max_examples: int = 25) -> None:
    """Run random put/get/range/delete/list sequences; the backend must match a dict."""
    runs = itertools.count()

    class BackendModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = f"{ns}sm{next(runs)}/"
            self.model: dict[str, bytes] = {}

        @rule(key=_KEYS, data=_DATA)
        def put(self, key: str, data: bytes) -> None:
            if _conflicts(key, self.model):
                return  # "b" and "b/c" cannot coexist on a filesystem
            meta = backend.put(self.prefix + key, data)
            assert meta.size == len(data)
            self.model[key] = data

        @rule(key=_KEYS)
        def get(self, key: str) -> None:
            if key in self.model:
                assert backend.get(self.prefix + key) == self.model[key]
            else:
                try:
                    backend.get(self.prefix + key)
                except NotFoundError:
                    return
                raise AssertionError(f"{key} should be missing")

        @rule(key=_KEYS, a=st.integers(0, 3000), b=st.integers(0, 3000))
        def get_range(self, key: str, a: int, b: int) -> None:
            if key not in self.model:
                return
            data = self.model[key]
            start, end = sorted((min(a, len(data)), min(b, len(data))))
            assert backend.get_range(self.prefix + key, start, end) == data[start:end]

        @rule(key=_KEYS)
        def delete(self, key: str) -> None:
            backend.delete(self.prefix + key)
            self.model.pop(key, None)

        @invariant()
        def listing_matches(self) -> None:
            got = [(m.key[len(self.prefix) :], m.size) for m in backend.list_objects(self.prefix)]
            assert got == sorted((k, len(v)) for k, v in self.model.items())

    run_state_machine_as_test(
        BackendModel,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


def _conflicts(key: str, model: dict[str, bytes]) -> bool:
    return any(k.startswith(key + "/") or key.startswith(k + "/") for k in model)
