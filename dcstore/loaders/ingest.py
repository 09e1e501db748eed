"""Sources for packing: a folder of files, or existing webdataset ``.tar`` shards.

Guarantees: samples come out in a deterministic order (sorted paths); in a
folder, files ``a/b/key.ext`` sharing ``a/b/key`` form one sample (webdataset's
naming rule), with keys relative to the folder; tar members are grouped the
same way (one tar in memory at a time; payloads are views into it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from dcstore.errors import ConfigError, NotFoundError
from dcstore.loaders.tario import iter_samples, split_name

Sample = dict[str, object]


def tar_paths(src: Path) -> list[Path]:
    """The ``.tar`` files named by ``src`` (a file, or a folder holding only tars)."""
    if src.is_file():
        return [src]
    return sorted(p for p in src.rglob("*.tar") if p.is_file())


def is_tar_source(src: Path) -> bool:
    """True if ``src`` is a tar file or a folder whose files are all ``.tar``."""
    if src.is_file():
        return src.suffix == ".tar"
    files = [p for p in src.rglob("*") if p.is_file()]
    return bool(files) and all(p.suffix == ".tar" for p in files)


def samples_from_tars(paths: list[Path]) -> Iterator[Sample]:
    """Every sample of every tar, in order."""
    for path in paths:
        yield from iter_samples(path.read_bytes())


def samples_from_folder(src: Path) -> Iterator[Sample]:
    """Group the files under ``src`` into samples by webdataset key."""
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    sample: Sample = {}
    for rel in files:
        key, field = split_name(rel)
        if not field:
            raise ConfigError(f"{src / rel}: a file needs an extension to name its field")
        if sample and sample["__key__"] != key:
            yield sample
            sample = {}
        sample["__key__"] = key
        sample[field] = (src / rel).read_bytes()
    if sample:
        yield sample


def source_samples(src: str | os.PathLike[str]) -> tuple[Iterator[Sample], int]:
    """(samples, total input bytes) of a folder of files or of ``.tar`` shards."""
    path = Path(src)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or folder")
    if is_tar_source(path):
        paths = tar_paths(path)
        return samples_from_tars(paths), sum(p.stat().st_size for p in paths)
    if path.is_file():
        raise ConfigError(f"{path}: pack a folder of files or .tar shards")
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return samples_from_folder(path), total
