"""Sources that describe their samples themselves: webdataset tars and index tables.

* Tars: every sample of every ``.tar`` (sorted paths), keys and fields as
  stored (webdataset's grouping); headers are parsed from a memory map, no
  payload is read. A key in two tars, or a field twice in a sample, is a
  :class:`ConfigError`.
* Index (``.jsonl``/``.json``, ``.csv``, ``.parquet``): one row per file. Column
  ``path`` (relative to ``SRC``, never absolute or ``..``) names the file;
  ``label`` becomes ``cls`` (every row labelled, or none; integers as given; text
  labels get a class table, sorted, and their index; a mix of the two, or a label of
  another type, is refused); every other non-empty column becomes a field of that
  name (lower-cased) (text as UTF-8, numbers in ASCII).
  Naming and collisions follow the file rules of :mod:`dcstore.loaders.ingest`.
"""

from __future__ import annotations

import csv
import json
import logging
import mmap
import re
from pathlib import Path, PurePosixPath
from typing import Any

from dcstore.errors import ConfigError, NotFoundError
from dcstore.loaders.ingest import (
    FileSlice,
    PackPlan,
    SampleSpec,
    SourceFile,
    is_tar,
    iter_visible,
    plan_files,
    refuse_compressed_tar,
)
from dcstore.loaders.tario import (
    check_name_characters,
    check_sample_key,
    group_samples,
    parse_members,
)
from dcstore.loaders.writer import label_out_of_range

log = logging.getLogger(__name__)

PATH_COLUMN = "path"
LABEL_COLUMN = "label"


def tar_paths(src: Path) -> list[Path]:
    """The ``.tar`` files named by ``src`` (a file, or a folder of tars: visible files,
    links followed, as every layout walks its folder)."""
    if src.is_file():
        refuse_compressed_tar(src)
        return [src]
    rels = [rel for rel in iter_visible(src) if is_tar(rel)]
    for rel in rels:
        refuse_compressed_tar(src / rel)
    return sorted(p for p in (src / rel for rel in rels) if p.is_file())


def plan_tars(src: Path) -> PackPlan:
    """The samples of the tar(s) at ``src`` as byte ranges of the tar files."""
    specs: list[SampleSpec] = []
    seen: dict[str, Path] = {}
    hidden: list[str] = []
    for path in tar_paths(src):
        with path.open("rb") as f:
            if path.stat().st_size == 0:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    members = parse_members(view)
                finally:
                    view.release()
        shown = [m for m in members if not _is_hidden(m.name)]
        hidden += [f"{path}:{m.name}" for m in members if _is_hidden(m.name)]
        for span in group_samples(shown):
            try:
                check_sample_key(span.key)
            except ConfigError as exc:
                raise ConfigError(f"{path}: member {span.members[0].name!r}: {exc}") from None
            if seen.get(span.key) == path:
                raise ConfigError(
                    f"{path}: sample {span.key!r} twice: its members are not next to each "
                    "other (a sample's files must follow one another in the tar, as "
                    "webdataset groups them)"
                )
            if span.key in seen:
                raise ConfigError(f"sample {span.key!r} is in both {seen[span.key]} and {path}")
            seen[span.key] = path
            for m in span.members:
                check_name_characters(m.field, f"{path}: sample {span.key!r} field {m.field!r}")
            fields = [(m.field, FileSlice(str(path), m.data, m.size)) for m in span.members]
            if len({name for name, _ in fields}) != len(fields):
                raise ConfigError(f"{path}: sample {span.key!r} has a field twice")
            specs.append(SampleSpec(span.key, tuple(fields)))
    if hidden:
        log.warning(
            "skipped %d hidden tar member(s) (%s%s), as folders skip hidden files (macOS "
            "writes ._name beside each file)",
            len(hidden), hidden[0], f" and {len(hidden) - 1} more" if len(hidden) > 1 else "",
        )  # fmt: skip
    if not specs:
        raise ConfigError(f"{src}: no samples in the .tar file(s)")
    return PackPlan(specs, (), "webdataset")


def _is_hidden(name: str) -> bool:
    """A member whose name or folder starts with a dot (``._x.jpg``, ``.cache/x``), as
    :func:`~dcstore.loaders.ingest.iter_visible` skips such files."""
    return any(part.startswith(".") and part not in (".", "..") for part in name.split("/"))


def read_index(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL, CSV or Parquet index file; a malformed line (row), text that is
    not UTF-8 or a file that is not Parquet is a :class:`ConfigError` naming the file and
    the line, as ``pack --text`` reads its corpus (:mod:`dcstore.tokens.sources`)."""
    from dcstore.tokens.sources import json_rows, numbered_lines, parquet_rows

    if not path.is_file():
        raise NotFoundError(f"{path}: no such index file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return [row for _, row in json_rows(path)]
    if suffix == ".csv":
        reader = csv.DictReader(line for _, line in numbered_lines(path))
        try:
            return list(reader)
        except csv.Error as exc:
            raise ConfigError(f"{path}:{reader.line_num}: not a CSV line ({exc})") from None
    if suffix == ".parquet":
        return [row for _, row in parquet_rows(path)]
    raise ConfigError(f"{path}: index files are .jsonl, .csv or .parquet")


def _relative(root: Path, value: object, where: str) -> str:
    rel = PurePosixPath(str(value or ""))
    if not str(value or "") or rel.is_absolute() or ".." in rel.parts:
        raise ConfigError(f"{where}: path {value!r} must be relative to {root}, without '..'")
    if not (root / rel).is_file():
        raise NotFoundError(f"{where}: {root / rel} does not exist")
    return rel.as_posix()


def _field_value(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (str, int, float)):
        return str(value).encode("utf-8")
    return json.dumps(value).encode("utf-8")


def _is_integer_label(value: object) -> bool:
    """An integer label: a JSON/Parquet integer or text of ASCII digits, perhaps negative
    (a CSV cell)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (
        isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value) is not None
    )


