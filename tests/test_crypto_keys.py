"""Keyring and key sources: no key in pickles, reprs or errors; key file permissions."""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import threading
import uuid
from pathlib import Path

import pytest

from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import (
    EncryptedBackend,
    EnvKeySource,
    FileKeySource,
    Keyring,
    StaticKeySource,
    open_key_source,
    write_key_file,
)
from dcstore.crypto.keyring import KEK_SIZE
from dcstore.errors import ConfigError, KeyAccessError


def materials(keyring: Keyring) -> list[str]:
    """Every textual form a key could leak in."""
    out = []
    for entry in keyring.to_document()["keys"]:
        if "key" in entry:
            raw = base64.b64decode(entry["key"])
            out += [entry["key"], raw.hex(), repr(raw)[2:-1]]
    return out


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "kek.json"
    write_key_file(path, Keyring.generate("k1").with_new_key("k2"))
    return path


def test_key_file_round_trip_and_mode(key_file: Path) -> None:
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    keyring = FileKeySource(key_file).load()
    assert keyring.primary == "k2" and keyring.ids == ["k1", "k2"]
    assert open_key_source(f"file://{key_file}").load().ids == ["k1", "k2"]
    assert open_key_source(str(key_file)).load().primary == "k2"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o602])
def test_key_file_readable_by_others_is_refused(key_file: Path, mode: int) -> None:
    os.chmod(key_file, mode)
    with pytest.raises(KeyAccessError, match="chmod 600"):
        FileKeySource(key_file).load()


OTHER_UID = 65534  # nobody: "another local user"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_key_file_owned_by_another_user_is_refused(key_file: Path) -> None:
    """Outside review: only the mode bits were checked, so a 0600 key file owned by
    another user (who may replace it at will) was loaded, by root among others."""
    os.chown(key_file, OTHER_UID, -1)
    with pytest.raises(KeyAccessError, match=f"owned by uid {OTHER_UID}") as info:
        FileKeySource(key_file).load()
    assert str(key_file) in str(info.value) and "chown" in str(info.value)
    os.chown(key_file, 0, -1)  # root-provisioned secrets are accepted
    assert FileKeySource(key_file).load().primary == "k2"


def test_key_file_in_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    """Outside review: in a folder group or others may write (no sticky bit) another
    user can rename a file of their own over the key file; it was loaded."""
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "kek.json"
    write_key_file(path, Keyring.generate("k1"))
    os.chown(folder, -1, 65534)  # a group of others (nogroup), not the owner's own
    for mode in (0o777, 0o770, 0o757, 0o2777):
        os.chmod(folder, mode)
        with pytest.raises(KeyAccessError, match="which group or others may write") as info:
            FileKeySource(path).load()
        assert str(folder) in str(info.value) and "chmod go-w" in str(info.value)
        with pytest.raises(KeyAccessError, match="which group or others may write"):
            FileKeySource(folder / "new.json").update(lambda _: Keyring.generate("k9"))
        assert not (folder / "new.json").exists()
    # through a symlinked folder (a Kubernetes Secret volume's ..data): the real folder
    link = tmp_path / "via"
    link.symlink_to(folder)
    with pytest.raises(KeyAccessError, match="which group or others may write"):
        FileKeySource(link / "kek.json").load()  # the link's target, 2777
    for mode in (0o1777, 0o1770, 0o755, 0o700):  # a sticky folder (like /tmp), or a private one
        os.chmod(folder, mode)
        assert FileKeySource(path).load().primary == "k1"
        assert FileKeySource(link / "kek.json").load().primary == "k1"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_key_file_under_a_folder_others_may_rename_is_refused(tmp_path: Path) -> None:
    """Review: only the key file's own folder was checked, so another user who could
    write a folder above it renamed the key's folder away and linked another in."""
    import grp
    import pwd

    above = tmp_path / "shared"
    path = above / "mine" / "kek.json"
    write_key_file(path, Keyring.generate("k1"))  # makes mine/ 0700
    os.chmod(above, 0o777)
    with pytest.raises(KeyAccessError, match=f"under folder {re.escape(str(above))},"):
        FileKeySource(path).load()
    os.chmod(above, 0o1777)  # sticky: others cannot rename what is not theirs
    assert FileKeySource(path).load().primary == "k1"
    # umask 002 systems: group write by the owner's private group is the owner's own
    own = grp.getgrnam(pwd.getpwuid(os.geteuid()).pw_name).gr_gid
    os.chown(above, -1, own)
    os.chmod(above, 0o775)
    assert FileKeySource(path).load().primary == "k1"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_key_file_in_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    path = folder / "kek.json"
    write_key_file(path, Keyring.generate("k1"))
    os.chown(folder, OTHER_UID, -1)
    with pytest.raises(KeyAccessError, match=f"owned by uid {OTHER_UID}, not by this user"):
        FileKeySource(path).load()
    os.chown(folder, 0, -1)
    assert FileKeySource(path).load().primary == "k1"


