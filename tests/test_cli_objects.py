"""The dcstore CLI object commands, run as a user would: exit codes and one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
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
    assert b"encrypted" not in run("stat", store, "data/in.bin").stdout
    out = tmp_path / "out.bin"
    assert run("get", store, "data/in.bin", "-o", str(out)).returncode == 0
    assert out.read_bytes() == src.read_bytes()
    (tmp_path / "into").mkdir()
    assert run("get", store, "data/in.bin", "-o", str(tmp_path / "into")).returncode == 0
    assert (tmp_path / "into" / "in.bin").read_bytes() == src.read_bytes()  # as cp does
    assert run("get", store, "data/stdin.txt").stdout == b"hello"
    copied = run("cp", "-r", store, "memory://cli", "data/", "--json")
    assert json.loads(copied.stdout) == {"objects": 2, "bytes": (6 << 20) + 5}
    assert run("rm", store, "data/stdin.txt", "data/stdin.txt").returncode == 0
    assert run("ls", store).stdout.decode().split()[-1] == "data/in.bin"


def test_get_leaves_permissions_as_cp_does(tmp_path) -> None:
    """A new file: 0644 less the umask (not mkstemp's 0600); a file that was there keeps
    its mode when replaced."""
    store = str(tmp_path / "store")
    assert run("put", store, "k", "-", input=b"data").returncode == 0
    umask = os.umask(0o022)
    os.umask(umask)
    new = tmp_path / "new.bin"
    assert run("get", store, "k", "-o", str(new)).returncode == 0
    assert new.stat().st_mode & 0o777 == 0o644 & ~umask
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    assert run("get", store, "k", "-o", str(kept)).returncode == 0
    assert kept.read_bytes() == b"data" and kept.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.bin", "new.bin", "store"]


def test_get_writes_its_temporary_file_for_its_owner_only(tmp_path) -> None:
    """The temporary file of `get -o` was 0644 while decrypted data went into it, and a
    get killed with SIGKILL left it readable by everyone."""
    from dcstore.localfile import write_file_atomically

    seen: list[int] = []

    def chunks():
        yield b"part one "
        (tmp,) = tmp_path.glob(".dcstore-get-*")
        seen.append(tmp.stat().st_mode & 0o777)
        yield b"part two"

    write_file_atomically(str(tmp_path / "out"), chunks())
    umask = os.umask(0o022)
    os.umask(umask)
    assert seen == [0o600] and (tmp_path / "out").read_bytes() == b"part one part two"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o644 & ~umask


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["ls", "gopher://x/y"], 2, "unknown storage scheme 'gopher'"),
        (["get", "{store}", "missing"], 3, "no such object"),
        (["put", "{store}", "../escape", "{file}"], 2, "path traversal"),
        (["ls", "{store}", "--opt", "nope=1"], 2, "unknown option(s) nope"),
        (["get", "{store}", "/abs"], 2, "absolute"),
        (["put", "{store}", "k", "{missing_file}"], 3, "No such file"),
        (["get", "{store}", "a/1", "-o", "{missing_dir}/out"], 3, "directory does not exist"),
        (["get", "{store}", "a/1", "-o", "{missing_dir}/"], 3, "directory does not exist"),
        (["put", "{store}", "k", "{dir}"], 2, "is a directory"),
        (["ls", "{missing_dir}"], 3, "no objects (no such store"),
        (["ls", "{store}", "nothing/"], 3, "no objects under prefix 'nothing/'"),
        (["rm", "{store}", "a"], 2, "use rm -r"),
        (["rm", "{store}", "a/"], 2, "use rm -r"),  # as ls lists it: 'empty path segment'
        (["rm", "{store}", "a/1", "missing"], 3, "no such object"),
        (["rm", "-r", "{store}", "zzz"], 3, "no objects under prefix 'zzz'"),
        (["cp", "{store}/a", "{dir}/x"], 2, "use cp -r"),
        (["cp", "{store}", "{dir}/x"], 2, "use cp -r"),
        (["cp", "{store}/nope", "{dir}/x"], 3, "no such object"),
        (["cp", "-r", "{store}", "{dir}/copy", "zzz"], 3, "no objects under prefix 'zzz'"),
        (["cp", "{store}", "{dir}/copy", "a/"], 2, "add -r"),
        (["cp", "memory://", "{dir}/x"], 2, "names a store, not an object"),
        (["cp", "-r", "{store}", "{store}", "a/"], 2, "rewritten onto itself"),  # was: exit 0
        (["cp", "-r", "{store}", "{store}/"], 2, "rewritten onto itself"),
        (["cp", "{store}/a/1", "{store}/a/"], 2, "rewritten onto itself"),
        (["cp", "-r", "{store}", "{store}/inner"], 2, "is inside the source"),  # was: exit 0
        (["cp", "-r", "{store}", "{store}/../s/a/in", "a/"], 2, "is inside the source"),
        (["cp", "-r", "{store}", "file://{store}/inner"], 2, "is inside the source"),
        (["put", "{store}", "k", "{file}", "--keys", "{dir}"], 2, "is a directory"),
        (["put", "{store}", "k", "{file}", "--keys", "{missing_file}"], 2, "does not exist"),
    ],
)
def test_errors_are_one_line(tmp_path, args, code, message) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    for key in ("a/1", "a/2"):
        (tmp_path / "s" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "s" / key).write_bytes(b"kept")
    fill = {
        "store": str(tmp_path / "s"),
        "file": str(tmp_path / "f"),
        "dir": str(tmp_path / "d"),
        "missing_file": str(tmp_path / "nofile"),
        "missing_dir": str(tmp_path / "nodir"),
    }
    done = run(*[a.format(**fill) for a in args])
    err = done.stderr.decode()
    assert done.returncode == code, err
    assert message in err
    assert err.startswith("dcstore: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "s" / "a").iterdir()) == ["1", "2"]  # kept


def test_cp_into_a_store_inside_the_source_is_refused_and_others_are_not(tmp_path) -> None:
    """Newcomer: cp -r ./backup ./backup/inner copied the source into itself (each rerun
    nested a level deeper); a sibling whose name starts alike, a prefix the copies are not
    under and flat stores are copies like any other."""
    from dcstore.cli.main import main

    for key in ("a/1", "data/2"):
        (tmp_path / "s" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "s" / key).write_bytes(b"kept")
    (tmp_path / "link").symlink_to(tmp_path / "s")
    store = str(tmp_path / "s")
    assert main(["cp", "-r", store, f"{store}/inner"]) == 2
    assert main(["cp", "-r", str(tmp_path / "link"), f"{store}/inner"]) == 2
    assert main(["cp", "-r", store, f"{store}/inner", "in"]) == 2  # inner/in... is under "in"
    assert not (tmp_path / "s" / "inner").exists()
    assert main(["cp", "-r", store, f"{store}/inner", "data/"]) == 0  # inner/data/: not nested
    assert main(["cp", "-r", store, f"{store}2"]) == 0  # a sibling, not inside
    assert main(["cp", "-r", f"{store}/inner", store]) == 0  # the other way round
    assert main(["cp", "-r", store, "memory://cpin"]) == 0
    assert main(["cp", "-r", "memory://cpin", "memory://cpin/inner"]) == 0  # flat names
    assert sorted(str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*2")) == [
        "data/2", "inner/data/2"
    ]  # fmt: skip


def test_cp_reads_a_local_store_s_path_as_given(tmp_path) -> None:
    """Review: the nesting check parsed the store's URL again, so a directory named
    'd?a=1&a=2' failed ("URL option 'a' is given more than once"), 'a#b' was taken for
    'a' (a sibling refused as inside it), and the same directory through a symbolic link
    was copied onto itself."""
    from dcstore.cli.main import main

    for name in ("d?a=1&a=2", "a#b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "z").write_bytes(b"z")
    (tmp_path / "a" / "c").mkdir(parents=True)
    assert main(["cp", "-r", str(tmp_path / "d?a=1&a=2"), str(tmp_path / "out")]) == 0
    assert main(["cp", "-r", str(tmp_path / "a#b"), str(tmp_path / "a" / "c")]) == 0
    assert (tmp_path / "out" / "z").read_bytes() == (tmp_path / "a" / "c" / "z").read_bytes()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    assert main(["cp", "-r", str(tmp_path / "out"), str(tmp_path / "link")]) == 2


def test_the_nesting_check_reads_hdfs_roots_as_slash() -> None:
    """Review: hdfs://nn (no path) normalised to '.', so hdfs://nn/inner was not seen
    inside it, and hdfs://nn//backup not as hdfs://nn/backup."""
    from dcstore.cli.copy import _store_path
    from dcstore.store import open_backend

    assert _store_path(open_backend("hdfs://127.0.0.1:9")) == ("hdfs", "127.0.0.1:9", "/")
    assert _store_path(open_backend("hdfs://127.0.0.1:9//b/")) == ("hdfs", "127.0.0.1:9", "/b")


def test_debug_shows_traceback(tmp_path) -> None:
    """With --debug the traceback comes first, then the same line and exit code as without
    (the exit code was 1 whatever the error)."""
    done = run("--debug", "get", str(tmp_path), "missing")
    plain = run("get", str(tmp_path), "missing")
    assert plain.returncode == 3 and done.returncode == plain.returncode
    assert b"Traceback" in done.stderr and done.stderr.endswith(plain.stderr)


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


def test_a_plaintext_object_read_with_keys_says_to_read_it_without(tmp_path) -> None:
    kek = tmp_path / "kek.json"
    assert run("keys", "new", "--keys", str(kek)).returncode == 0
    store = str(tmp_path / "plain")
    for name, data in (("short", b"hello\n"), ("long", b"x" * 100)):
        assert run("put", store, name, "-", input=data).returncode == 0
        got = run("get", store, name, "--keys", str(kek))
        assert got.returncode == 6 and got.stdout == b""
        assert (
            got.stderr.decode()
            .strip()
            .endswith("written without keys (plaintext: open the store without keys to read it)")
        )


def test_ls_lists_around_a_damaged_header(tmp_path) -> None:
    kek = tmp_path / "kek.json"
    assert run("keys", "new", "--keys", str(kek)).returncode == 0
    store = str(tmp_path / "enc")
    for name in ("a", "b", "c"):
        assert run("put", store, name, "-", "--keys", str(kek), input=b"x" * 100).returncode == 0
    with open(tmp_path / "enc" / "b", "r+b") as f:
        f.write(b"XXXX")  # bad magic
    for extra in ([], ["--json"]):
        listed = run("ls", store, "--keys", str(kek), *extra)
        assert listed.returncode == 6
        errors = listed.stderr.decode().strip().splitlines()
        assert errors == [
            f"dcstore: error: file://{store}: object 'b': not a dcstore "
            "encrypted object (bad magic): damaged, or written without keys (plaintext: "
            "open the store without keys to read it)"
        ]
        out = listed.stdout.decode()
        if extra:
            keys = [m["key"] for m in json.loads(out)]
        else:
            keys = [line.split()[-1] for line in out.splitlines()]
        assert keys == ["a", "c"]


def test_cp_takes_question_marks_and_hashes_in_local_paths(tmp_path, monkeypatch) -> None:
    """Only a URL has a query: cp ./a "./out/q?x#y" wrote out?x#y/q, and a key put had
    made with such a name could not be copied (no such store directory)."""
    monkeypatch.chdir(tmp_path)
    Path("a").write_bytes(b"data")
    assert run("cp", "./a", "./out/q?x#y").returncode == 0
    assert Path("out/q?x#y").read_bytes() == b"data"
    assert run("put", "./keys", "k?x#y", "a").returncode == 0
    done = run("cp", "./keys/k?x#y", "./back/")
    assert done.returncode == 0, done.stderr
    assert Path("back/k?x#y").read_bytes() == b"data"
    assert sorted(os.listdir()) == ["a", "back", "keys", "out"]


def test_cp_file_to_key_and_back_like_aws_s3_cp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    kek = tmp_path / "kek.json"
    assert run("keys", "new", "--keys", str(kek)).returncode == 0
    Path("file.bin").write_bytes(b"payload" * 1000)
    done = run("cp", "./file.bin", "./store/a/b.bin", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"objects": 1, "bytes": 7000}
    assert run("get", "store", "a/b.bin").stdout == b"payload" * 1000
    assert run("cp", "./store/a/b.bin", "./back.bin").returncode == 0
    assert Path("back.bin").read_bytes() == b"payload" * 1000
    # A destination directory (or one ending in /) keeps the name; encrypt on the way.
    Path("enc").mkdir()
    assert run("cp", "file.bin", "enc", "--dest-keys", str(kek)).returncode == 0
    assert b"payload" not in Path("enc/file.bin").read_bytes()
    sealed = run("stat", "enc", "file.bin").stdout  # without keys: said to be ciphertext
    assert b"note:    encrypted; this is its stored size (with --keys" in sealed
    assert b"size:    7000 " in run("stat", "enc", "file.bin", "--keys", str(kek)).stdout
    done = run("cp", "enc/file.bin", "plain/", "--src-keys", str(kek))
    assert done.returncode == 0, done.stderr
    assert Path("plain/file.bin").read_bytes() == b"payload" * 1000
    # --keys: both sides, as every other command spells it (alone, or refused)
    assert run("cp", "-r", "enc", "enc2", "--keys", str(kek)).returncode == 0
    assert b"payload" not in Path("enc2/file.bin").read_bytes()
    assert run("get", "enc2", "file.bin", "--keys", str(kek)).stdout == b"payload" * 1000
    mixed = run("cp", "enc/file.bin", "x/", "--keys", str(kek), "--src-keys", str(kek))
    assert mixed.returncode == 2 and b"give it alone" in mixed.stderr


def test_rm_recursive_deletes_a_prefix_only(tmp_path) -> None:
    store = tmp_path / "s"
    for key in ("a/1", "a/2/3", "ab", "b"):
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(b"x")
    assert run("rm", "-r", str(store), "a/").returncode == 0
    assert run("ls", str(store)).stdout.decode().split()[1::2] == ["ab", "b"]
    assert run("rm", str(store), "ab", "b").returncode == 0
    assert run("ls", str(store)).returncode == 3


def test_rm_of_an_empty_prefix_needs_all(tmp_path) -> None:
    """``rm -r "$STORE" "$PREFIX"`` with PREFIX unset deleted the whole store, silently."""
    store = tmp_path / "s"
    for key in ("a/1", "b"):
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(b"x")
    refused = run("rm", "-r", str(store), "")
    assert refused.returncode == 2 and b"say rm --all STORE" in refused.stderr
    assert run("rm", str(store)).returncode == 2
    assert run("rm", "--all", str(store), "a/1").returncode == 2
    assert run("ls", str(store)).stdout.decode().split()[1::2] == ["a/1", "b"]
    assert run("rm", "--all", str(store)).returncode == 0
    assert run("ls", str(store)).returncode == 3


def _peak_rss_mib(*args: str, piped_from: Path | None = None) -> float:
    """Peak RSS of ``dcstore ARGS`` run in a child process (its own process tree); with
    ``piped_from``, its stdin is a pipe fed from that file by ``cat``."""
    script = (
        "import resource, subprocess, sys\n"
        "src = sys.argv[1]\n"
        "cat = subprocess.Popen(['cat', src], stdout=subprocess.PIPE) if src else None\n"
        "subprocess.run(sys.argv[2:], check=True, stdin=cat.stdout if cat else None)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    source = str(piped_from) if piped_from else ""
    done = subprocess.run(
        [sys.executable, "-c", script, source, *DCSTORE, *args], capture_output=True, check=True
    )
    return int(done.stdout) / 1024  # ru_maxrss is in KiB on Linux


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ")
@pytest.mark.parametrize("encrypted", [False, True])
def test_put_of_a_large_file_streams(tmp_path, encrypted) -> None:
    size = 96 << 20
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    with open(big, "wb") as f:
        f.truncate(size)  # sparse: the test measures dcstore, not the disk
    small.write_bytes(b"x")
    extra = ["--opt", "fsync=false"]
    if encrypted:
        kek = tmp_path / "kek.json"
        assert run("keys", "new", "--keys", str(kek)).returncode == 0
        extra += ["--keys", str(kek)]
    store = str(tmp_path / "store")
    baseline = _peak_rss_mib("put", store, "small", str(small), *extra)
    peak = _peak_rss_mib("put", store, "big", str(big), *extra)
    assert peak - baseline < 32, f"put of {size >> 20} MiB grew RSS by {peak - baseline:.0f} MiB"
    stat = json.loads(run("stat", store, "big", "--json", *extra[2:]).stdout)
    assert stat["size"] == size
    piped = _peak_rss_mib("put", store, "piped", "-", *extra, piped_from=big)
    assert piped - baseline < 32, f"put from a pipe grew RSS by {piped - baseline:.0f} MiB"
    stat = json.loads(run("stat", store, "piped", "--json", *extra[2:]).stdout)
    assert stat["size"] == size


def test_put_progress_advances_with_bytes(tmp_path, monkeypatch) -> None:
    from dcstore.cli import objects
    from dcstore.cli.main import main

    advances: list[int] = []

    class Recorder:
        def __enter__(self) -> Recorder:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def add_task(self, description: str, total: int | None) -> int:
            assert total == size
            return 0

        def advance(self, task: int, n: int) -> None:
            advances.append(n)

    monkeypatch.setattr(objects, "transfer_progress", lambda enabled: Recorder())
    size = 5 * objects.READ_CHUNK_BYTES + 3
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(size))
    assert main(["put", str(tmp_path / "s"), "k", str(src)]) == 0
    assert advances == [objects.READ_CHUNK_BYTES] * 5 + [3]
    assert (tmp_path / "s" / "k").read_bytes() == src.read_bytes()


def test_object_commands_start_without_the_loader_numpy_or_pyarrow(tmp_path) -> None:
    """``put``/``get`` start in a fraction of a second: the loader, numpy, pyarrow and
    torch are imported only by the commands that use them (pack, demo, verify, bench)."""
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    script = (
        "import sys; from dcstore.cli.main import main\n"
        f"store = {tmp_path.as_uri() + '/store'!r}\n"
        f"assert main(['put', store, 'k', {str(src)!r}]) == 0\n"
        f"assert main(['get', store, 'k', '-o', {str(tmp_path / 'out')!r}]) == 0\n"
        "heavy = {'dcstore.loaders', 'numpy', 'pyarrow', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert (tmp_path / "out").read_bytes() == b"abc"


def test_cp_of_an_encrypted_file_inside_a_store_says_how_to_name_it(tmp_path) -> None:
    """A path into a store's directory is read as its last segment of that directory, but
    an encrypted object is bound to the key it was put under: the error says so and how
    to copy it (mistake made on purpose in a newcomer's session)."""
    keys, src = tmp_path / "k.json", tmp_path / "f"
    src.write_bytes(os.urandom(100_000))
    assert run("keys", "new", "--keys", str(keys)).returncode == 0
    vault = str(tmp_path / "vault")
    assert run("put", vault, "clips/f", str(src), "--keys", str(keys)).returncode == 0
    by_path = [f"{vault}/clips/f", str(tmp_path / "copy"), "--src-keys", str(keys)]
    done = run("cp", *by_path)
    err = done.stderr.decode()
    assert done.returncode != 0 and len(err.strip().splitlines()) == 1, err
    assert "failed authentication" in err and "dcstore cp -r STORE DEST KEY" in err, err
    assert not (tmp_path / "copy").exists()
    copied = run("cp", "-r", vault, str(tmp_path / "vault2"), "clips/f", "--src-keys", str(keys))
    assert copied.returncode == 0, copied.stderr.decode()
    assert (tmp_path / "vault2" / "clips" / "f").read_bytes() == src.read_bytes()


def test_cp_without_keys_copies_ciphertext_only_where_it_stays_decryptable(tmp_path) -> None:
    """Read without keys, an encrypted object is ciphertext bound to its name: a copy to
    the same key of another store is a replica (decrypts with the keys), a copy to another
    key, or into an encrypting store, is refused before anything is written (mistake made on
    purpose in a newcomer's session: it used to leave an object that failed authentication)."""
    keys, src = tmp_path / "k.json", tmp_path / "f"
    data = os.urandom(9 << 20)  # streamed (above the copy chunk)
    src.write_bytes(data)
    assert run("keys", "new", "--keys", str(keys)).returncode == 0
    vault = str(tmp_path / "vault")
    for key in ("big.bin", "small.bin"):
        assert run("put", vault, key, str(src), "--keys", str(keys)).returncode == 0
    run("put", vault, "small.bin", "-", "--keys", str(keys), input=b"tiny")
    for key in ("big.bin", "small.bin"):
        renamed = run("cp", f"{vault}/{key}", f"{vault}/renamed-{key}")
        err = renamed.stderr.decode()
        assert renamed.returncode != 0 and len(err.strip().splitlines()) == 1, err
        assert f"{key} is encrypted and was read without keys" in err and "--src-keys" in err
        assert "could not be decrypted" in err, err
        again = run("cp", f"{vault}/{key}", f"{tmp_path}/enc/", "--dest-keys", str(keys))
        assert (
            again.returncode != 0 and "would encrypt its ciphertext again" in again.stderr.decode()
        )
    assert sorted(os.listdir(vault)) == ["big.bin", "small.bin"] and not (tmp_path / "enc").exists()
    replica = str(tmp_path / "replica")
    assert run("cp", "-r", vault, replica).returncode == 0  # same keys, ciphertext as it is
    assert run("get", replica, "big.bin", "--keys", str(keys)).stdout == data
    assert run("get", replica, "small.bin", "--keys", str(keys)).stdout == b"tiny"
    assert (
        run("cp", f"{vault}/big.bin", f"{vault}/plain.bin", "--src-keys", str(keys)).returncode == 0
    )
    assert (Path(vault) / "plain.bin").read_bytes() == data  # decrypted, written as plaintext


class _TakesAFew(io.RawIOBase):
    """A writer that takes at most 1000 bytes a call, as a nearly full disk takes what fits."""

    def __init__(self) -> None:
        self.got = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        taken = bytes(memoryview(data)[:1000])
        self.got += taken
        return len(taken)


def test_write_all_writes_again_what_a_short_write_left() -> None:
    from dcstore.localfile import write_all

    out = _TakesAFew()
    write_all(out, memoryview(b"0123456789" * 450)[5:])  # type: ignore[arg-type]
    assert bytes(out.got) == (b"0123456789" * 450)[5:]


@pytest.fixture
def nearly_full_dir(tmp_path) -> Iterator[Path]:
    """A 4 MiB tmpfs with 1 MiB free (root only: it is a real mount)."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (where / "fill").write_bytes(b"\0" * (3 << 20))
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("to", ["stdout", "-o"])
def test_get_onto_a_full_disk_fails_instead_of_leaving_a_short_file(
    tmp_path, nearly_full_dir, to
) -> None:
    """Redirected stdout took the 1 MiB that fitted of a 2 MiB object, and get exited 0."""
    store = str(tmp_path / "store")
    assert run("put", store, "k", "-", input=os.urandom(2 << 20)).returncode == 0
    out = nearly_full_dir / "out.bin"
    if to == "stdout":
        with open(out, "wb") as f:
            done = subprocess.run([*DCSTORE, "get", store, "k"], stdout=f, stderr=subprocess.PIPE)
    else:
        done = run("get", store, "k", "-o", str(out))
    assert done.returncode == 7, done.stderr
    assert b"no space left on device" in done.stderr
    if to == "-o":  # the output is named, not the temporary file written first
        assert done.stderr.decode().strip().endswith(f"({out})")
    assert sorted(p.name for p in nearly_full_dir.iterdir()) == (
        ["fill", "out.bin"] if to == "stdout" else ["fill"]  # a shell made the redirect
    )


@pytest.mark.parametrize("change", [b"grown", b""])
def test_put_of_a_file_that_changes_size_says_so(tmp_path, monkeypatch, capsys, change) -> None:
    """It said "the data is longer than the announced N bytes": the user announced nothing."""
    from dcstore.cli import objects
    from dcstore.cli.main import main

    src = tmp_path / "in.bin"
    src.write_bytes(b"x" * (3 * objects.READ_CHUNK_BYTES))
    real = objects._read_chunks

    def changing(f, advance):
        for i, chunk in enumerate(real(f, advance)):
            yield chunk
            if i == 0:
                with open(src, "ab") as g:
                    g.write(change) if change else g.truncate(objects.READ_CHUNK_BYTES)

    monkeypatch.setattr(objects, "_read_chunks", changing)
    assert main(["put", str(tmp_path / "store"), "k", str(src)]) == 6
    err = capsys.readouterr().err
    assert f"{src} changed size while it was read ({3 * objects.READ_CHUNK_BYTES} bytes" in err
    assert "nothing was stored" in err
    assert not (tmp_path / "store" / "k").exists()
