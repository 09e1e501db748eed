"""Planned, resumable passes: the epoch bookkeeping every dcstore iterable dataset shares.

A subclass says how many items each shard holds (:meth:`PlannedPasses.item_counts`)
and which dataset version it reads (:meth:`PlannedPasses.dataset_version`); this
class plans each worker's pass with :func:`~dcstore.loaders.plan.plan_epoch` and
tracks how far it got. Guarantees:

* The plan is a pure function of (seed, epoch, rank, world, worker, workers) and
  the resume state: every item once per epoch, the same count on every rank.
* ``state_dict()``/``load_state_dict()`` follow torchdata's ``StatefulDataLoader``
  protocol: a resumed pass continues after the last item handed out, without
  re-reading consumed data; :meth:`state_from_loader` merges every worker's state
  so a run may resume with a different ``num_workers``. This holds after any batch,
  the epoch's last ones included: a worker done with its share is at the end of the
  epoch until its next pass begins, not at the start of the next epoch.
* A state is refused (``ConfigError``) for another rank, dataset version, seed,
  shuffle setting (``shuffle``, ``shuffle_buffer``, a shuffle's ``window``) or
  ``drop_last``; so is one lacking a field or holding one of another type, and a
  loader's state (the error says how to load it).
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcstore.errors import ConfigError
from dcstore.loaders.plan import Layer, WorkerPlan, plan_epoch
from dcstore.units import whole_number

STATE_VERSION = 1


@dataclass
class Progress:
    """Items of the current pass handed out so far (updated by the reader)."""

    pos: int = 0


@dataclass
class PassState:
    """Which epoch the next pass reads, the resumption state loaded for it, and the pass
    in progress in this process: shared by a dataset and the datasets its stages make."""

    epoch: int = 0
    resume: dict[str, Any] | None = None
    active: Pass | None = None
    told: Any = None
    """``[epoch, set_epoch calls]`` in shared memory, made by the main process's first
    ``set_epoch`` (one file descriptor, so not before it is needed) and written by each:
    persistent workers started after that first call see it too."""
    seen: int = 0
    """How many of those calls this process has followed."""


@dataclass
class Pass:
    """The pass in progress (or the last one completed): who runs it, its epoch, what it
    resumed from, how far it got."""

    worker: int
    workers: int
    epoch: int
    layers: list[Layer]
    consumed: int
    planned: int = 0
    progress: Progress = field(default_factory=Progress)
    done: bool = False


def _at_start(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is its epoch's start: every worker's position, all 0, no earlier
    layers (then it resumes as a fresh pass, with any number of workers)."""
    positions = state["positions"]
    return (
        not state["layers"]
        and len(positions) == int(state["workers"])
        and not any(int(p) for p in positions.values())
    )


_LOADER_KEYS = ("_snapshot", "dataset_state", "_iterator_finished", "_sampler_iter_state")
_FIELDS = ("seed", "shuffle", "epoch", "rank", "world", "manifest_version", "layers", "workers",
           "positions")  # fmt: skip
_HOW_TO_LOAD = {
    "dataset": "load it into the dataset (ds.load_state_dict(state))",
    "StatefulDataLoader": "load it with StatefulDataLoader.load_state_dict(state), or "
    "ds.load_state_dict({dataset}.state_from_loader(state))",
    "RingLoader": "load it with RingLoader.load_state_dict(state), or "
    "ds.load_state_dict(state['dataset'])",
}


def state_source(state: object) -> str | None:
    """Whose ``state_dict()`` ``state`` looks like: a key of ``_HOW_TO_LOAD``, or None."""
    if not isinstance(state, Mapping):
        return None
    if "positions" in state or "manifest_version" in state:
        return "dataset"
    if any(key in state for key in _LOADER_KEYS):
        return "StatefulDataLoader"
    return "RingLoader" if "dataset" in state else None