def _check_label_kinds(rows: list[dict[str, Any]], index: Path) -> None:
    """Every label is an integer (a ``cls`` as given) or every label is text (a class
    name); a mix, or a label of another type (3.5, true), is a :class:`ConfigError`
    naming the first row at fault, as it would be packed as a class name silently."""
    first: tuple[int, object] | None = None
    for number, row in enumerate(rows, 1):
        value = row.get(LABEL_COLUMN)
        if value in (None, ""):
            continue
        where = f"{index} row {number} ({row.get(PATH_COLUMN)!r})"
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(
                f"{where}: label {value!r} is neither an integer nor text: give a class "
                "index (an integer) or a class name (text)"
            )
        if first is None:
            first = (number, value)
        elif _is_integer_label(value) != _is_integer_label(first[1]):
            raise ConfigError(
                f"{where}: label {value!r} mixes integer and text labels (row {first[0]} has "
                f"{first[1]!r}): give every row a class index (integer) or every row a class "
                "name (text that is not a number)"
            )


def _labels(rows: list[dict[str, Any]], index: Path) -> tuple[list[bytes | None], tuple[str, ...]]:
    """Each row's ``cls`` bytes (None: no row has a label) and the class table. Some rows
    labelled and others not is a :class:`ConfigError` naming the first without one (its
    sample would lack the ``cls`` every other has, and fail a reader that asks for it)."""
    values = [row.get(LABEL_COLUMN) for row in rows]
    given = [v for v in values if v not in (None, "")]
    if given and len(given) < len(values):
        number = next(n for n, v in enumerate(values, 1) if v in (None, ""))
        raise ConfigError(
            f"{index} row {number}: no {LABEL_COLUMN!r} (other rows have one): label every "
            "row, or none"
        )
    _check_label_kinds(rows, index)
    if all(_is_integer_label(v) for v in given):
        for number, value in enumerate(values, 1):
            problem = None if value in (None, "") else label_out_of_range(int(value))
            if problem is not None:
                raise ConfigError(
                    f"{index} row {number} ({rows[number - 1].get(PATH_COLUMN)!r}): {problem}:"
                    " give a class index in that range"
                )
        return [None if v in (None, "") else str(int(v)).encode() for v in values], ()
    classes = tuple(sorted({str(v) for v in given}))
    number_of = {name: i for i, name in enumerate(classes)}
    return [None if v in (None, "") else str(number_of[str(v)]).encode() for v in values], classes


def _note_no_label_column(rows: list[dict[str, Any]], index: Path) -> None:
    """Warn, naming the columns found, when no row has a ``label`` column (``lable``, a
    typo, would become a field of that name and no sample would get ``cls``)."""
    columns = list(dict.fromkeys(column for row in rows for column in row))
    if LABEL_COLUMN not in columns:
        log.warning(
            "%s: no %r column (columns: %s), so samples have no cls; other columns become "
            "fields",
            index, LABEL_COLUMN, ", ".join(map(str, columns)),
        )  # fmt: skip


def plan_index(root: Path, index: Path, *, group: bool, names: bool) -> PackPlan:
    """Samples of the files an index table lists, with its labels and columns."""
    rows = read_index(index)
    if not rows:
        raise ConfigError(f"{index}: the index has no rows")
    _note_no_label_column(rows, index)
    labels, classes = _labels(rows, index)
    files = []
    for number, (row, label) in enumerate(zip(rows, labels, strict=True), 1):
        where = f"{index} row {number}"
        if PATH_COLUMN not in row:
            raise ConfigError(f"{where}: no {PATH_COLUMN!r} column")
        bad = [c for c in row if not c or c.startswith("__") or "/" in c]
        if bad:
            raise ConfigError(f"{where}: column {bad[0]!r} cannot name a field")
        fields = [c.lower() for c in row if c not in (PATH_COLUMN, LABEL_COLUMN)]
        if len(set(fields)) != len(fields):  # Caption and caption: one field
            raise ConfigError(f"{where}: columns {fields} name one field twice (any case)")
        extra = [("cls", label)] if label is not None else []
        extra += [
            (column.lower(), _field_value(value))  # as extensions: readers lower-case fields
            for column, value in row.items()
            if column not in (PATH_COLUMN, LABEL_COLUMN) and value not in (None, "")
        ]
        files.append(SourceFile(_relative(root, row[PATH_COLUMN], where), tuple(extra)))
    return PackPlan(plan_files(root, files, group=group, names=names), classes, "index")
