"""Fenced code blocks of the Markdown docs, and how each one is run by tests/test_docs_snippets.py.

Rules:

* ```python blocks of one file run in order in one namespace; ```bash / ```sh blocks run with
  ``bash -e``; ```console blocks run their ``$ `` lines (output lines are not compared). All
  blocks of one file share one temporary working directory, so a shell block can create what a
  later python block reads.
* ``<!-- snippet: skip (reason) -->`` on the line before a block skips it, with that reason.
* Other tags (``text``, ``json``, ...) are shown, not run. A block without a tag must not look
  like code (a ``$ `` prompt, an import, a command): tag it so it runs, or ``text`` if it is
  recorded output.
* :data:`SUBSTITUTIONS` turns the placeholder servers and paths of the docs into local ones.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = ("README.md", "docs/*.md", "fuzz/README.md", "tests/chaos/README.md")
RUN_LANGS = ("python", "bash", "sh", "console")
SKIP_RE = re.compile(r"^<!-- snippet: skip \((?P<reason>[^)]+)\) -->\s*$")
FENCE_RE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
CODE_LOOKS = re.compile(
    r"^(\$ |>>> |import \w|from [\w.]+ import |export \w+=|dcstore [a-z]|\.venv/"
    r"|servers/\S+\.sh\b|docker (compose|run) )",
    re.MULTILINE,
)
RUN_ID = uuid.uuid4().hex[:8]
"""Unique per test session: server paths of the docs are put under it."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its tag, its text and why it is skipped (if it is)."""

    file: str
    line: int
    """1-based line of the opening fence."""
    lang: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    def untagged_code(self) -> bool:
        """True for a block with no tag whose text looks like code or a shell session."""
        return not self.lang and CODE_LOOKS.search(self.code) is not None


def doc_files() -> list[Path]:
    return sorted({p for pattern in DOC_FILES for p in ROOT.glob(pattern)})


def parse_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """Every fenced block of ``path``, named relative to ``root`` (an unclosed fence is an
    error naming its line)."""
    rel = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE_RE.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match["fence"]
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        if end is None:
            raise ValueError(f"{rel}:{i + 1}: code fence is never closed")
        skip = SKIP_RE.match(lines[i - 1]) if i else None
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(rel, i + 1, match["lang"], code, skip["reason"] if skip else None))
        i = end + 1
    return blocks


def console_commands(code: str) -> str:
    """The commands of a console transcript: its ``$ `` lines, without the prompt."""
    return "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ ")) + "\n"


@dataclass(frozen=True)
class Substitution:
    """``placeholder`` in a doc becomes ``replace(server_url, workdir)`` when run here.

    ``server`` names the DCSTORE_TEST_<NAME>_URL the block then needs (None: no server).
    """

    placeholder: str
    server: str | None
    replace: Callable[[str, Path], str]


def _origin(url: str) -> str:
    """``scheme://host:port`` of a server URL (its path and query dropped)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


SUBSTITUTIONS: tuple[Substitution, ...] = (
    Substitution("/etc/dcstore/kek.json", None, lambda _, d: str(d / "etc-kek.json")),
    Substitution("hdfs://namenode:9000/", "hdfs", lambda u, _: f"{_origin(u)}/docs-{RUN_ID}/"),
    Substitution("hdfs://nn:9000/", "hdfs", lambda u, _: f"{_origin(u)}/docs-{RUN_ID}/"),
    Substitution("redis://cache:6379", "redis", lambda u, _: _origin(u)),
    Substitution(
        "cassandra://10.0.0.5:9042/", "cassandra", lambda u, _: f"{_origin(u)}/docs_{RUN_ID}_"
    ),
    Substitution("mongodb://db1:27017/", "mongodb", lambda u, _: f"{_origin(u)}/docs_{RUN_ID}_"),
)


def servers_needed(code: str) -> list[str]:
    """The servers whose placeholders ``code`` mentions."""
    return sorted({s.server for s in SUBSTITUTIONS if s.server and s.placeholder in code})


def substitute(code: str, urls: dict[str, str], workdir: Path) -> str:
    """``code`` with every placeholder replaced (``urls``: server name -> its test URL)."""
    for sub in SUBSTITUTIONS:
        if sub.placeholder in code:
            url = urls[sub.server] if sub.server else ""
            code = code.replace(sub.placeholder, sub.replace(url, workdir))
    return code
