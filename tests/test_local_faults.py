"""Local backend under faults: killed writers, full disks, unreadable directories,
symbolic links planted in the store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcstore import ConfigError, InvalidKeyError, NotFoundError, StorageFullError, open_store
from dcstore.backends.local import LocalBackend

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def test_killed_writer_keeps_previous_object(tmp_path) -> None:
    store = LocalBackend(tmp_path)
    store.put("shard.tar", b"old" * 1000)
    child = textwrap.dedent(
        f"""
        import os, sys, time
        from dcstore.backends.local import LocalBackend
        def stall(fd):
            print("written", flush=True)
            time.sleep(60)
        os.fsync = stall
        LocalBackend({str(tmp_path)!r}).put("shard.tar", b"new" * 3_000_000)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"  # temp file fully written, not renamed
        temps = [p for p in os.listdir(tmp_path) if p.startswith(".dcstore")]
        assert temps, "the writer should be mid-put"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert store.get("shard.tar") == b"old" * 1000
    assert [m.key for m in store.list_objects()] == ["shard.tar"]
    store.put("shard.tar", b"fine")
    assert store.get("shard.tar") == b"fine"


def test_an_overwrite_is_dated_after_the_file_it_replaces(tmp_path) -> None:
    """The clock went back (or ticks coarser than the overwrites): the new file still gets
    a later mtime, so ``modified`` and the version move forward."""
    store = LocalBackend(tmp_path)
    store.put("obj", b"x")
    future = time.time_ns() + 3600 * 10**9
    os.utime(tmp_path / "obj", ns=(future, future))
    dated = store.head("obj")
    new = store.put("obj", b"x")
    assert new.modified == store.head("obj").modified == (future + 1) / 1e9
    assert new.version != dated.version


NEEDS_MOUNT = pytest.mark.skipif(
    not IS_ROOT or not shutil.which("mount"), reason="mounting a tmpfs needs root"
)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=False
    )
    if done.returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@NEEDS_MOUNT
def test_disk_full_keeps_previous_object(small_disk: Path) -> None:
    store = LocalBackend(small_disk)
    store.put("obj", b"previous")
    with pytest.raises(StorageFullError, match="no space left") as info:
        store.put("obj", b"x" * (2 << 20))
    assert isinstance(info.value, OSError)
    assert store.get("obj") == b"previous"
    assert [m.key for m in store.list_objects()] == ["obj"]
    assert not [p for p in os.listdir(small_disk) if p.startswith(".dcstore")]


@NEEDS_MOUNT
def test_a_first_pack_that_fills_the_disk_says_how_to_remove_its_shards(
    tmp_path, small_disk: Path, capsys
) -> None:
    """It said `dcstore gc DEST` removes them, but gc refuses a store without a dataset
    (it cannot tell a failed first pack from a dataset whose manifest was lost)."""
    import re
    import shlex

    from dcstore.cli.main import main

    (tmp_path / "src").mkdir()
    for i in range(8):
        (tmp_path / "src" / f"{i}.bin").write_bytes(os.urandom(300_000))
    dest = small_disk / "ds"
    dest.mkdir()
    (dest / "mine.txt").write_text("a user's object")
    code = main(["pack", str(tmp_path / "src"), str(dest), "-q", "--shard-size", "256KiB"])
    err = capsys.readouterr().err
    assert code == 7 and "no space left" in err and "no dataset was committed" in err
    command = re.search(r"`dcstore (rm -r [^`]+)`", err)
    assert command is not None and list((dest / "shards").rglob("*.tar"))
    assert main(shlex.split(command.group(1))) == 0
    assert not list((dest / "shards").rglob("*.tar"))
    assert (dest / "mine.txt").read_text() == "a user's object"


def _list_as_unprivileged(root) -> str:
    """List ``root`` in a forked child that dropped root; return the error it saw."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: give up root so permissions apply, then try to list
        try:
            os.close(read_fd)
            if IS_ROOT:
                os.setgid(65534)
                os.setuid(65534)
            try:
                list(LocalBackend(root).list_objects())
                message = "no error"
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
            os.write(write_fd, message.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_directory_is_a_clear_error(tmp_path) -> None:
    root = tmp_path / "locked"
    LocalBackend(root).put("secret/a", b"x")
    os.chmod(tmp_path, 0o755)
    os.chmod(root, 0o000)
    try:
        message = _list_as_unprivileged(root)
    finally:
        os.chmod(root, 0o755)
    assert message.startswith("KeyAccessError") and "permission denied" in message, message


def test_a_store_root_that_is_a_file_is_named(tmp_path) -> None:
    """It was "no such store directory" (the path exists) or "File exists (conflicts with
    another key)"."""
    root = tmp_path / "a-file"
    root.write_bytes(b"x")
    store = LocalBackend(root)
    for attempt in (lambda: store.put("k", b"1"), lambda: store.get("k"), lambda: store.head("k")):
        with pytest.raises(ConfigError, match=r"the store's root '.*a-file' is a file"):
            attempt()
    assert root.read_bytes() == b"x"


