"""The console script caps glibc's malloc arenas for put/get/cp only, in its own process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import dcstore.cli.main as cli_main

PROBE = "from dcstore.cli.arenas import limit_arenas; print(limit_arenas())"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_cap_takes_effect_on_glibc_unless_the_user_set_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    ours = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert ours.stdout.strip() == "True", ours.stderr
    theirs = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, "MALLOC_ARENA_MAX": "4"},
        capture_output=True,
        text=True,
    )
    assert theirs.stdout.strip() == "False", theirs.stderr


def test_only_streaming_commands_of_the_console_script_cap_arenas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli_main, "limit_arenas", lambda: calls.append("capped") or True)
    store, src = str(tmp_path / "s"), tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    assert cli_main.main(["put", store, "k", str(src)]) == 0  # in-process: left alone
    assert calls == []
    assert cli_main.main(["ls", store], own_process=True) == 0
    assert calls == []
    assert cli_main.main(["get", store, "k", "-o", str(tmp_path / "out")], own_process=True) == 0
    assert cli_main.main(["cp", f"{store}/k", f"{store}/k2"], own_process=True) == 0
    assert cli_main.main(["put", store, "k3", str(src)], own_process=True) == 0
    assert calls == ["capped"] * 3
