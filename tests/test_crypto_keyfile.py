"""A shared key file changing under running writers: reload, locked updates, safe retire.

These run the ``dcstore keys`` CLI in real processes against a key file that a
long-lived :class:`EncryptedBackend` in this process keeps using.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dcstore.backends.local import LocalBackend
from dcstore.crypto import EncryptedBackend, FileKeySource, Keyring, parse_header, write_key_file
from dcstore.errors import ConfigError, KeyAccessError

DCSTORE = [sys.executable, "-m", "dcstore.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCSTORE_KEYS")}
    return subprocess.run([*DCSTORE, *args], capture_output=True, text=True, check=False, env=env)


def key_id_of(root: Path, key: str) -> str:
    return parse_header((root / key).read_bytes(), key).key_id


def test_long_lived_writer_follows_new_and_retire(tmp_path: Path) -> None:
    """Once reproduced data loss: a writer that loaded the keyring once kept wrapping
    under k1 after ``keys new`` + ``rotate`` + ``retire k1``; nobody could read those objects."""
    keys, root = tmp_path / "kek.json", tmp_path / "store"
    assert cli("keys", "new", "--keys", str(keys), "--id", "k1").returncode == 0
    writer = EncryptedBackend(LocalBackend(root), f"file://{keys}", segment_size=1024)
    writer.put("a/0", b"before" * 500)

    assert cli("keys", "new", "--keys", str(keys), "--id", "k2").returncode == 0
    assert cli("keys", "rotate", str(root), "--keys", str(keys)).returncode == 0
    retired = cli("keys", "retire", "k1", str(root), "--keys", str(keys), "--min-age", "0")
    assert retired.returncode == 0, retired.stderr

    writer.put("a/1", b"after" * 500)  # the same process, no explicit reload
    assert key_id_of(root, "a/1") == "k2"
    got = cli("get", str(root), "a/1", "--keys", str(keys))
    assert got.returncode == 0 and got.stdout == "after" * 500


def test_retire_checks_the_whole_store_and_waits_min_age(tmp_path: Path) -> None:
    keys, root = tmp_path / "kek.json", tmp_path / "store"
    assert cli("keys", "new", "--keys", str(keys), "--id", "k1").returncode == 0
    writer = EncryptedBackend(LocalBackend(root), f"file://{keys}", segment_size=1024)
    for name in ("p/0", "q/0", "q/1"):
        writer.put(name, name.encode())
    assert cli("keys", "new", "--keys", str(keys), "--id", "k2").returncode == 0
    assert cli("keys", "rotate", str(root), "--prefix", "p/", "--keys", str(keys)).returncode == 0

    prefixed = cli("keys", "retire", "k1", str(root), "--keys", str(keys), "--prefix", "p/")
    assert prefixed.returncode == 2 and "drop --prefix" in prefixed.stderr
    young = cli("keys", "retire", "k1", str(root), "--keys", str(keys))
    assert young.returncode == 2 and "stopped being primary" in young.stderr
    used = cli("keys", "retire", "k1", str(root), "--keys", str(keys), "--min-age", "0")
    assert used.returncode == 2
    assert used.stderr.strip().splitlines() == [
        f"dcstore: error: key 'k1' still wraps 2 object(s) in file://{root}; "
        "run 'dcstore keys rotate' first"
    ]
    assert "k1" in FileKeySource(keys).load()  # nothing destroyed
    assert writer.get("q/1") == b"q/1"


def test_retire_age_comes_from_the_key_file(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from dcstore.crypto.rotation import check_demoted_long_enough

    ring = Keyring.generate("k1").with_new_key("k2")
    since = ring.demoted_at("k1")
    assert since is not None and ring.demoted_at("k2") is None
    doc = ring.to_document()
    assert [e.get("demoted") for e in doc["keys"]] == [since.isoformat(timespec="seconds"), None]
    with pytest.raises(ConfigError, match="stopped being primary 0 s ago"):
        check_demoted_long_enough(ring, "k1", 60)
    check_demoted_long_enough(ring, "k1", 0)

    old = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat(timespec="seconds")
    for entry in doc["keys"]:
        entry.pop("demoted", None)  # a file written before "demoted" existed
    doc["updated"] = old
    legacy = Keyring.from_document(json.dumps(doc), "doc")
    check_demoted_long_enough(legacy, "k1", 3600)  # "updated" bounds the demotion time
    doc["updated"] = "not a time"
    with pytest.raises(ConfigError, match="unknown time"):
        check_demoted_long_enough(Keyring.from_document(json.dumps(doc), "doc"), "k1", 1)
    assert legacy.with_primary("k1").demoted_at("k1") is None


def test_concurrent_keys_new_lose_no_key(tmp_path: Path) -> None:
    keys = tmp_path / "kek.json"
    ids = [f"k{i}" for i in range(8)]
    with ThreadPoolExecutor(len(ids)) as pool:
        results = list(pool.map(lambda i: cli("keys", "new", "--keys", str(keys), "--id", i), ids))
    assert [r.returncode for r in results] == [0] * len(ids), [r.stderr for r in results]
    keyring = FileKeySource(keys).load()
    assert keyring.ids == sorted(ids)
    assert sorted(r.stderr.split()[0] for r in results).count("created") == 1
    assert (keys.stat().st_mode & 0o777, Path(f"{keys}.lock").stat().st_mode & 0o777) == (
        0o600,
        0o600,
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".kek-")] == []


def test_failed_update_leaves_the_file_alone(tmp_path: Path) -> None:
    source = FileKeySource(tmp_path / "kek.json")
    source.save(Keyring.generate("k1"))
    before, version = source.path.read_bytes(), source.version()

    def refuse(current: Keyring | None) -> Keyring:
        raise ConfigError("no")

    with pytest.raises(ConfigError):
        source.update(refuse)
    assert source.path.read_bytes() == before and source.version() == version
    source.update(lambda current: current.with_new_key("k2"))  # type: ignore[union-attr]
    assert source.version() != version


def test_reader_meets_a_newer_key_and_reloads_once(tmp_path: Path) -> None:
    keys, root = tmp_path / "kek.json", tmp_path / "store"
    write_key_file(keys, Keyring.generate("k1"))
    reader = EncryptedBackend(LocalBackend(root), f"file://{keys}", segment_size=1024)
    assert reader.keyring.ids == ["k1"]
    assert cli("keys", "new", "--keys", str(keys), "--id", "k2").returncode == 0
    src = tmp_path / "x"
    src.write_bytes(b"x" * 5000)
    assert cli("put", str(root), "x", str(src), "--keys", str(keys)).returncode == 0
    assert reader.get("x") == b"x" * 5000  # k2 was unknown to the loaded keyring
    assert reader.keyring.ids == ["k1", "k2"]

    other = tmp_path / "other.json"
    write_key_file(other, Keyring.generate("k3"))
    stranger = EncryptedBackend(LocalBackend(root), f"file://{other}")
    with pytest.raises(KeyAccessError, match="not in the keys of") as info:
        stranger.get("x")
    assert f"file://{other}" in str(info.value) and "they hold: k3" in str(info.value)


def test_a_key_files_contents_given_as_its_path_are_never_echoed(tmp_path: Path) -> None:
    """``--keys "$(cat kek.json)"`` printed the key twice in a 'does not exist' error."""
    from dcstore.crypto import open_key_source

    path = tmp_path / "kek.json"
    write_key_file(path, Keyring.generate("k"))
    contents = path.read_text()
    secret = json.loads(contents)["keys"][0]["key"]
    for given in (contents, contents.replace("\n", " "), " " + contents):
        with pytest.raises(ConfigError, match="looks like a key file's contents") as err:
            open_key_source(given)
        assert secret not in str(err.value)
    cli = subprocess.run(
        [sys.executable, "-m", "dcstore.cli", "ls", "--keys", contents, str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 2 and secret not in cli.stdout + cli.stderr


def test_a_key_given_where_its_file_belongs_is_never_echoed(tmp_path: Path) -> None:
    """``DCSTORE_KEYS_FILE="$(cat kek.json)"`` printed the whole key file in its error
    (only ``--keys`` was checked), and ``keys new`` made files named after the key;
    ``--keys <raw base64 key>`` showed the key as a path that does not exist."""
    import base64

    path = tmp_path / "kek.json"
    write_key_file(path, Keyring.generate("k"))
    contents = path.read_text()
    secret = json.loads(contents)["keys"][0]["key"]
    raw = base64.b64encode(os.urandom(32)).decode()
    cases = [
        ({"DCSTORE_KEYS_FILE": contents}, ["ls", str(tmp_path / "s")], secret),
        ({"DCSTORE_KEYS_FILE": contents}, ["keys", "new"], secret),
        ({"DCSTORE_KEYS_FILE": raw}, ["keys", "new"], raw),
        ({}, ["ls", str(tmp_path / "s"), "--keys", raw], raw),
        ({}, ["ls", str(tmp_path / "s"), "--keys", os.urandom(32).hex()], None),
    ]
    for env, args, hidden in cases:
        cli = subprocess.run(
            [sys.executable, "-m", "dcstore.cli", *args], capture_output=True, text=True,
            timeout=60, cwd=tmp_path, env={**os.environ, **env},
        )  # fmt: skip
        assert cli.returncode == 2, (args, cli.stderr)
        assert "looks like a" in cli.stderr
        if hidden is not None:
            assert hidden not in cli.stdout + cli.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]  # no file named after a key
    (tmp_path / "kkkk/mlml/prod").mkdir(parents=True)
    path = "kkkk/mlml/prod/abcdefg"  # 22 base64 characters, as a 16-byte key is: a path
    done = subprocess.run(
        [sys.executable, "-m", "dcstore.cli", "keys", "new", "--keys", path],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0 and (tmp_path / path).exists(), done.stderr


def raw_keys_in_other_encodings() -> list[str]:
    """AES keys as people paste them, in the encodings the first check missed."""
    import base64
    import secrets

    return [
        secrets.token_urlsafe(32),  # URL-safe base64, no padding
        secrets.token_urlsafe(16),
        base64.urlsafe_b64encode(os.urandom(32)).decode(),  # with padding
        next(k for k in iter(lambda: secrets.token_urlsafe(32), "") if "-" in k and "_" in k),
        base64.b32encode(os.urandom(32)).decode(),
        base64.b32encode(os.urandom(16)).decode().rstrip("="),
        base64.b32encode(os.urandom(24)).decode().lower(),
    ]


def test_a_url_safe_or_base32_key_given_as_the_path_is_never_echoed(tmp_path: Path) -> None:
    """Outside review: a raw key in URL-safe base64 (``secrets.token_urlsafe(32)``) or
    base32 given as ``--keys``, DCSTORE_KEYS_FILE or ``keys=`` was taken for a path and
    shown in the "key file ... does not exist" error and in the source's repr."""
    from dcstore.crypto import open_key_source

    store = tmp_path / "s"
    EncryptedBackend(LocalBackend(store), Keyring.generate("k")).put("a", b"x")
    for raw in raw_keys_in_other_encodings():
        for spec in (raw, " " + raw):
            with pytest.raises(ConfigError, match="looks like a raw key") as err:
                open_key_source(spec)
            assert raw not in str(err.value)
        with pytest.raises(ConfigError, match="looks like a raw key") as err:
            EncryptedBackend(LocalBackend(store), raw)
        assert raw not in str(err.value)
        with pytest.raises(ConfigError, match="looks like a raw key") as err:
            FileKeySource(raw)  # so no repr shows it either
        assert raw not in str(err.value)
        for env, args in (
            ({}, ["ls", str(store), f"--keys={raw}"]),
            ({"DCSTORE_KEYS_FILE": raw}, ["ls", str(store)]),
            ({"DCSTORE_KEYS_FILE": raw}, ["keys", "new"]),
        ):
            done = subprocess.run(
                [sys.executable, "-m", "dcstore", *args], capture_output=True, text=True,
                timeout=60, cwd=tmp_path, env={**os.environ, **env},
            )  # fmt: skip
            assert done.returncode == 2, (args, done.stderr)
            assert "looks like a raw key" in done.stderr, done.stderr
            assert raw not in done.stdout + done.stderr
            assert raw.strip("=") not in done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no file named after a key


