"""Every code block of README.md, docs/*.md and fuzz/README.md runs, so the docs cannot rot.

How blocks run, the skip marker and the placeholder substitutions: tests/docsnippets.py.
One test per block, named ``FILE:LINE`` of its opening fence.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from docsnippets import (
    ROOT,
    RUN_LANGS,
    Block,
    console_commands,
    doc_files,
    parse_blocks,
    servers_needed,
    substitute,
)
from serverenv import server_url

SHELL_TIMEOUT_S = 600
BLOCKS = [block for path in doc_files() for block in parse_blocks(path)]
RUNNABLE = [block for block in BLOCKS if block.lang in RUN_LANGS]
_namespaces: dict[str, dict[str, object]] = {}
_workdirs: dict[str, Path] = {}
_failed: dict[str, str] = {}


def _workdir(block: Block, factory: pytest.TempPathFactory) -> Path:
    """The temporary directory every block of ``block.file`` runs in (with its tool shims)."""
    if block.file not in _workdirs:
        workdir = factory.mktemp(block.file.replace("/", "-").replace(".", "-"))
        bin_dir = workdir.parent / f"{workdir.name}-bin"
        bin_dir.mkdir()
        for name, target in (("dcstore", "-m dcstore.cli"), ("python", ""), ("python3", "")):
            shim = bin_dir / name
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {target} "$@"\n')
            shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
        _workdirs[block.file] = workdir
    return _workdirs[block.file]


def _env(workdir: Path) -> dict[str, str]:
    bin_dirs = [str(workdir.parent / f"{workdir.name}-bin"), str(Path(sys.executable).parent)]
    env = {k: v for k, v in os.environ.items() if k != "DCSTORE_KEYS_FILE"}
    env["PATH"] = os.pathsep.join([*bin_dirs, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _prepare(block: Block, workdir: Path) -> str:
    """The block's code with local servers and paths; creates the keyring it may name."""
    urls = {name: server_url(name) for name in servers_needed(block.code)}
    code = substitute(block.code, urls, workdir)
    keyring = workdir / "etc-kek.json"
    if str(keyring) in code and not keyring.exists():
        subprocess.run(
            ["dcstore", "keys", "new", "--keys", str(keyring)],
            cwd=workdir, env=_env(workdir), check=True, capture_output=True,
        )  # fmt: skip
    return code


def _run_python(block: Block, code: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Run as a script is (a block guarding its main code with `if __name__ == "__main__"`).
    namespace = _namespaces.setdefault(block.file, {"__name__": "__main__"})
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    for name in ("PATH", "PYTHONPATH"):  # commands a block starts (webdataset's pipe:)
        monkeypatch.setenv(name, _env(workdir)[name])
    # Padding keeps tracebacks on the Markdown file's own line numbers.
    compiled = compile("\n" * block.line + code, str(ROOT / block.file), "exec")
    exec(compiled, namespace)


def _run_shell(block: Block, code: str, workdir: Path) -> None:
    script = console_commands(code) if block.lang == "console" else code
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=SHELL_TIMEOUT_S,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(
            f"{block.id}: exit {proc.returncode}\n--- script\n{script}--- stdout\n"
            f"{proc.stdout[-4000:]}--- stderr\n{proc.stderr[-4000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_doc_block_runs(
    block: Block, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.skip:
        pytest.skip(block.skip)
    if block.file in _failed:
        pytest.fail(f"not run: the earlier block {_failed[block.file]} failed", pytrace=False)
    workdir = _workdir(block, tmp_path_factory)
    code = _prepare(block, workdir)
    try:
        if block.lang == "python":
            _run_python(block, code, workdir, monkeypatch)
        else:
            _run_shell(block, code, workdir)
    except BaseException:
        _failed[block.file] = block.id
        raise


def test_no_untagged_block_looks_like_code() -> None:
    """Code must say how it runs: python/bash/console blocks run; text is recorded output."""
    untagged = [b.id for b in BLOCKS if b.untagged_code()]
    assert not untagged, f"tag these blocks python/bash/console (run) or text: {untagged}"


def test_every_doc_has_blocks_and_skips_are_rare() -> None:
    """The harness sees the docs (a parse regression cannot pass silently), and skipped
    blocks stay a minority, each with its reason."""
    skipped = [b for b in RUNNABLE if b.skip]
    assert any(b.file == "README.md" for b in RUNNABLE)
    assert all(b.skip.strip() for b in skipped)
    assert len(skipped) * 2 <= len(RUNNABLE), [b.id for b in skipped]


def test_parser_reads_tags_skips_and_transcripts(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- snippet: skip (needs Docker) -->\n```bash\ndocker ps\n```\n\n"
        "```\n$ dcstore ls .\na.tar\n```\n```text\nplain\n```\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(doc, root=tmp_path)
    assert [(b.line, b.lang, b.skip) for b in blocks] == [
        (2, "bash", "needs Docker"), (6, "", None), (10, "text", None),
    ]  # fmt: skip
    assert blocks[1].untagged_code() and not blocks[2].untagged_code()
    assert console_commands(blocks[1].code) == "dcstore ls .\n"
