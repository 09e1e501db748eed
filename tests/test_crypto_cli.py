"""``dcstore keys`` and ``dcstore verify`` run as a user would: output, exit codes, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DCSTORE = [sys.executable, "-m", "dcstore.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DCSTORE_KEYS")}
    full_env.update(env or {})
    return subprocess.run(
        [*DCSTORE, *args], capture_output=True, text=True, check=False, env=full_env
    )


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_keys_lifecycle_and_verify(tmp_path: Path) -> None:
    keys = tmp_path / "kek.json"
    store = f"file://{tmp_path / 'store'}"
    src = tmp_path / "shard.tar"
    src.write_bytes(os.urandom(9 << 20))

    first = run("keys", "new", "--keys", str(keys), "--id", "k1")
    assert first.returncode == 0 and first.stdout.strip() == "k1"
    assert keys.stat().st_mode & 0o777 == 0o600
    for name in ("a/shard-0.tar", "a/shard-1.tar", "b/shard-2.tar"):
        assert run("put", store, name, str(src), "--keys", str(keys)).returncode == 0
    assert run("keys", "new", "--keys", str(keys), "--id", "k2").returncode == 0

    status = json.loads(run("keys", "status", store, "--keys", str(keys), "--json").stdout)
    by_id = {r["id"]: r for r in status["keys"]}
    assert by_id["k1"]["objects"] == 3 and by_id["k1"]["state"] == "active"
    assert by_id["k2"] == {
        "id": "k2",
        "state": "primary",
        "type": "aes",
        "private": True,
        "objects": 0,
        "bytes": 0,
    }

    refused = run("keys", "retire", "k1", store, "--keys", str(keys), "--min-age", "0")
    assert refused.returncode == 2 and "still wraps 3 object(s)" in refused.stderr

    rotated = run("keys", "rotate", store, "--keys", str(keys), "--prefix", "a/")
    assert rotated.returncode == 0 and "2 rewrapped" in rotated.stdout
    env = {"DCSTORE_KEYS_FILE": str(keys)}
    assert "1 object(s) not under the primary" in run("keys", "status", store, env=env).stdout
    assert "1 rewrapped" in run("keys", "rotate", store, env=env).stdout

    young = run("keys", "retire", "k1", store, "--keys", str(keys))
    assert young.returncode == 2 and "--min-age" in young.stderr
    assert run("keys", "retire", "k1", store, "--keys", str(keys), "--min-age", "0").returncode == 0
    listed = run("keys", "list", "--keys", str(keys)).stdout.split()
    assert listed == ["primary", "aes", "k2", "retired", "-", "k1"]

    out = tmp_path / "out.tar"
    got = run("get", store, "a/shard-0.tar", "-o", str(out), "--keys", str(keys))
    assert got.returncode == 0 and out.read_bytes() == src.read_bytes()

    ok = run("verify", store, "--keys", str(keys))
    assert ok.returncode == 0 and "checked 3 object(s)" in ok.stderr

    # damage two objects in different ways; verify reports both and exits 6
    flip_byte(tmp_path / "store" / "a" / "shard-1.tar", 5 << 20)
    (tmp_path / "store" / "b" / "copy.tar").write_bytes(
        (tmp_path / "store" / "b" / "shard-2.tar").read_bytes()
    )
    bad = run("verify", store, "--keys", str(keys), "--json")
    assert bad.returncode == 6
    report = json.loads(bad.stdout)
    assert report["checked"] == 4
    assert {f["key"]: f["segments"] for f in report["failed"]} == {
        "a/shard-1.tar": [1],
        "b/copy.tar": [0, 1, 2],
    }
    text = run("verify", store, "--prefix", "a/", env={"DCSTORE_KEYS": keys.read_text()})
    assert text.returncode == 6 and text.stdout.count("FAILED") == 1

    # to stdout, get streams only verified segments and stops at the damaged one (exit 6)
    env_no_keys = {k: v for k, v in os.environ.items() if not k.startswith("DCSTORE_KEYS")}
    streamed = subprocess.run(
        [*DCSTORE, "get", store, "a/shard-1.tar", "--keys", str(keys)],
        capture_output=True, check=False, env=env_no_keys,
    )  # fmt: skip
    assert streamed.returncode == 6 and b"'a/shard-1.tar'" in streamed.stderr
    # verified ranges before the damaged one (here none: the first 8 MiB range holds it)
    assert src.read_bytes().startswith(streamed.stdout) and len(streamed.stdout) < (5 << 20)
    # to a file, get writes the whole object or nothing (no partial file, no temp left)
    damaged = run("get", store, "a/shard-1.tar", "-o", str(tmp_path / "d.tar"), "--keys", str(keys))
    assert damaged.returncode == 6 and "'a/shard-1.tar'" in damaged.stderr
    assert not (tmp_path / "d.tar").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dcstore-get-")]

    # no command ever prints key material
    secrets = [e["key"] for e in json.loads(keys.read_text())["keys"] if "key" in e]
    for result in (first, refused, rotated, ok, bad, text, damaged):
        assert not any(s in result.stdout + result.stderr for s in secrets)


def test_key_errors_exit_codes(tmp_path: Path) -> None:
    keys = tmp_path / "kek.json"
    store = f"file://{tmp_path / 'store'}"
    assert run("keys", "new", "--keys", str(keys)).returncode == 0
    src = tmp_path / "x"
    src.write_bytes(b"x" * 1000)
    assert run("put", store, "x", str(src), "--keys", str(keys)).returncode == 0

    other = tmp_path / "other.json"
    assert run("keys", "new", "--keys", str(other)).returncode == 0
    wrong = run("verify", store, "--keys", str(other))
    assert wrong.returncode == 4 and "not in the keys of" in wrong.stdout
    assert run("get", store, "x", "--keys", str(other)).returncode == 4

    os.chmod(keys, 0o644)
    loose = run("verify", store, "--keys", str(keys))
    assert loose.returncode == 4 and "chmod 600" in loose.stderr
    os.chmod(keys, 0o600)
    none = run("verify", store)
    assert none.returncode == 2 and "DCSTORE_KEYS_FILE" in none.stderr
    ro = run("keys", "new", env={"DCSTORE_KEYS": keys.read_text()})
    assert ro.returncode == 2 and "key file" in ro.stderr


def test_key_commands_refuse_a_store_without_objects(tmp_path: Path) -> None:
    """`keys retire KEY ./typo` destroyed the key, "no object among 0 in 1 store(s) uses
    it", exit 0, while the real store still needed it; status and rotate said 0 too."""
    keys = tmp_path / "kek.json"
    store = f"file://{tmp_path / 'store'}"
    assert run("keys", "new", "--keys", str(keys), "--id", "k1").returncode == 0
    (tmp_path / "w.bin").write_bytes(b"weights")
    assert run("put", store, "w.bin", str(tmp_path / "w.bin"), "--keys", str(keys)).returncode == 0
    assert run("keys", "new", "--keys", str(keys), "--id", "k2").returncode == 0
    typo = f"file://{tmp_path / 'stor'}"
    for command in (
        ("keys", "retire", "k1", typo, "--min-age", "0"),
        ("keys", "retire", "k1", store, typo, "--min-age", "0"),
        ("keys", "status", typo),
        ("keys", "rotate", typo),
        ("keys", "rotate", store, "--prefix", "nothing/"),
    ):
        refused = run(*command, "--keys", str(keys))
        assert refused.returncode == 3, (command, refused.stderr)
        assert "no objects" in refused.stderr
    assert "k1" in run("keys", "list", "--keys", str(keys)).stdout.split()
    got = run("get", store, "w.bin", "--keys", str(keys))
    assert got.returncode == 0 and got.stdout == "weights"


def test_a_pack_encrypted_through_the_environment_says_encrypted(tmp_path: Path) -> None:
    """Outside pass: with the key file in DCSTORE_KEYS_FILE (as the README offers), pack
    and pack --text encrypted the data and said "plaintext"."""
    keys = tmp_path / "kek.json"
    assert run("keys", "new", "--keys", str(keys)).returncode == 0
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "corpus.txt").write_text("hello world\n")
    env = {"DCSTORE_KEYS_FILE": str(keys)}
    packs = [
        ("pack", str(tmp_path / "images"), str(tmp_path / "ds"), "-q"),
        ("pack", "--text", str(tmp_path / "corpus.txt"), str(tmp_path / "tok"), "-q"),
    ]
    for command in packs:
        done = run(*command, env=env)
        assert done.returncode == 0, done.stderr
        assert ", encrypted, " in done.stdout and "plaintext" not in done.stdout
        plain = run(*command[:-2], str(tmp_path / f"plain-{command[1]}"), "-q")
        assert ", plaintext, " in plain.stdout
