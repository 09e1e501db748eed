"""One dataset version for every rank of a job.

Each rank opens the manifest itself. A pack committing while the ranks start could
give them different versions, and an epoch would then not be read exactly once across
them. :func:`agree_on_version` makes them read one: rank 0's.

Guarantees, when ``torch.distributed`` is initialised with more than one rank:

* every rank returns a manifest of the same version, or every rank raises;
* the usual case costs one ``all_gather_object`` of the version names (tens of bytes),
  over the default group when it is gloo, else over a gloo group made once for it (so
  an NCCL job needs no CUDA device chosen yet, and no GPU memory is touched);
* a rank whose version differs from rank 0's opens rank 0's (the current manifest or,
  once replaced, its archive); should that fail (the version is gone, or no archive is
  kept), every rank reopens the current manifest and they try again, a few times, before
  raising :class:`VersionChangedError` naming the versions seen.

It is a collective call: every rank must make it, in the same order as its other
collectives. Without a process group (or with one rank) it returns ``opened`` as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from dcstore.errors import NotFoundError, VersionChangedError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

ATTEMPTS = 4
"""Rounds of comparison before giving up (each after a commit raced the open)."""


class Versioned(Protocol):
    @property
    def version(self) -> str: ...


M = TypeVar("M", bound=Versioned)


def process_group_size() -> int:
    """Ranks in the initialised ``torch.distributed`` default group, else 1."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def default_backend() -> str:
    """The backend of the default group (a function, so tests can stand in another)."""
    import torch.distributed as dist

    return str(dist.get_backend())


_side_group: tuple[object, ProcessGroup] | None = None
"""(the default group it was made for, a gloo group of the same ranks)."""


def _object_group() -> ProcessGroup | None:
    """The group to exchange the names over: None (the default group) when it is gloo,
    else a gloo group of the same ranks, made once per default group (every rank makes
    it at the same call, as it does the exchange)."""
    global _side_group
    import torch.distributed as dist

    if default_backend() == "gloo":
        return None
    world = dist.group.WORLD
    if _side_group is None or _side_group[0] is not world:
        group = dist.new_group(backend="gloo")
        assert isinstance(group, dist.ProcessGroup)  # every rank is a member
        _side_group = (world, group)
    return _side_group[1]


def _gather_versions(version: str) -> list[str]:
    import torch.distributed as dist

    versions: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(versions, version, group=_object_group())
    return [str(v) for v in versions]


def agree_on_version(
    opened: M, open_version: Callable[[str], M], open_current: Callable[[], M]
) -> M:
    """``opened`` or another manifest so that every rank holds rank 0's version.

    ``open_version(v)`` opens version ``v`` where it can (else it raises
    :class:`NotFoundError` or returns another version); ``open_current()`` reopens the
    current manifest."""
    if process_group_size() == 1:
        return opened
    manifest = opened
    for attempt in range(ATTEMPTS):
        versions = _gather_versions(manifest.version)
        if len(set(versions)) == 1:
            return manifest
        if attempt == ATTEMPTS - 1:
            break
        if attempt > 0:  # rank 0's version could not be read everywhere: start afresh
            manifest = open_current()
        elif manifest.version != versions[0]:
            try:
                manifest = open_version(versions[0])
            except NotFoundError:
                manifest = open_current()
    raise VersionChangedError(
        f"the ranks could not agree on a dataset version in {ATTEMPTS} attempts (last seen "
        f"by rank: {', '.join(versions)}): packs kept committing while they opened it, or "
        f"the ranks opened different datasets; pass version= to read one, or rank= and "
        f"world_size= to read each on its own"
    )
