"""Public-key (rsa, x25519) key-encryption keys: format v2 headers, public-only key
files for ingest nodes, key files, rotation across key types and the ``keys`` CLI."""

from __future__ import annotations

import functools
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest

from dcstore.backends.local import LocalBackend
from dcstore.backends.memory import MemoryBackend
from dcstore.cli.main import main as cli
from dcstore.crypto import EncryptedBackend, FileKeySource, Keyring, parse_header
from dcstore.crypto.format import MAX_WRAPPED_SIZE, WRAP_HPKE_X25519, WRAP_RSA_OAEP_SHA256
from dcstore.crypto.verify import verify
from dcstore.errors import ConfigError, IntegrityError, KeyAccessError

PUBLIC_TYPES = ("rsa", "x25519")
DATA = bytes(range(256)) * 5


@functools.cache
def keyring_of(key_type: str, key_id: str = "kp") -> Keyring:
    return Keyring.generate(key_id, key_type)


def store(keyring: Keyring, name: str) -> EncryptedBackend:
    return EncryptedBackend(MemoryBackend(name), keyring, segment_size=256)


@pytest.mark.parametrize(
    ("key_type", "wrap_type", "wrapped"),
    [("rsa", WRAP_RSA_OAEP_SHA256, 384), ("x25519", WRAP_HPKE_X25519, 80)],
)
def test_header_is_version_2_with_the_wrapped_length(
    key_type: str, wrap_type: int, wrapped: int
) -> None:
    enc = store(keyring_of(key_type), f"v2-{key_type}")
    enc.put("obj", DATA)
    blob = enc.inner.get("obj")
    header = parse_header(blob, "t")
    assert (blob[4], blob[17], int.from_bytes(blob[18:20], "big")) == (2, wrap_type, wrapped)
    assert header.size == 24 + len("kp") + wrapped
    assert header.wrap_nonce == b"" and len(header.wrapped_dek) == wrapped
    assert enc.get("obj") == DATA and enc.get_range("obj", 300, 700) == DATA[300:700]


def reseal(header: bytearray) -> bytes:
    header[-4:] = zlib.crc32(header[:-4]).to_bytes(4, "big")
    return bytes(header)


@pytest.mark.parametrize("length", [0, MAX_WRAPPED_SIZE + 1, 0xFFFF])
def test_wrapped_length_is_bounded_before_use(length: int) -> None:
    enc = store(keyring_of("x25519"), "bounds")
    enc.put("obj", b"x")
    blob = bytearray(enc.inner.get("obj"))
    blob[18:20] = length.to_bytes(2, "big")
    with pytest.raises(IntegrityError, match="bad wrapped key length"):
        parse_header(bytes(blob), "t")


def test_unknown_wrap_type_and_a_v1_version_byte_are_corrupt() -> None:
    enc = store(keyring_of("rsa"), "types")
    enc.put("obj", b"x")
    blob = enc.inner.get("obj")
    h = parse_header(blob, "t").size
    bad = bytearray(blob[:h])
    bad[17] = 9
    with pytest.raises(IntegrityError, match="unknown wrap type 9"):
        parse_header(reseal(bad) + blob[h:], "t")
    bad = bytearray(blob[:h])
    bad[4] = 1  # read as a v1 header: the CRC sits elsewhere
    with pytest.raises(IntegrityError):
        parse_header(bytes(bad) + blob[h:], "t")


@pytest.mark.parametrize("key_type", PUBLIC_TYPES)
def test_public_only_keyring_writes_but_cannot_read(key_type: str) -> None:
    full = keyring_of(key_type)
    ingest = Keyring.from_document(json.dumps(full.public_only().to_document()), "pub")
    assert not ingest.can_unwrap("kp") and full.can_unwrap("kp")
    writer = store(ingest, f"ingest-{key_type}")
    writer.put("shard.tar", DATA)
    for read in (lambda: writer.get("shard.tar"), lambda: writer.get_range("shard.tar", 0, 9)):
        with pytest.raises(
            KeyAccessError,
            match=r"private half of .* key .kp.; this key file holds only its public half",
        ):
            read()
    assert writer.head("shard.tar").size == len(DATA)  # headers need no key
    assert [c.kind for c in verify(writer)] == ["key"]
    trainer = EncryptedBackend(writer.inner, full)
    assert trainer.get("shard.tar") == DATA


def test_public_only_needs_a_public_key_primary() -> None:
    mixed = keyring_of("rsa").with_new_key("secret")  # an aes primary
    with pytest.raises(ConfigError, match="'secret' is an aes key and has no public half"):
        mixed.public_only()
    exported = mixed.with_primary("kp").public_only()
    assert exported.ids == ["kp"]  # the aes key is never exported


def test_a_key_of_another_type_under_the_header_id_is_a_key_error() -> None:
    enc = store(keyring_of("rsa"), "mismatch")
    enc.put("obj", b"x")
    other = EncryptedBackend(enc.inner, keyring_of("x25519"))
    with pytest.raises(KeyAccessError, match="wrapped for an rsa key, but key 'kp' is an x25519"):
        other.get("obj")
    aes = EncryptedBackend(enc.inner, Keyring.generate("kp"))
    with pytest.raises(KeyAccessError, match="is an aes key"):
        aes.get("obj")