def wrong_state(state: object, expected: str, dataset: str = "ShardedDataset") -> ConfigError:
    """The error for ``state`` given where ``expected`` belongs, saying how to load it."""
    source = state_source(state)
    if source is not None:
        how = _HOW_TO_LOAD[source].format(dataset=dataset)
        return ConfigError(f"expected {expected}, got a {source} state: {how}")
    got = f"keys {sorted(map(str, state))}" if isinstance(state, Mapping) else repr(state)[:80]
    return ConfigError(f"expected {expected}, got {got}")


def _counts(name: str, values: object) -> list[int]:
    """``values`` as a list of whole numbers, else a ``ConfigError`` naming ``name``."""
    if not isinstance(values, list | tuple):
        raise ConfigError(f"{name} must be a list of counts, got {values!r}")
    return [whole_number(name, value) for value in values]


def _pairs(layers: object) -> list[Any]:
    """``layers`` as a list of ``[workers, positions]`` pairs, else a ``ConfigError``."""
    if not isinstance(layers, list | tuple) or not all(
        isinstance(layer, list | tuple) and len(layer) == 2 for layer in layers
    ):
        raise ConfigError(f"resume state's layers must be [workers, positions] pairs: {layers!r}")
    return list(layers)


def _check_fields(state: Mapping[str, Any]) -> None:
    """Refuse (``ConfigError``) a state lacking a field, or holding one of another type."""
    missing = [name for name in _FIELDS if name not in state]
    if missing:
        raise ConfigError(f"resume state lacks {', '.join(missing)}: a damaged state")
    for name, least in (("epoch", 0), ("rank", 0), ("world", 1), ("workers", 1)):
        whole_number(f"resume state's {name}", state[name], least)
    positions = state["positions"]
    if not isinstance(positions, Mapping) or not all(str(w).isdigit() for w in positions):
        raise ConfigError(f"resume state's positions must map workers to counts: {positions!r}")
    _counts("resume state's positions", list(positions.values()))
    for layer in _pairs(state["layers"]):
        if whole_number("resume layer's workers", layer[0], 1) != len(
            _counts("resume layer's positions", layer[1])
        ):
            raise ConfigError(f"resume state's layer {layer!r} needs a position per worker")


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world) from ``torch.distributed`` when initialised, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _shared_epoch() -> Any:
    """A fresh ``[epoch, set_epoch calls]`` cell in shared memory (see :class:`PassState`),
    or ``None`` where none can be made (no ``/dev/shm``, no descriptor left): then
    ``set_epoch`` reaches only workers started after it, as before the cell."""
    import torch

    cell = torch.zeros(2, dtype=torch.int64)
    try:
        cell.share_memory_()  # type: ignore[no-untyped-call]
    except (OSError, RuntimeError):
        return None
    return cell


def _in_worker() -> bool:
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


