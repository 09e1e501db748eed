"""CLI-wide behaviour, run as a user would: global flags anywhere, --version, one-line
errors with their exit codes (docs/cli.md), no driver logs, help texts, missing extras."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dcstore import __version__
from dcstore.cli.main import EXIT_CONFIG, EXIT_UNAVAILABLE, all_parsers, build_parser

DCSTORE = [sys.executable, "-m", "dcstore.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DCSTORE, *args], capture_output=True, text=True, check=False)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dcstore: error: "), done.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_flags_before_or_after_the_subcommand(tmp_path, where) -> None:
    args = ["get", str(tmp_path), "missing"]
    done = run("--debug", *args) if where == "before" else run(*args, "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert run("maintenance", "sweep", str(tmp_path), "--version").stdout.strip() == (
        f"dcstore {__version__}"
    )


def test_version() -> None:
    done = run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"dcstore {__version__}")
    done = subprocess.run(  # python -m dcstore too (was: "cannot be directly executed")
        [sys.executable, "-m", "dcstore", "--version"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"dcstore {__version__}")


def test_unreachable_cassandra_is_one_line_without_driver_logs() -> None:
    port = closed_port()
    url = f"cassandra://127.0.0.1:{port}/ks?connect_timeout=1"
    done = run("ls", url)
    line = one_error_line(done)
    assert done.returncode == EXIT_UNAVAILABLE
    assert f"cassandra://127.0.0.1:{port}/ks" in line and "unavailable" in line
    debug = run("ls", url, "--debug")
    assert "Traceback" in debug.stderr


def test_missing_extra_gives_the_pip_hint(tmp_path) -> None:
    # The bench extra's modules made unimportable, as on an install without it.
    script = (
        "import sys\n"
        "for name in ('hdrh', 'psutil', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "from dcstore.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["bench", "backend", str(tmp_path), "--duration", "0.1s"]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False
    )
    line = one_error_line(done)
    assert done.returncode == EXIT_CONFIG
    assert "pip install 'dcstore[bench]'" in line


def test_help_texts_have_no_printf_escapes() -> None:
    assert "usage: dcstore" in run("--help").stdout
    parsers = all_parsers(build_parser())
    assert len(parsers) > 20
    for parser in parsers:
        text = parser.format_help()
        assert "%%" not in text and "%(" not in text, parser.prog
        assert "--debug" in text and "--version" in text, parser.prog


def test_every_positional_argument_has_help() -> None:
    """Newcomer: ``dcstore stat --help`` listed ``store`` and ``key`` with no word on them."""
    bare = [
        f"{parser.prog} {action.metavar or action.dest}"
        for parser in all_parsers(build_parser())
        for action in parser._actions
        if not action.option_strings and action.help is None and not action.choices
    ]
    assert bare == []


def test_docs_table_lists_every_exit_code() -> None:
    from dcstore import errors
    from dcstore.cli import exits

    text = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    documented = {  # exit code -> the error classes named in its row
        code: set(re.findall(r"`(\w+)`", names))
        for code, names in re.findall(r"^\| (\d+) \| ([^|]*)\|", text, re.M)
    }
    for cls, code in exits._EXIT_CODES:
        if issubclass(cls, errors.DcstoreError):
            assert cls.__name__ in documented[str(code)], (code, cls.__name__)


@pytest.mark.parametrize(
    "args,message",
    [
        (["bogus"], "invalid choice: 'bogus'"),
        (["ls"], "required: store (see: dcstore ls --help)"),
        (["cp", "a", "b", "--workers", "x"], "invalid int value"),
        (["pack", "a", "b", "--shard-size", "10XB"], "bad size '10XB': use e.g. 64KiB"),
        *[  # review: 0 was "shard_bytes must hold at least one token" (the Python name)
            ([*command, "--shard-size", "0"], "--shard-size: must be at least 1 byte, got '0'")
            for command in (["pack", "a", "b"], ["pack", "--text", "a", "b"], ["demo"])
        ],
        (["pack", "a", "b", "--seed", "-1"], "--seed: expected a whole number >= 0, got '-1'"),
        (["pack", "a", "b", "--workers", "0"], "--workers: expected a whole number >= 1"),
        (["ls", "a", "--opt", "cache=memory"], "cache is not a storage option"),  # TypeError
        (["pack", "a", "b", "--shard-size", "64", "KiB"], "KiB (see: dcstore pack --help)"),
        (["keys", "rotate", "a", "-x"], "-x (see: dcstore keys rotate --help)"),
        *[
            ([*command, "--cache", "memory"], "refused: this command reads the storage itself")
            for command in (
                ["verify", "a"],
                ["keys", "status", "a"],
                ["keys", "rotate", "a"],
                ["keys", "retire", "k", "a"],
            )
        ],
    ],
)
def test_usage_errors_are_one_line(args, message) -> None:
    done = run(*args)
    assert done.returncode == EXIT_CONFIG and message in one_error_line(done)


def test_bad_key_file_is_reported_before_reading_anything(tmp_path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "plain").write_bytes(b"not encrypted")
    done = run("get", str(tmp_path / "s"), "plain", "--keys", str(tmp_path / "none.json"))
    assert done.returncode == EXIT_CONFIG
    line = one_error_line(done)
    assert f"key file {tmp_path / 'none.json'} does not exist" in line
    assert f"dcstore keys new --keys {tmp_path / 'none.json'}" in line


def test_sweep_older_than_takes_a_duration(tmp_path) -> None:
    """``--older-than 0s`` was "invalid float value" while other duration options take
    ``500ms`` and ``0s``; a bare number is still seconds."""
    for value in ("0s", "500ms", "2h", "90"):
        done = run("maintenance", "sweep", str(tmp_path), "--older-than", value, "--json")
        assert done.returncode == 0, done.stderr
    done = run("maintenance", "sweep", str(tmp_path), "--older-than", "soon")
    assert done.returncode == EXIT_CONFIG and "bad duration 'soon'" in one_error_line(done)


def test_a_text_shard_size_below_one_token_names_the_shard_size(tmp_path) -> None:
    """``pack --text --shard-size 1`` said "shard_bytes must hold at least one token"."""
    (tmp_path / "corpus.txt").write_text("hello world\n")
    done = run("pack", "--text", str(tmp_path / "corpus.txt"), str(tmp_path / "s"),
               "--shard-size", "1")  # fmt: skip
    assert done.returncode == EXIT_CONFIG
    line = one_error_line(done)
    assert "shard size 1 B is too small" in line and "shard_bytes" not in line
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.parametrize("key", ["a", "a/"])
@pytest.mark.parametrize("command", ["stat", "get"])
def test_stat_and_get_of_a_prefix_say_it_is_one(tmp_path, command, key) -> None:
    """Outside pass: ``stat ./s a/`` said "object key 'a/' has an empty path segment"."""
    (tmp_path / "s" / "a").mkdir(parents=True)
    (tmp_path / "s" / "a" / "f").write_bytes(b"x")
    done = run(command, str(tmp_path / "s"), key)
    assert done.returncode == EXIT_CONFIG
    assert "is not an object but a prefix of objects: ls lists them" in one_error_line(done)
    (tmp_path / "s" / "ckpt-10").write_bytes(b"x")
    missing = run(command, str(tmp_path / "s"), "ckpt-1")  # review: a key starts with it
    assert missing.returncode == 3 and "no such object" in one_error_line(missing)
