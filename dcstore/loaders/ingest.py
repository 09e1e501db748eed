"""What ``dcstore pack`` reads: source layouts planned into sample specs.

A :class:`PackPlan` lists every sample as a :class:`SampleSpec` (its key and,
per field, a byte range of a source file or inline bytes) without reading any
payload, so the packer knows every sample's size up front, can shuffle, and
can split the work into whole shards across processes.

Layouts (``auto`` picks ``index`` when an index file is given, ``webdataset``
for a ``.tar`` or a folder of only ``.tar``, ``imagefolder`` for a folder
holding sub-folders and no image beside them, else ``flat``):

* ``imagefolder``: ``SRC/<class>/**/file`` as torchvision's ImageFolder; class
  names sorted, field ``cls`` = the class index in ASCII digits.
* ``flat``: every file under ``SRC``.
* ``webdataset``: the samples of existing tar shards, unchanged.
* ``index``: a JSONL/CSV/Parquet table with a ``path`` column (relative to
  ``SRC``), an optional ``label`` column (``cls``) and other columns as fields.

Naming guarantees (files, not tars): one file is one sample, keyed by its path
relative to ``SRC`` without the final extension (dots left in the key become
``_``, since a reader splits a tar member name at the first dot); the field is
the final extension lower-cased. With ``group=True`` files are grouped by
webdataset's rule instead (key up to the first dot of the file name: ``x.jpg``
and ``x.json`` form one sample). Two files that map to the same key and field,
or (without ``group``) to the same key, are a :class:`ConfigError` naming
both; nothing is merged silently. Unless ``names=False``, field ``path.txt``
keeps the original relative path(s). Hidden files (``.name``) are skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dcstore.errors import ConfigError, NotFoundError
from dcstore.loaders.tario import check_name_characters, split_name

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "imagefolder", "flat", "webdataset", "index")
NAME_FIELD = "path.txt"


IMAGE_EXTENSIONS = frozenset(
    ("jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp", "gif")
)
"""torchvision's ``IMG_EXTENSIONS`` plus ``gif``: what an ImageFolder packs by default."""


class FileSlice(NamedTuple):
    """``size`` bytes of the file at ``path`` from ``offset``."""

    path: str
    offset: int
    size: int


Payload = FileSlice | bytes


class SampleSpec(NamedTuple):
    """One sample to pack: its key and its fields' payloads, in field order."""

    key: str
    fields: tuple[tuple[str, Payload], ...]

    @property
    def size(self) -> int:
        """Payload bytes of the sample (what the progress bar counts)."""
        return sum(p.size if isinstance(p, FileSlice) else len(p) for _, p in self.fields)


class PackPlan(NamedTuple):
    """The samples of a source in pack order, its class table, detected layout, and the
    files the layout left out (relative paths, sorted): files in class folders that are
    not images (``skipped``: ``--group`` packs them) and files beside the class folders
    (``outside``: no layout but ``flat`` packs them)."""

    samples: list[SampleSpec]
    classes: tuple[str, ...]
    layout: str
    skipped: tuple[str, ...] = ()
    outside: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.samples)

    def shuffled(self, seed: int) -> PackPlan:
        """The same plan in an order that is a pure function of ``seed``."""
        order = np.random.default_rng(seed).permutation(len(self.samples))
        return self._replace(samples=[self.samples[i] for i in order])


class SourceFile(NamedTuple):
    """A file found in a source: its path relative to the root and extra fields."""

    rel: str
    extra: tuple[tuple[str, bytes], ...] = ()


def iter_visible(
    root: Path, *, inside: Path | None = None, report_loops: bool = True
) -> Iterator[str]:
    """Paths (relative to ``root``, ``/``-separated) of the files under it, hidden ones
    (``.name``, or inside a ``.folder``) skipped; in no particular order. Symbolic links
    are followed (a tree of links into a pool of files packs the files), except a link
    to a folder that contains it (a loop; ``root`` is walked as part of ``inside``), which
    is skipped (with a warning if ``report_loops``)."""
    top = os.fspath(root)
    outer = frozenset() if inside is None else frozenset([os.path.realpath(inside)])
    within: dict[str, frozenset[str]] = {top: outer | {os.path.realpath(top)}}
    for folder, dirs, files in os.walk(top, followlinks=True):
        ancestors = within.pop(folder)
        here = Path(os.path.realpath(folder))
        kept = []
        for name in dirs:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if real in ancestors or here.is_relative_to(real):  # a folder above it, or SRC's
                if report_loops:
                    _report_loop(path)
                continue
            within[path] = ancestors | {real}
            kept.append(name)
        dirs[:] = kept
        rel = os.path.relpath(folder, top).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        yield from (prefix + f for f in files if not f.startswith("."))