def current_worker() -> tuple[int, int]:
    """(worker id, workers) inside a ``DataLoader`` worker, else (0, 1)."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def check_rank_world(rank: int | None, world_size: int | None) -> None:
    """Refuse a ``rank`` or ``world_size`` given that cannot be (None: torch.distributed's)."""
    if world_size is not None and world_size < 1:
        raise ConfigError(f"world_size must be >= 1, got {world_size}")
    if rank is not None and not 0 <= rank < (world_size or rank + 1):
        raise ConfigError(
            f"rank {rank} is outside world_size {world_size}: ranks are 0 .. world_size - 1"
            if world_size is not None
            else f"rank must be >= 0, got {rank}"
        )


class PlannedPasses(abc.ABC):
    """Epoch, rank and resumption state of an iterable dataset read by a plan."""

    seed: int
    shuffle: bool
    window: int
    shuffle_buffer: int
    drop_last: bool

    def _init_passes(
        self, *, shuffle: bool, seed: int, window: int, shuffle_buffer: int, drop_last: bool,
        rank: int | None, world_size: int | None,
    ) -> None:  # fmt: skip
        shuffle_buffer = whole_number("shuffle_buffer", shuffle_buffer)
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool | np.bool_ | int) or flag not in (0, 1):  # "false"
                raise ConfigError(f"{name} must be True or False, got {flag!r}")
        shuffle, drop_last = bool(shuffle), bool(drop_last)
        check_rank_world(rank, world_size)
        self.shuffle, self.seed = shuffle, whole_number("seed", seed)
        self.window = whole_number("window", window)
        self.shuffle_buffer, self.drop_last = shuffle_buffer, drop_last
        self._rank, self._world = rank, world_size
        self._passes = PassState()

    @property
    def epoch(self) -> int:
        """The epoch of the next pass (of the pass in progress, while one runs)."""
        return self._passes.epoch

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._passes.epoch = epoch

    # -- what a subclass provides ----------------------------------------------------------

    @abc.abstractmethod
    def item_counts(self) -> np.ndarray:
        """Items per shard, in shard order (the plan's unit)."""

    @abc.abstractmethod
    def dataset_version(self) -> str:
        """The version of the data read (a resume state names it)."""

    def extra_state(self) -> dict[str, Any]:
        """More fields for :meth:`state_dict` (merged as sorted unions of lists)."""
        return {}

    def item_settings(self) -> dict[str, Any]:
        """What a subclass's items depend on (block size...): a state made with other
        values is refused, as one of another seed is."""
        return {}

    def _made_with(self) -> dict[str, Any]:
        """The settings the plan depends on: a state made with others is refused.
        ``window`` groups blocks only to shuffle them (at most 1: no grouping)."""
        return {
            "kind": type(self).__name__,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer": self.shuffle_buffer,
            "window": self.window if self.shuffle and self.window > 1 else 0,
            "drop_last": self.drop_last,
            **self.item_settings(),
        }

    # -- planning -------------------------------------------------------------------------

    @property
    def rank_world(self) -> tuple[int, int]:
        if self._rank is not None and self._world is not None:
            return self._rank, self._world
        rank, world = distributed_rank_world()
        if self._world is not None and self._world != world:  # rank from torch.distributed
            raise ConfigError(
                f"world_size={self._world} without rank=, and torch.distributed's world is "
                f"{world}: every process would read rank {rank}'s part: pass rank with "
                "world_size, or initialise torch.distributed first"
            )
        rank, world = (self._rank if self._rank is not None else rank), (self._world or world)
        if rank >= world:  # rank given, world_size from torch.distributed (1 without it)
            raise ConfigError(
                f"rank {rank} is outside torch.distributed's world of {world}: "
                "pass world_size with rank, or initialise torch.distributed first"
            )
        return rank, world

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next pass (clears any resumption state of another epoch,
        and the state of a completed pass). Called in the main process, it reaches
        persistent ``DataLoader`` workers too, at their next pass."""
        epoch = whole_number("epoch", epoch)
        passes = self._passes
        if not _in_worker():
            if passes.told is None:
                passes.told = _shared_epoch()
            if passes.told is not None:
                passes.told[0], passes.told[1] = epoch, int(passes.told[1]) + 1
        if passes.told is not None:  # in a worker: an epoch told here supersedes the cell's
            passes.seen = int(passes.told[1])
        self._use_epoch(epoch)

    def _follow_set_epoch(self) -> None:
        """In a ``DataLoader`` worker: use the epoch of the main process's last
        ``set_epoch`` if this copy has not yet. Persistent workers keep their copy across
        passes and move on by themselves only when they hand out their whole share: after
        a pass left early (a ``break``, an error) near its end, one had moved on and
        another had not, and every later epoch repeated some samples and lost others."""
        told = self._passes.told
        if told is None or not _in_worker():
            return
        calls = int(told[1])
        if calls != self._passes.seen:
            self._passes.seen = calls
            self._use_epoch(int(told[0]))

    def _use_epoch(self, epoch: int) -> None:
        if self._passes.resume is not None and self._passes.resume["epoch"] != epoch:
            self._passes.resume = None
        if self._passes.active is not None and self._passes.active.done:
            self._passes.active = None
        self.epoch = epoch

    def __len__(self) -> int:
        """Items this rank yields per epoch (all its workers together)."""
        world = self.rank_world[1]
        total = int(self.item_counts().sum())
        return total // world if self.drop_last else -(-total // world)

    def _resolve(self, worker: int, workers: int) -> tuple[list[Layer], int]:
        """(earlier layers, items of this worker's plan already consumed)."""
        if self._passes.resume is None:
            return [], 0
        state = self._passes.resume
        rank, world = self.rank_world
        if state["world"] != world or state["rank"] != rank:
            raise ConfigError(
                f"resume state is for rank {state['rank']} of {state['world']}, "
                f"this is rank {rank} of {world}"
            )
        if _at_start(state):  # a fresh pass, with any number of workers
            return [], 0
        layers: list[Layer] = [(int(n), tuple(p)) for n, p in state["layers"]]
        positions = {int(w): int(p) for w, p in state["positions"].items()}
        if state["workers"] == workers and worker in positions:
            return layers, positions[worker]
        if len(positions) == state["workers"]:
            done = tuple(positions[w] for w in range(state["workers"]))
            return [*layers, (int(state["workers"]), done)], 0
        raise ConfigError(
            f"resume state holds {len(positions)} of {state['workers']} worker positions; "
            f"to resume with {workers} worker{'' if workers == 1 else 's'} load "
            f"{type(self).__name__}.state_from_loader(...)"
        )

    def plan(self, worker: int = 0, workers: int = 1) -> WorkerPlan:
        """This rank's plan for ``worker`` of ``workers`` this epoch, after any resume state."""
        layers, consumed = self._resolve(worker, workers)
        rank, world = self.rank_world
        plan = plan_epoch(
            self.item_counts(), seed=self.seed, epoch=self.epoch, rank=rank, world=world,
            worker=worker, workers=workers, shuffle=self.shuffle, drop_last=self.drop_last,
            window=self.window, buffer=self.shuffle_buffer, resume=layers,
        )  # fmt: skip
        return plan.skip(consumed) if consumed else plan

    def _begin_pass(self) -> tuple[Pass, WorkerPlan]:
        """Start this worker's pass: its bookkeeping and its plan. A pass with nothing left
        to read (resumed after its last item) is complete at once, so a loader that begins
        it and drops it unread (``StatefulDataLoader`` resuming a finished iteration)
        reads the next epoch next."""
        self._follow_set_epoch()
        worker, workers = current_worker()
        layers, consumed = self._resolve(worker, workers)
        plan = self.plan(worker, workers)
        active = Pass(worker, workers, self.epoch, layers, consumed, planned=len(plan))
        self._passes.active = active
        if not active.planned:
            self._end_pass()
        return active, plan

    def _end_pass(self) -> None:
        """This process's pass handed out its whole plan: the next pass on this object reads
        the next epoch, and until it begins :meth:`state_dict` is this worker's at the end
        of the completed epoch, so merged with workers still reading that epoch it resumes
        their rest, not this worker's share of the next epoch."""
        active = self._passes.active
        if active is None or active.done:
            return
        active.progress.pos, active.done = active.planned, True
        self._passes.resume = None
        if self.epoch == active.epoch:
            self.epoch = active.epoch + 1

    # -- resumption -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where this worker (or the main-process pass) is in the epoch (after a completed
        pass: at the end of its epoch, until the next begins). Only passes of
        this process count: a dataset iterated by ``DataLoader`` workers (their copies)
        is still at its start here; take the loader's state instead."""
        active = self._passes.active
        if active is None:
            from torch.utils.data import get_worker_info

            if get_worker_info() is None and self._passes.resume is not None:
                return copy.deepcopy(self._passes.resume)  # loaded, for workers to resolve
            return self.worker_state(*current_worker())
        return self._state(active)

    def worker_state(self, worker: int, workers: int) -> dict[str, Any]:
        """The state worker ``worker`` of ``workers`` starts this pass from (before reading)."""
        return self._state(Pass(worker, workers, self.epoch, *self._resolve(worker, workers)))

    def _state(self, active: Pass) -> dict[str, Any]:
        rank, world = self.rank_world
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer": self.shuffle_buffer,
            "epoch": active.epoch,
            "rank": rank,
            "world": world,
            "manifest_version": self.dataset_version(),
            "layers": [[n, list(p)] for n, p in active.layers],
            "workers": active.workers,
            "positions": {str(active.worker): active.consumed + active.progress.pos},
            "made_with": self._made_with(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (one worker's) or :meth:`state_from_loader`."""
        name = type(self).__name__
        if state_source(state) != "dataset":
            raise wrong_state(state, f"a {name}.state_dict()", name)
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"unsupported {name} state version {state.get('version')!r}")
        _check_fields(state)
        if state["manifest_version"] != self.dataset_version():
            raise ConfigError(
                f"resume state is for dataset version {state['manifest_version']}, "
                f"this dataset is version {self.dataset_version()}: another dataset, or "
                f"this one packed again (pass version={state['manifest_version']!r} to "
                "read the version the state is for, while it is kept)"
            )
        now = self._made_with()
        made_with = state.get("made_with") or {  # a state from before "made_with"
            "seed": state["seed"],
            "shuffle": state["shuffle"],
            "shuffle_buffer": state.get("shuffle_buffer", 0),
        }
        differ = ", ".join(
            f"{name}={value!r} (here {now.get(name)!r})"
            for name, value in made_with.items()
            if now.get(name) != value
        )
        if differ:
            raise ConfigError(f"resume state was made with {differ}: pass the same settings")
        self._passes.resume = copy.deepcopy(dict(state))
        self._passes.active = None
        self.epoch = state["epoch"]
        if self._passes.told is not None:  # a set_epoch made before this state is superseded
            self._passes.seen = int(self._passes.told[1])

    @staticmethod
    def merge_states(states: list[Mapping[str, Any]]) -> dict[str, Any]:
        """One state from the states of every worker of one loader."""
        if not states:
            raise ConfigError("no worker states to merge")
        merged = copy.deepcopy(dict(states[0]))
        for state in states[1:]:
            merged["positions"].update(state["positions"])
            for name, value in state.items():  # extra_state lists: their union
                if isinstance(value, list) and name != "layers":
                    merged[name] = sorted({*merged.get(name, []), *value})
        return merged

    @classmethod
    def state_from_loader(cls, loader_state: Mapping[str, Any]) -> dict[str, Any]:
        """The dataset state inside a ``StatefulDataLoader.state_dict()``, all workers merged."""
        if not isinstance(loader_state, Mapping) or state_source(loader_state) in (
            "dataset", "RingLoader",
        ):  # fmt: skip
            raise wrong_state(loader_state, "a StatefulDataLoader.state_dict()", cls.__name__)
        workers = loader_state.get("_snapshot", {}).get("_worker_snapshots")
        if workers:
            states = [w.get("dataset_state") for w in workers.values()]
        else:  # num_workers=0
            states = [loader_state.get("dataset_state")]
        states = [s for s in states if s]
        if not states:
            raise ConfigError(f"the loader state holds no {cls.__name__} state")
        merged = cls.merge_states(states)
        if loader_state.get("_iterator_finished"):  # the loop over the loader ended
            return cls.next_epoch_state(merged)
        return merged

    @staticmethod
    def next_epoch_state(state: Mapping[str, Any]) -> dict[str, Any]:
        """A merged ``state`` of an epoch every worker read whole, taken once the loop over
        the loader ended, as the start of the next epoch (loaded as it is, it would make
        every pass an empty rest of that epoch: ``DataLoader`` workers start from a loaded
        state each epoch). A state taken inside the loop, after its last batch, is kept as
        it is: the epoch's rest is empty, and ``set_epoch`` moves on."""
        workers = int(state["workers"])
        return {
            **copy.deepcopy(dict(state)),
            "epoch": int(state["epoch"]) + 1,
            "layers": [],
            "positions": {str(worker): 0 for worker in range(workers)},
        }