@pytest.mark.parametrize("key_type", PUBLIC_TYPES)
def test_key_file_round_trip_and_no_material_in_repr_pickle_errors(key_type: str) -> None:
    keyring = keyring_of(key_type)
    doc = keyring.to_document()
    entry = doc["keys"][0]
    assert entry["type"] == key_type and {"public", "private"} <= entry.keys()
    loaded = Keyring.from_document(json.dumps(doc), "f")
    enc = store(keyring, f"rt-{key_type}")
    enc.put("o", DATA)
    assert EncryptedBackend(enc.inner, loaded).get("o") == DATA
    text = repr(loaded) + repr(loaded._keys) + repr(enc)
    assert entry["private"] not in text and entry["public"] not in text
    for obj in (loaded, loaded._keys["kp"]):
        with pytest.raises(TypeError, match="never pickle"):
            pickle.dumps(obj)
    broken = json.loads(json.dumps(doc))
    private = broken["keys"][0]["private"]
    broken["keys"][0]["private"] = private[: len(private) // 8 * 4]  # half of it: no key
    with pytest.raises(ConfigError) as info:
        Keyring.from_document(json.dumps(broken), "key file f")
    assert "key file f: key 'kp'" in str(info.value)
    assert entry["private"][:40] not in str(info.value)


def test_mismatched_halves_small_rsa_and_unknown_types_are_refused() -> None:
    rsa_doc = keyring_of("rsa").to_document()
    other = keyring_of("rsa", "other").to_document()
    mixed = json.loads(json.dumps(rsa_doc))
    mixed["keys"][0]["public"] = other["keys"][0]["public"]
    with pytest.raises(ConfigError, match="private half does not match its public half"):
        Keyring.from_document(json.dumps(mixed), "f")
    with pytest.raises(ConfigError, match=r"3072\.\.8192 bits"):
        Keyring.generate("small", "rsa", bits=2048)
    with pytest.raises(ConfigError, match="--bits applies to rsa keys only"):
        Keyring.generate("x", "x25519", bits=4096)
    unknown = json.loads(json.dumps(rsa_doc))
    unknown["keys"][0]["type"] = "dsa"
    with pytest.raises(ConfigError, match="unknown type"):
        Keyring.from_document(json.dumps(unknown), "f")


def test_old_key_files_without_a_type_are_aes() -> None:
    doc = Keyring.generate("old").to_document()
    for entry in doc["keys"]:
        del entry["type"]
    assert Keyring.from_document(json.dumps(doc), "f").key_type("old") == "aes"


def test_rotation_across_key_types_rewraps_headers_only(tmp_path: Path) -> None:
    """aes -> rsa -> x25519 -> aes: each rotation changes the header (and format
    version), never a segment byte."""
    from dcstore.crypto.rotation import rotate

    source = FileKeySource(tmp_path / "kek.json")
    source.save(Keyring.generate("a1"))
    inner = LocalBackend(str(tmp_path / "store"))
    enc = EncryptedBackend(inner, source, segment_size=256)
    enc.put("obj", DATA)
    payload = inner.get("obj")[parse_header(inner.get("obj"), "t").size :]
    for new_id, key_type, version in (("r1", "rsa", 2), ("x1", "x25519", 2), ("a2", "aes", 1)):
        source.update(lambda current, i=new_id, t=key_type: current.with_new_key(i, key_type=t))
        results = list(rotate(enc))
        assert [(r.status, r.new_key_id) for r in results] == [("rewrapped", new_id)]
        blob = inner.get("obj")
        header = parse_header(blob, "t")
        assert (blob[4], header.key_id) == (version, new_id)
        assert blob[header.size :] == payload
        assert enc.get("obj") == DATA


def keys_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ingest_node_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys new --type rsa, export-public, put with the public file, get only with the
    private one; list/status show types; rotate to aes and back."""
    kek, pub, url = tmp_path / "kek.json", tmp_path / "pub.json", str(tmp_path / "store")
    assert keys_cli("keys", "new", "--keys", str(kek), "--id", "a1", capsys=capsys)[0] == 0
    code, out, err = keys_cli(
        "keys", "new", "--keys", str(kek), "--type", "rsa", "--id", "r1", capsys=capsys
    )
    assert (code, out.strip()) == (0, "r1") and "added rsa key r1 (primary)" in err
    assert (
        keys_cli("keys", "export-public", "--keys", str(kek), "-o", str(pub), capsys=capsys)[0] == 0
    )
    assert pub.stat().st_mode & 0o777 == 0o600
    exported = json.loads(pub.read_text())
    assert [(e["id"], sorted(e)) for e in exported["keys"]] == [("r1", ["id", "public", "type"])]
    code, _, err = keys_cli(
        "keys", "export-public", "--keys", str(kek), "-o", str(pub), capsys=capsys
    )
    assert code == 2 and "--force" in err
    # a key added to the public file would be one no reader has: refused, file unchanged
    before = pub.read_bytes()
    code, _, err = keys_cli("keys", "new", "--keys", str(pub), capsys=capsys)
    assert code == 2 and "holds only public halves (written by keys export-public)" in err
    assert pub.read_bytes() == before

    (tmp_path / "shard.tar").write_bytes(DATA)
    assert (
        keys_cli(
            "put", url, "s.tar", str(tmp_path / "shard.tar"), "--keys", str(pub), capsys=capsys
        )[0]
        == 0
    )
    code, _, err = keys_cli(
        "get", url, "s.tar", "--keys", str(pub), "-o", str(tmp_path / "o1"), capsys=capsys
    )
    assert code == 4 and "private half of rsa key 'r1'" in err and not (tmp_path / "o1").exists()
    code, _, _ = keys_cli(
        "get", url, "s.tar", "--keys", str(kek), "-o", str(tmp_path / "o2"), capsys=capsys
    )
    assert code == 0 and (tmp_path / "o2").read_bytes() == DATA

    code, out, _ = keys_cli("keys", "list", "--keys", str(pub), capsys=capsys)
    assert out.split() == ["primary", "rsa", "(public)", "r1"]
    code, out, _ = keys_cli("keys", "status", url, "--keys", str(kek), "--json", capsys=capsys)
    rows = {r["id"]: r for r in json.loads(out)["keys"]}
    assert rows["r1"]["type"] == "rsa" and rows["r1"]["objects"] == 1
    assert rows["a1"]["type"] == "aes" and rows["a1"]["objects"] == 0

    code, out, _ = keys_cli("keys", "rotate", url, "--keys", str(pub), capsys=capsys)
    assert code == 0 and "0 failed" in out  # already under the primary: nothing to unwrap
    assert keys_cli("keys", "new", "--keys", str(kek), "--id", "a2", capsys=capsys)[0] == 0
    code, out, err = keys_cli("keys", "rotate", url, "--keys", str(kek), capsys=capsys)
    assert code == 0 and "1 rewrapped" in out
    code, out, _ = keys_cli("keys", "status", url, "--keys", str(kek), "--json", capsys=capsys)
    assert {r["id"]: r["objects"] for r in json.loads(out)["keys"]} == {"a1": 0, "a2": 1, "r1": 0}
    assert kek.read_text().count('"private"') == 1
    for secret in json.loads(kek.read_text())["keys"]:
        assert all(secret.get(f, "-")[:32] not in out + err for f in ("key", "private"))


def test_public_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    pub = tmp_path / "pub.json"
    FileKeySource(pub).save(keyring_of("x25519").public_only())
    os.chmod(pub, 0o644)
    with pytest.raises(KeyAccessError, match="accessible by group or others"):
        FileKeySource(pub).load()


def test_rsa_key_with_damaged_crt_coefficient_still_unwraps_correctly() -> None:
    """Key files load without OpenSSL's full RSA check; a damaged CRT parameter (here
    the low bytes of qInv, the last DER field) must not give wrong results: OpenSSL
    verifies each CRT result and recomputes it with d."""
    import base64

    keyring = keyring_of("rsa")
    enc = store(keyring, "crt")
    enc.put("obj", DATA)
    doc = keyring.to_document()
    der = base64.b64decode(doc["keys"][0]["private"])
    doc["keys"][0]["private"] = base64.b64encode(der[:-6] + bytes(6)).decode()
    damaged = Keyring.from_document(json.dumps(doc), "f")
    assert EncryptedBackend(enc.inner, damaged).get("obj") == DATA


@pytest.mark.parametrize("text", [False, True])
def test_an_ingest_node_packs_a_store_once_as_the_readme_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bool
) -> None:
    """A second pack with the public half must read the manifest there: refused, nothing
    written; the README's public-key section says so and what to do instead."""
    kek, pub, url = tmp_path / "kek.json", tmp_path / "pub.json", str(tmp_path / "store")
    keys_cli("keys", "new", "--keys", str(kek), "--type", "rsa", capsys=capsys)
    keys_cli("keys", "export-public", "--keys", str(kek), "-o", str(pub), capsys=capsys)
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "1.txt").write_text("one document")
    source = ["--text", str(tmp_path / "src")] if text else [str(tmp_path / "src")]
    pack = ("pack", *source, url, "--keys", str(pub), "-q")
    assert keys_cli(*pack, capsys=capsys)[0] == 0
    before = sorted(p.name for p in (tmp_path / "store").rglob("*"))
    code, _, err = keys_cli(*pack, capsys=capsys)
    assert code == 4 and "cannot be read with these keys" in err and "private half" in err
    assert sorted(p.name for p in (tmp_path / "store").rglob("*")) == before
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    assert "An ingest node can pack a store only once." in readme
    assert "have each ingest run pack into a new store" in readme