def visible_files(root: Path, *, inside: Path | None = None) -> list[str]:
    """:func:`iter_visible`, sorted."""
    return sorted(iter_visible(root, inside=inside))


def _report_loop(path: str | Path) -> None:
    log.warning("%s: skipped, a link to a folder that contains it (a loop)", path)


def _contains(folder: Path, root: Path) -> bool:
    """Whether ``folder`` (a link, say) is ``root`` or a folder above it: a loop."""
    return Path(os.path.realpath(root)).is_relative_to(os.path.realpath(folder))


def sample_name(rel: str, group: bool) -> tuple[str, str]:
    """(sample key, field) of the file at relative path ``rel`` (see the module rules)."""
    if group:
        key, field = split_name(rel)
    else:
        head, slash, base = rel.rpartition("/")
        stem, dot, ext = base.rpartition(".")
        key, field = (head + slash + stem.replace(".", "_"), ext.lower()) if dot else (rel, "")
    if not field or not key.rpartition("/")[2]:
        raise ConfigError(f"{rel}: a file needs a name and an extension to name its field")
    check_name_characters(rel, f"file {rel!r}")
    return key, field


def _add_field(
    fields: dict[str, tuple[str, Payload]], name: str, rel: str, payload: Payload, where: str
) -> None:
    """Add field ``name`` from file ``rel`` unless another file already gave it."""
    if name in fields and fields[name][1] != payload:
        other = fields[name][0]
        if other == rel:
            raise ConfigError(f"{where}: {rel} is field {name!r}, which the layout sets itself")
        raise ConfigError(f"{where}: {other} and {rel} both map to field {name!r}")
    fields.setdefault(name, (rel, payload))


def _collision_hint(one: str, other: str) -> str:
    """What to do about two files that map to one sample: ``--group`` only where it would
    pack them (not when they would still be one field, e.g. ``x.jpg`` and ``x.JPG``)."""
    try:
        grouped = {sample_name(rel, group=True) for rel in (one, other)}
    except ConfigError:
        grouped = set()
    if len(grouped) < 2:
        return "rename one"
    if len({key for key, _ in grouped}) == 1:
        return "pass --group to pack them as one sample, or rename one"
    return "pass --group to key them by their names up to the first dot, or rename one"


def plan_files(
    root: Path, files: Iterable[SourceFile], *, group: bool, names: bool
) -> list[SampleSpec]:
    """Samples from files under ``root``, named and collision-checked; sorted by key."""
    samples: dict[str, dict[str, tuple[str, Payload]]] = {}
    for file in files:
        key, field = sample_name(file.rel, group)
        fields = samples.setdefault(key, {})
        if fields and not group:
            other = next(iter(fields.values()))[0]
            raise ConfigError(
                f"{root}: {other} and {file.rel} both map to sample {key!r}; "
                f"{_collision_hint(other, file.rel)}"
            )
        path = os.path.join(root, file.rel)
        where = f"{root}, sample {key!r}"
        _add_field(fields, field, file.rel, FileSlice(path, 0, os.stat(path).st_size), where)
        for name, value in file.extra:
            _add_field(fields, name, file.rel, value, where)
    specs = []
    for key in sorted(samples):
        fields = samples[key]
        if names:
            if NAME_FIELD in fields:
                raise ConfigError(
                    f"{root}: {fields[NAME_FIELD][0]} maps to field {NAME_FIELD!r}, which holds "
                    "the original file names; pass --no-names to pack it under that field"
                )
            rels = sorted({rel for rel, _ in fields.values()})
            fields[NAME_FIELD] = (rels[0], "\n".join(rels).encode())
        specs.append(SampleSpec(key, tuple((name, p) for name, (_, p) in sorted(fields.items()))))
    return specs