def test_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.json does not exist"):
        FileKeySource(tmp_path / "missing.json").load()
    with pytest.raises(ConfigError, match=f"{re.escape(str(tmp_path))} is a directory"):
        FileKeySource(tmp_path).load()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "dcstore-keyring", "version": 1, "primary": "x", "keys": []}')
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError):
        FileKeySource(bad).load()
    secret = base64.b64encode(b"s" * 31).decode()
    bad.write_text(
        json.dumps(
            {
                "format": "dcstore-keyring",
                "version": 1,
                "primary": "a",
                "keys": [{"id": "a", "key": secret}],
            }
        )
    )
    with pytest.raises(ConfigError) as info:
        FileKeySource(bad).load()
    assert secret not in str(info.value)
    link = tmp_path / "link.json"
    link.symlink_to(bad)
    with pytest.raises(KeyAccessError):
        FileKeySource(link).load()
    for spec in ("memory://x", "", "env:DCSTORE_KEYS", 42):
        with pytest.raises(ConfigError):
            open_key_source(spec)  # type: ignore[arg-type]
    # the scheme is named, the rest (it may hold a secret) is not shown
    with pytest.raises(
        ConfigError, match="key sources of scheme 'https' are not supported: give"
    ) as info:
        open_key_source("https://user:hunter2@vault/kek")
    assert "hunter2" not in str(info.value)
    # newcomer: file:/abs (one slash) was "scheme 'file' not supported: give file:///..."
    for spec in ("file:/tmp/x/kek.json", "file://kek.json", "FILE:kek.json"):
        with pytest.raises(ConfigError, match=r"must be file:///absolute/path \(three slashes"):
            open_key_source(spec)


def test_keyring_never_pickles_and_hides_material() -> None:
    keyring = Keyring.generate("k1").with_new_key("k2")
    with pytest.raises(TypeError, match="KeySource"):
        pickle.dumps(keyring)
    with pytest.raises(TypeError):
        pickle.dumps(StaticKeySource(keyring))
    text = repr(keyring) + str(keyring) + repr(StaticKeySource(keyring))
    for secret in materials(keyring):
        assert secret not in text


def test_encrypted_backend_pickles_its_source_not_its_keys(key_file: Path) -> None:
    inner = MemoryBackend(f"pickle-{uuid.uuid4().hex[:8]}")
    enc = EncryptedBackend(inner, f"file://{key_file}", segment_size=1024)
    enc.put("x", b"payload" * 1000)
    keyring = enc.keyring  # loaded in this process
    blob = pickle.dumps(enc)
    for secret in materials(keyring):
        assert secret.encode() not in blob
    raw = [base64.b64decode(e["key"]) for e in keyring.to_document()["keys"] if "key" in e]
    assert all(r not in blob for r in raw)
    clone = pickle.loads(blob)
    assert clone._keyring is None and clone.get("x") == b"payload" * 1000
    text = repr(enc) + str(enc) + enc.url
    assert str(key_file) in repr(enc)
    for secret in materials(keyring):
        assert secret not in text


