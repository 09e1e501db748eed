"""The HDFS commit lock's logic against an in-memory file system that forces the
interleavings a real NameNode makes rare (its behaviour on HDFS: tests/test_hdfs.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytest.importorskip("hdfs_native")

from dcstore.backends.hdfs.commit_lock import STALE_AFTER_S, CommitLock, lock_path


class _Info:
    def __init__(self, mtime: int):
        self.modification_time = mtime


class _Writer:
    def __init__(self, fs: FakeFs, path: str):
        self.fs, self.path = fs, path

    def write(self, data: bytes) -> None:
        with self.fs.lock:
            mtime, content = self.fs.files[self.path]
            self.fs.files[self.path] = (mtime, content + data)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Reader:
    def __init__(self, content: bytes):
        self.content = content

    def read(self) -> bytes:
        return self.content

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FakeFs:
    """Files with a modification time (ms) and content; create, rename and delete are
        atomic, as on the NameNode. ``after_stat(path)`` runs as each ``get_file_info``
    returns what it read."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytes]] = {}
        self.lock = threading.Lock()
        self.after_stat = lambda path: None

    @staticmethod
    def now() -> int:
        return int(time.time() * 1000)

    def create(self, path: str, options: Any = None) -> _Writer:
        with self.lock:
            if path in self.files:
                raise FileExistsError(path)
            self.files[path] = (self.now(), b"")
        return _Writer(self, path)

    def read(self, path: str) -> _Reader:
        with self.lock:
            return _Reader(self.files[path][1])

    def get_file_info(self, path: str) -> _Info:
        with self.lock:
            if path not in self.files:
                raise FileNotFoundError(path)
            info = _Info(self.files[path][0])
        self.after_stat(path)
        return info

    def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        with self.lock:
            if src not in self.files:
                raise FileNotFoundError(src)
            if dst in self.files and not overwrite:
                raise FileExistsError(dst)
            self.files[dst] = self.files.pop(src)

    def delete(self, path: str, recursive: bool = False) -> None:
        with self.lock:
            if path not in self.files:
                raise FileNotFoundError(path)
            del self.files[path]


def test_two_writers_breaking_a_dead_writers_lock_never_hold_it_together() -> None:
    """Review: B judged the dead writer's lock stale; A broke it and took the lock; B
    then deleted A's fresh lock as the stale one, and both committed at once."""
    fs = FakeFs()
    lock = lock_path("/d/obj")
    fs.files["/d/tmpA"] = fs.files["/d/tmpB"] = (fs.now(), b"")
    fs.files[lock] = (fs.now() - int(STALE_AFTER_S * 1000) - 1000, b"dead")
    a_holds, b_judged = threading.Event(), threading.Event()

    def after_stat(path: str) -> None:
        if path == lock and threading.current_thread().name == "B" and not b_judged.is_set():
            b_judged.set()  # B has read the stale lock's time...
            a_holds.wait(5)  # ...and acts on it only once A has broken it and taken its own

    fs.after_stat = after_stat
    inside, most = [0], [0]

    def commit(tmp: str) -> None:
        with CommitLock(fs, "/d/obj", tmp) as held:
            if threading.current_thread().name == "A":
                a_holds.set()
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.3)
            held.check_held()
            inside[0] -= 1

    b = threading.Thread(target=commit, args=("/d/tmpB",), name="B")
    b.start()
    assert b_judged.wait(5)
    a = threading.Thread(target=commit, args=("/d/tmpA",), name="A")
    a.start()
    a.join()
    b.join()
    assert most[0] == 1
    assert [p for p in fs.files if "lock" in p] == []  # released, nothing left aside


def test_a_holder_that_stalled_leaves_the_lock_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past half the stale age another writer may have broken the lock and taken its
    own: the stalled holder must not rename, nor delete that writer's lock."""
    from dcstore.errors import BackendUnavailableError

    fs = FakeFs()
    fs.files["/d/tmp"] = (fs.now(), b"")
    clock = [time.monotonic()]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    lock = CommitLock(fs, "/d/obj", "/d/tmp")
    with pytest.raises(BackendUnavailableError, match="stalled"), lock as held:
        clock[0] += STALE_AFTER_S  # a pause: the lock went stale meanwhile
        fs.files[lock_path("/d/obj")] = (fs.now(), b"")  # broken, taken by another
        held.check_held()
    assert lock_path("/d/obj") in fs.files
