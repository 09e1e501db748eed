"""The dcstore CLI object commands, run as a user would: exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DCSTORE = [sys.executable, "-m", "dcstore.cli"]


def run(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*DCSTORE, *args], capture_output=True, input=input, check=False)


def test_round_trip_and_listing(tmp_path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(6 << 20))
    store = str(tmp_path / "store")
    assert run("put", store, "data/in.bin", str(src)).returncode == 0
    assert run("put", store, "data/stdin.txt", "-", input=b"hello").returncode == 0
    listed = json.loads(run("ls", store, "data/", "--json").stdout)
    assert [e["key"] for e in listed] == ["data/in.bin", "data/stdin.txt"]
    stat = json.loads(run("stat", store, "data/in.bin", "--json").stdout)
    assert stat["size"] == 6 << 20 and stat["version"]
    out = tmp_path / "out.bin"
    assert run("get", store, "data/in.bin", "-o", str(out)).returncode == 0
    assert out.read_bytes() == src.read_bytes()
    assert run("get", store, "data/stdin.txt").stdout == b"hello"
    copied = run("cp", store, "memory://cli", "data/", "--json")
    assert json.loads(copied.stdout) == {"objects": 2, "bytes": (6 << 20) + 5}
    assert run("rm", store, "data/stdin.txt", "data/stdin.txt").returncode == 0
    assert run("ls", store).stdout.decode().split()[-1] == "data/in.bin"


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["ls", "gopher://x/y"], 2, "unknown storage scheme 'gopher'"),
        (["get", "{store}", "missing"], 3, "no such object"),
        (["put", "{store}", "../escape", "{file}"], 2, "path traversal"),
        (["ls", "{store}", "--opt", "nope=1"], 2, "unknown option(s) nope"),
        (["get", "{store}", "/abs"], 2, "absolute"),
        (["put", "{store}", "k", "{missing_file}"], 3, "No such file"),
    ],
)
def test_errors_are_one_line(tmp_path, args, code, message) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fill = {
        "store": str(tmp_path / "s"),
        "file": str(tmp_path / "f"),
        "missing_file": str(tmp_path / "nofile"),
    }
    done = run(*[a.format(**fill) for a in args])
    err = done.stderr.decode()
    assert done.returncode == code, err
    assert message in err
    assert err.startswith("dcstore: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_debug_shows_traceback(tmp_path) -> None:
    done = run("--debug", "get", str(tmp_path), "missing")
    assert done.returncode != 0 and b"Traceback" in done.stderr


def test_encrypted_round_trip_with_key_file(tmp_path) -> None:
    kek = tmp_path / "kek.json"
    assert run("keys", "new", "--keys", str(kek)).returncode == 0
    store = str(tmp_path / "enc")
    assert run("put", store, "a", "-", "--keys", str(kek), input=b"secret sample").returncode == 0
    refused = run("get", store, "a")  # without keys: a key error, never ciphertext
    assert refused.returncode == 4 and refused.stdout == b""
    assert b"is encrypted: pass keys=" in refused.stderr
    raw = (Path(store) / "a").read_bytes()
    assert raw.startswith(b"DCSE") and b"secret sample" not in raw
    env = {**os.environ, "DCSTORE_KEYS_FILE": str(kek)}
    done = subprocess.run([*DCSTORE, "get", store, "a"], capture_output=True, env=env, check=False)
    assert done.stdout == b"secret sample"