def test_a_raw_key_in_a_path_like_spelling_is_never_echoed() -> None:
    """Review: a key behind ./ or ~/, in quotes (docker --env-file keeps them), with 0x,
    or a base64 key starting with / (its folder, /, exists) was still taken for a path
    and shown in the error and the repr."""
    import base64
    import secrets

    from dcstore.crypto import open_key_source

    for _ in range(300):
        raw = os.urandom(32)
        token = secrets.token_urlsafe(32)
        slashed = "/" + base64.b64encode(raw).decode()[1:]  # 44 characters, one "/"
        for spec, secret in (
            (f"./{token}", token), (f"~/{token}", token), (f'"{token}"', token),
            (f"0x{raw.hex()}", raw.hex()), (slashed, slashed[1:20]),
        ):  # fmt: skip
            try:
                shown = repr(open_key_source(spec))
            except ConfigError as exc:
                shown = str(exc)
            assert secret[:20] not in shown, spec


def test_file_names_in_those_alphabets_are_still_paths(tmp_path: Path) -> None:
    """Names made of URL-safe base64 or base32 characters that no encoder writes for
    a key stay key file paths, created and shown as before."""
    names = ("my_model-keys", "production_cluster_key", "kek-2026-11-28-primary", "kek_v2")
    for name in names:
        done = cli("keys", "new", "--keys", str(tmp_path / name))
        assert done.returncode == 0, (name, done.stderr)
        missing = FileKeySource(name + "-missing")
        with pytest.raises(ConfigError, match="does not exist"):
            missing.load()
        assert name + "-missing" in repr(missing)


def test_a_fifo_in_the_key_files_place_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "kek.json"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        FileKeySource(fifo).load()


def test_descriptive_file_names_are_not_taken_for_keys() -> None:
    """Review: any 22- or 32-character name of letters and digits (or a hash) was taken
    for a raw key wherever it was, so keys new refused it."""
    from dcstore.crypto import open_key_source

    for name in (
        "prodkek2026primarykeys", "datasetmasterkey2026v1", "productiondatasetmasterkey",
        "/srv/keys/kek-d41d8cd98f00b204", "kek.json", "0x1234.json",
    ):  # fmt: skip
        assert isinstance(open_key_source(name), FileKeySource), name
