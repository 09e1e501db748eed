"""Documents out of corpus files: JSONL (``.jsonl``, ``.json``), Parquet and plain text.

A ``.csv`` or ``.tsv`` file is refused (:data:`TABLE_SUFFIXES`): read as plain text it
would be one document, header and all.

A document is ``(text, fields)``: ``fields`` holds the values of the requested
columns (e.g. ``label``). Guarantees: files are read in sorted path order
(directories walked), so the same inputs give the same documents in the same
order; a ``.gz`` file is read through gzip; a malformed line, bytes that are not
UTF-8, a damaged gzip stream, a missing text field or column, or a non-string text
is a :class:`ConfigError` naming the file and line (row), never a silently dropped
document.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dcstore.errors import ConfigError, NotFoundError

Document = tuple[str, dict[str, Any]]
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
TABLE_SUFFIXES = (".csv", ".tsv")
"""Refused, not packed as plain text: a table's header and rows would become one document."""
Inputs = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
"""Corpus files and directories: one path, or several."""


def corpus_files(inputs: Inputs) -> list[Path]:
    """Every file named, directories walked; sorted within each directory. One path
    (``str`` or path-like) is one input, never the characters of its name."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise NotFoundError(f"{path}: no such corpus file or directory")
    if not files:
        raise ConfigError("no corpus files found in " + ", ".join(map(str, items)))
    for path in files:
        _kind(path)  # a CSV or TSV file is refused before anything is read or written
    return files


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(TABLE_SUFFIXES):
        raise ConfigError(
            f"{path}: CSV and TSV files are not read as a corpus (it would be packed as one"
            " plain-text document, header included); columns are read from JSONL (.jsonl,"
            " .json, .ndjson) and Parquet (.parquet) files: convert it to one of these"
        )
    if name.endswith(JSON_SUFFIXES):
        return "jsonl"
    return "parquet" if name.endswith(".parquet") else "text"


def _open_bytes(path: Path) -> gzip.GzipFile | IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _open_text(path: Path) -> IO[str]:
    """Decoded as stored: ``newline=""`` keeps ``\r\n`` and ``\r`` (the default turned
    them into ``\n``, so the tokens were not those of the file's text)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _fields(row: dict[str, Any], text_field: str, columns: Sequence[str], where: str) -> Document:
    try:
        text = row[text_field]
        fields = {name: row[name] for name in columns}
    except KeyError as exc:
        raise ConfigError(f"{where}: no field {exc.args[0]!r} (has {list(row)})") from None
    if not isinstance(text, str):
        raise ConfigError(f"{where}: field {text_field!r} is {type(text).__name__}, not text")
    return text, fields


def _unreadable(where: str, exc: Exception) -> ConfigError:
    """The error for a file that is not UTF-8 text or not a whole gzip stream."""
    if isinstance(exc, UnicodeDecodeError):
        return ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    return ConfigError(f"{where}: cannot be read ({exc})")  # BadGzipFile, EOFError, OSError


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``path``'s lines, numbered from 1, each decoded alone (so an error names its line
    and the byte in it); see :func:`_unreadable`."""
    with _open_bytes(path) as f:
        try:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _unreadable(f"{path}:{n}", exc) from None
                yield n, line
        except (EOFError, OSError) as exc:
            raise _unreadable(str(path), exc) from None


def json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of a JSONL file with where each is (``path:line``), blank lines skipped;
    a malformed line, or one that is not an object or not UTF-8, is a :class:`ConfigError`
    naming it."""
    for n, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not a JSON line ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: a JSON line must be an object")
        yield where, row


def parquet_rows(
    path: Path, columns: Sequence[str] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a Parquet file (every column, or ``columns``) with where each is
    (``path row N``); a missing column, or a file that is not readable Parquet, is a
    :class:`ConfigError` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        missing = [c for c in columns or () if c not in names]
        if missing:
            raise ConfigError(f"{path}: no column {missing[0]!r} (has {names})")
        wanted = None if columns is None else list(columns)
        row = 0
        for batch in parquet.iter_batches(columns=wanted, use_threads=False):
            for values in batch.to_pylist():
                row += 1
                yield f"{path} row {row}", values
    except pa.ArrowException as exc:
        raise ConfigError(f"{path}: not a readable Parquet file ({exc})") from None


def _jsonl(path: Path, text_field: str, columns: Sequence[str]) -> Iterator[Document]:
    for where, row in json_rows(path):
        yield _fields(row, text_field, columns, where)


def _parquet(path: Path, text_field: str, columns: Sequence[str]) -> Iterator[Document]:
    for where, row in parquet_rows(path, [text_field, *columns]):
        yield _fields(row, text_field, columns, where)


def _text(path: Path, columns: Sequence[str]) -> Iterator[Document]:
    if columns:
        raise ConfigError(f"{path}: a plain-text file has no columns ({list(columns)} asked)")
    try:
        with _open_text(path) as f:
            text = f.read()
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        raise _unreadable(str(path), exc) from None
    yield text, {}


def read_documents(
    files: Sequence[Path], text_field: str = "text", columns: Sequence[str] = ()
) -> Iterator[Document]:
    """The documents of ``files`` in order: a JSON line or a Parquet row is one document,
    a plain-text file is one document."""
    for path in files:
        kind = _kind(path)
        if kind == "jsonl":
            yield from _jsonl(path, text_field, columns)
        elif kind == "parquet":
            yield from _parquet(path, text_field, columns)
        else:
            yield from _text(path, columns)