def test_symbolic_links_below_the_root_lead_nowhere_outside(tmp_path) -> None:
    """Anyone who can write into a shared store directory could plant links; dcstore
    neither reads, writes, lists nor deletes through them (the root may be a link)."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "important.txt").write_bytes(b"secret")
    (outside / "deep" / "d.txt").write_bytes(b"d")
    real_root = tmp_path / "real-root"
    real_root.mkdir()
    (real_root / "a").symlink_to(outside)
    (real_root / "f.txt").symlink_to(outside / "important.txt")
    (tmp_path / "root").symlink_to(real_root)
    store = LocalBackend(tmp_path / "root")
    store.put("ok.txt", b"ok")

    for call in (
        lambda: store.put("a/new.txt", b"x"),
        lambda: store.get("a/important.txt"),
        lambda: store.get_range("a/important.txt", 0, 1),
        lambda: store.head("a/deep/d.txt"),
        lambda: store.delete("a/important.txt"),
        lambda: list(store.list_objects("a/")),
    ):
        with pytest.raises(InvalidKeyError, match="symbolic link"):
            call()
    for call in (  # a key that is a link is not an object
        lambda: store.get("f.txt"),
        lambda: store.head("f.txt"),
        lambda: store.map_range("f.txt", 0, 1),
    ):
        with pytest.raises(NotFoundError, match="is a symbolic link, not an object"):
            call()
    assert [m.key for m in store.list_objects()] == ["ok.txt"]
    assert sorted(p.name for p in outside.rglob("*")) == ["d.txt", "deep", "important.txt"]
    assert (outside / "important.txt").read_bytes() == b"secret"
    cached = open_store(str(tmp_path / "root"), cache="memory")  # heads before it writes
    cached.put("f.txt", b"replaces the link")  # a rename over the link, never through it
    assert (outside / "important.txt").read_bytes() == b"secret"
    assert store.get("f.txt") == b"replaces the link"
    (real_root / "g.txt").symlink_to(outside / "important.txt")
    cached.delete("g.txt")  # removes the link only
    assert not (real_root / "g.txt").is_symlink()
    assert (outside / "important.txt").read_bytes() == b"secret"


def test_concurrent_processes_never_see_a_mix(tmp_path) -> None:
    store = LocalBackend(tmp_path)
    size = 1 << 20
    store.put("x", b"a" * size)
    writer = textwrap.dedent(
        f"""
        from dcstore.backends.local import LocalBackend
        s = LocalBackend({str(tmp_path)!r})
        for i in range(40):
            s.put("x", (b"a" if i % 2 else b"b") * {size})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer]) for _ in range(2)]
    seen = set()
    while any(p.poll() is None for p in procs):
        data = store.get("x")
        assert data in (b"a" * size, b"b" * size)
        seen.add(data[:1])
    assert all(p.wait() == 0 for p in procs)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".dcstore")]


def test_a_key_segment_too_long_for_a_file_name_says_so(tmp_path: Path) -> None:
    """It said "File name too long (conflicts with another key)" in an empty store."""
    with pytest.raises(InvalidKeyError, match="too long for a file name here") as info:
        LocalBackend(str(tmp_path)).put("a/" + "x" * 300, b"1")
    assert "conflicts" not in str(info.value)


def test_a_fifo_in_the_store_is_no_object_and_never_blocks(tmp_path) -> None:
    """Review: a FIFO put in the store by hand blocked every read of its key forever (the
    open waited for a writer before the file's kind was checked)."""
    store = LocalBackend(str(tmp_path))
    os.mkfifo(tmp_path / "pipe")
    reads = [
        store.head,
        store.get,
        lambda key: store.get_range(key, 0, 1),
        store.map_object,
        store.open_read,
    ]
    for read in reads:
        with pytest.raises(NotFoundError, match=r"'pipe' \(it is not a regular file\)"):
            read("pipe")
    assert [m.key for m in store.list_objects()] == []