def is_image(rel: str) -> bool:
    """Whether ``rel`` has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return rel.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def plan_imagefolder(root: Path, *, group: bool, names: bool) -> PackPlan:
    """``root/<class>/**/file`` -> samples with ``cls``; classes sorted like torchvision.

    Like torchvision's ``ImageFolder``, files beside the class folders (a README) are not
    samples, and only images become samples when the folders hold any; they are reported
    in ``outside`` and ``skipped``. With ``group`` every file in a class folder joins the
    sample of its name, and folders without any image (audio, say) are packed whole.
    """
    children = [c for c in sorted(root.iterdir()) if not c.name.startswith(".")]
    for loop in (c for c in children if c.is_dir() and _contains(c, root)):
        _report_loop(loop)
    classes = tuple(c.name for c in children if c.is_dir() and not _contains(c, root))
    if not classes:
        raise ConfigError(f"{root}: no class folders")
    outside = tuple(c.name for c in children if not c.is_dir())
    found = {name: visible_files(root / name, inside=root) for name in classes}
    all_rels = [f"{name}/{rel}" for name in classes for rel in found[name]]
    images_only = not group and any(is_image(rel) for rel in all_rels)
    skipped = tuple(rel for rel in all_rels if images_only and not is_image(rel))
    files: list[SourceFile] = []
    for index, name in enumerate(classes):
        label = (("cls", str(index).encode()),)
        kept = [rel for rel in found[name] if not images_only or is_image(rel)]
        if not kept:
            what = "images" if images_only else "files"
            raise ConfigError(f"{root / name}: class folder has no {what}")
        files += [SourceFile(f"{name}/{rel}", label) for rel in kept]
    samples = plan_files(root, files, group=group, names=names)
    return PackPlan(samples, classes, "imagefolder", skipped, outside)


COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def is_tar(rel: str) -> bool:
    """Whether ``rel`` names a tar, compressed or not (any case)."""
    return rel.lower().endswith((".tar", *COMPRESSED_TARS))


def refuse_compressed_tar(path: Path | str) -> None:
    """A compressed tar is a :class:`ConfigError` saying what to do (samples are packed
    as byte ranges of the tar files, read in place)."""
    if str(path).lower().endswith(COMPRESSED_TARS):
        raise ConfigError(
            f"{path}: a compressed tar: dcstore packs the samples of plain .tar shards, read "
            "in place: decompress them first (gunzip, xz -d, zstd -d), then pack the .tar files"
        )


def plan_flat(root: Path, *, group: bool, names: bool) -> PackPlan:
    """Every visible file under ``root``."""
    files = [SourceFile(rel) for rel in visible_files(root)]
    if not files:
        raise ConfigError(f"{root}: no files to pack")
    tars = [f.rel for f in files if is_tar(f.rel)]
    if tars:
        log.warning(
            "%s: %d tar file(s) (%s) packed as files, not as the samples inside them "
            "(the flat layout: other files are beside them); --layout webdataset packs "
            "the samples of the .tar files alone",
            root, len(tars), tars[0],
        )  # fmt: skip
    return PackPlan(plan_files(root, files, group=group, names=names), (), "flat")


def detect_layout(src: Path, index: Path | None) -> str:
    """The layout ``auto`` means for ``src`` (see the module docstring)."""
    if index is not None:
        return "index"
    if src.is_file():
        if src.suffix == ".tar":
            return "webdataset"
        refuse_compressed_tar(src)
        raise ConfigError(f"{src}: pack a folder, a .tar, or a folder of .tar shards")
    files = iter_visible(src, report_loops=False)  # the plan's own walk reports them
    first = next(files, None)
    rels = [] if first is None else [first]
    for rel in files:
        if not is_tar(rel):
            break
        rels.append(rel)
    else:
        if rels and all(is_tar(rel) for rel in rels):
            for rel in rels:
                refuse_compressed_tar(src / rel)
            return "webdataset"
    children = [c for c in src.iterdir() if not c.name.startswith(".")]
    folders = [c for c in children if c.is_dir()]
    loose_images = [c for c in children if not c.is_dir() and is_image(c.name)]
    return "imagefolder" if folders and not loose_images else "flat"


def plan_source(
    src: str | os.PathLike[str],
    *,
    layout: str = "auto",
    index: str | os.PathLike[str] | None = None,
    group: bool = False,
    names: bool = True,
) -> PackPlan:
    """Plan packing ``src`` in ``layout``; samples sorted by key (shuffle with ``shuffled``)."""
    from dcstore.loaders.ingest_sources import plan_index, plan_tars

    root = Path(src)
    if not root.exists():
        raise NotFoundError(f"{root}: no such file or folder")
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    index_path = None if index is None else Path(index)
    if index_path is not None and layout not in ("auto", "index"):
        raise ConfigError(f"an index file is read only with layout 'index', not {layout!r}")
    if layout == "auto":
        layout = detect_layout(root, index_path)
    if layout == "index":
        if index_path is None:
            raise ConfigError("layout 'index' needs an index file (--index)")
        return plan_index(root, index_path, group=group, names=names)
    if layout == "webdataset":
        return plan_tars(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: layout {layout!r} needs a folder")
    if layout == "imagefolder":
        return plan_imagefolder(root, group=group, names=names)
    return plan_flat(root, group=group, names=names)