def test_env_source(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = EnvKeySource("DCSTORE_TEST_KEYS_VAR")
    with pytest.raises(KeyAccessError, match="DCSTORE_TEST_KEYS_VAR"):
        source.load()
    monkeypatch.setenv("DCSTORE_TEST_KEYS_VAR", key_file.read_text())
    assert source.load().primary == "k2"
    clone = pickle.loads(pickle.dumps(source))
    assert clone.load().primary == "k2"
    assert key_file.read_text() not in pickle.dumps(source).decode("latin-1")


def test_keyring_evolution() -> None:
    ring = Keyring.generate("k1")
    assert len(ring.to_document()["keys"]) == 1
    ring2 = ring.with_new_key("k2", primary=False)
    assert ring2.primary == "k1" and ring2.ids == ["k1", "k2"]
    with pytest.raises(ConfigError):
        ring2.with_new_key("k1")
    with pytest.raises(ConfigError, match="primary"):
        ring2.retire("k1")
    ring3 = ring2.with_primary("k2").retire("k1")
    assert ring3.ids == ["k2"] and ring3.retired == {"k1"}
    with pytest.raises(ConfigError):
        ring3.with_new_key("k1")  # a retired id is never reused
    doc = ring3.to_document()
    assert {"id": "k1", "retired": True} in doc["keys"]
    again = Keyring.from_document(json.dumps(doc), "doc")
    assert again.retired == {"k1"} and again.primary == "k2"
    with pytest.raises(ConfigError):
        Keyring({"k": b"short"}, "k")
    with pytest.raises(ValueError):
        Keyring({"bad id!": os.urandom(KEK_SIZE)}, "bad id!")


def test_two_threads_share_one_backend() -> None:
    """Decryption releases the GIL; the backend is thread-safe."""
    enc = EncryptedBackend(MemoryBackend(f"threads-{uuid.uuid4().hex[:8]}"), Keyring.generate())
    data = os.urandom(3 << 20)
    enc.put("t", data)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                assert enc.get("t") == data
                assert enc.get_range("t", 1000, 2 << 20) == data[1000 : 2 << 20]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_segment_size_and_threads_options() -> None:
    with pytest.raises(ConfigError):
        EncryptedBackend(MemoryBackend("x"), Keyring.generate(), segment_size=8)
    with pytest.raises(ConfigError):
        EncryptedBackend(MemoryBackend("x"), Keyring.generate(), threads=0)
    inner = MemoryBackend(f"par-{uuid.uuid4().hex[:8]}")
    enc = EncryptedBackend(inner, Keyring.generate(), segment_size=4096, threads=2)
    data = os.urandom(100_000)
    enc.put("p", data)
    assert enc.get("p") == data and enc.get_range("p", 5, 90_000) == data[5:90_000]
    enc.close()


def test_a_new_key_files_folder_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """A folder made for a new key file followed the umask (0775 under umask 002), so
    the key file written there was refused by the next load: it is made mode 0700."""
    old = os.umask(0o002)
    try:
        FileKeySource(tmp_path / "made" / "kek.json").save(Keyring.generate("k1"))
        write_key_file(tmp_path / "also" / "kek.json", Keyring.generate("k1"))
    finally:
        os.umask(old)
    for folder in ("made", "also"):
        assert (tmp_path / folder).stat().st_mode & 0o777 == 0o700
        assert FileKeySource(tmp_path / folder / "kek.json").load().primary == "k1"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_keys_new_and_symbolic_links_meet_the_folder_check(tmp_path: Path) -> None:
    """Review: keys new under a folder others may write (its own folder not made yet)
    wrote a key file every later load refused, and a symbolic link in a folder others
    may write was resolved away, that folder never checked."""
    import pwd
    from unittest import mock

    from dcstore.crypto import sources

    shared = tmp_path / "p"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(KeyAccessError, match=f"under folder {re.escape(str(shared))},"):
        FileKeySource(shared / "new" / "kek.json").update(lambda _: Keyring.generate("k"))
    assert not (shared / "new" / "kek.json").exists()
    private = tmp_path / "private"
    write_key_file(private / "kek.json", Keyring.generate("k1"))
    (shared / "k").symlink_to(private)
    with pytest.raises(KeyAccessError, match=f"under folder {re.escape(str(shared))},"):
        FileKeySource(shared / "k" / "kek.json").load()
    assert FileKeySource(private / "kek.json").load().primary == "k1"
    # a group named after its owner is not private if another user has it as primary
    me = pwd.getpwuid(os.geteuid())
    other = pwd.struct_passwd(("bob", "x", 4242, me.pw_gid, "", "/", "/bin/sh"))
    with mock.patch("pwd.getpwall", return_value=[me, other]):
        assert not sources._private_group(me.pw_uid, me.pw_gid)
    with mock.patch("pwd.getpwall", return_value=[me]):
        assert sources._private_group(me.pw_uid, me.pw_gid) == (
            __import__("grp").getgrgid(me.pw_gid).gr_name == me.pw_name
        )
