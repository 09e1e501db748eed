"""Key sources: where a process gets its :class:`Keyring`.

A :class:`KeySource` is small, picklable and holds no key material; each
process calls :meth:`KeySource.load` itself. That is the seam for a KMS:
implement ``load`` (fetch and unwrap the keyring from Vault, a cloud KMS...)
and ``describe``.

Built in:

* :class:`FileKeySource` — a JSON key file (``docs/format.md``) that must not
  be readable by group or others, must be owned by this user (or root) and must
  sit in a folder no other user can write (see :meth:`FileKeySource.load`).
  :meth:`FileKeySource.update` changes it:
  read-modify-write under an exclusive ``flock`` on a sidecar ``<file>.lock``,
  then an atomic, fsynced replace with mode 0600 (:func:`write_key_file`), so
  concurrent ``keys new``/``retire`` never lose a key. Its :meth:`version`
  is one ``stat`` (device, inode, size, mtime): writers reload when it changes.
* :class:`EnvKeySource` — the same document in an environment variable. For
  the CLI only: the library never constructs it and never reads the
  environment on its own.
* :class:`StaticKeySource` — an in-memory keyring (tests, single process);
  it does not pickle, because its keyring does not.
"""

from __future__ import annotations

import abc
import base64
import binascii
import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from dcstore.crypto.keyring import Keyring
from dcstore.errors import ConfigError, KeyAccessError


class KeySource(abc.ABC):
    """Where keys come from. Implementations pickle and hold no key material."""

    @abc.abstractmethod
    def load(self) -> Keyring:
        """Return the current keyring (:class:`KeyAccessError`/:class:`ConfigError` on failure)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A secret-free description for messages and ``repr``."""

    def version(self) -> Hashable | None:
        """A cheap token that changes whenever :meth:`load` may return another keyring.

        ``None`` (the default) means the source cannot tell cheaply; writers then
        keep the keyring they loaded, and a read that meets an unknown key id
        loads it again.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


class FileKeySource(KeySource):
    """A JSON key file; refuses files that another user could read, write or replace."""

    def __init__(self, path: str | os.PathLike[str]):
        """``path`` is made absolute now. A raw key given as the path (hex, base64,
        URL-safe base64 or base32 of an AES key, and no such file) is a
        :class:`ConfigError` that does not show it, so no message or ``repr`` does."""
        _refuse_a_raw_key(os.fspath(path))
        self.path = Path(os.path.abspath(os.fspath(path)))  # fixed now: workers may chdir

    def describe(self) -> str:
        return f"file://{self.path}"

    def load(self) -> Keyring:
        """Read the key file. A missing, unreadable or non-regular file is a
        :class:`ConfigError` naming the path. A :class:`KeyAccessError` refuses
        a key file that another user could read or replace:

        * a symlink (the last component; folders reached through symlinks, as in
          Kubernetes Secret volumes' ``..data``, are followed);
        * a file with any group or other mode bit;
        * a file owned by neither the effective user nor root;
        * a file under a folder another user may change (:meth:`check_folder`).
        """
        try:
            # O_NONBLOCK: a FIFO put in the key file's place is refused below, not waited on.
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise ConfigError(
                f"key file {self.path} does not exist (data already encrypted needs the key "
                f"file it was written with; to start one: dcstore keys new --keys {self.path})"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeyAccessError(f"key file {self.path} is a symlink (refused)") from None
            raise ConfigError(f"cannot read key file {self.path}: {exc.strerror}") from None
        text = b""
        try:
            st = os.fstat(fd)
            mode, owner = st.st_mode, st.st_uid
            if stat.S_ISREG(mode) and not mode & 0o077:
                with os.fdopen(fd, "rb") as f:
                    fd = -1  # closed by f
                    text = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {self.path}: {exc.strerror}") from None
        finally:
            if fd >= 0:
                os.close(fd)
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise ConfigError(f"key file {self.path} is {kind}")
        if mode & 0o077:
            raise KeyAccessError(
                f"key file {self.path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {self.path}"
            )
        euid = os.geteuid()
        if owner not in (euid, 0):
            raise KeyAccessError(
                f"key file {self.path} is owned by uid {owner}, not by this user "
                f"(uid {euid}) or root, so its owner can replace the key; run: "
                f"chown {euid} {self.path} (or use a copy of your own, mode 0600)"
            )
        self.check_folder()
        return Keyring.from_document(text, f"key file {self.path}")

    def check_folder(self) -> None:
        """Refuse (:class:`KeyAccessError`) a key file whose folder, or any folder above
        it, another user may change: owned by neither the effective user nor root, or
        writable by others (by group too, unless the group is its owner's private group,
        as ``umask 002`` systems make them) without the sticky bit. Whoever can rename a
        folder on the way, or a symbolic link in it, can put another key file in this
        one's place, so both the folders of the path as given and those it resolves to
        are checked. Folders not made yet are skipped (``keys new`` makes them 0700)."""
        given = os.path.abspath(self.path.parent)
        for folder in dict.fromkeys([*_folders_up(given), *_folders_up(os.path.realpath(given))]):
            self._check_one_folder(folder)

    def _check_one_folder(self, folder: str) -> None:
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot check key file folder {folder}: {exc.strerror}") from None
        euid = os.geteuid()
        if st.st_uid not in (euid, 0):
            raise KeyAccessError(
                f"key file {self.path} is under folder {folder}, owned by uid "
                f"{st.st_uid}, not by this user (uid {euid}) or root, so its owner can "
                "replace the key file; move the key file to a folder you own that only "
                "you can write"
            )
        if _others_may_write(st):
            raise KeyAccessError(
                f"key file {self.path} is under folder {folder}, which group or others "
                f"may write (mode {stat.S_IMODE(st.st_mode):04o}, no sticky bit), so "
                f"they can put a key file of their own in its place; run: chmod go-w "
                f"{folder} (or move the key file to a folder only you can write)"
            )

    def version(self) -> Hashable:
        """``(device, inode, size, mtime_ns)`` of the key file: every update replaces
        the file, so the inode changes even within one mtime tick."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "missing"
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def lock_path(self) -> Path:
        """The sidecar lock file (kept; removing lock files reintroduces races)."""
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive lock every update of this key file takes."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # load() checks it
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def update(self, change: Callable[[Keyring | None], Keyring]) -> Keyring:
        """Read-modify-write the key file under :meth:`locked`; returns the new keyring.

        ``change`` receives the current keyring (``None`` if there is no file
        yet) and returns the one to write; an exception from it leaves the file
        untouched.
        """
        self.check_folder()  # never write a key file that load() would refuse
        with self.locked():
            current = self.load() if os.path.lexists(self.path) else None
            keyring = change(current)
            write_key_file(self.path, keyring)
        return keyring

    def save(self, keyring: Keyring) -> None:
        """Replace the key file with ``keyring`` under the lock (mode 0600)."""
        self.update(lambda _current: keyring)


class EnvKeySource(KeySource):
    """The key file document in an environment variable (CLI only).

    Only the variable's name is stored and pickled; ``load`` reads the
    variable in the calling process (DataLoader workers inherit it).
    """

    def __init__(self, variable: str = "DCSTORE_KEYS"):
        self.variable = variable

    def describe(self) -> str:
        return f"env:{self.variable}"

    def load(self) -> Keyring:
        text = os.environ.get(self.variable)
        if not text:
            raise KeyAccessError(f"environment variable {self.variable} is not set")
        return Keyring.from_document(text, f"environment variable {self.variable}")


class StaticKeySource(KeySource):
    """An in-memory keyring, for tests and single-process use. Does not pickle."""

    def __init__(self, keyring: Keyring):
        self._keyring = keyring

    def describe(self) -> str:
        return f"in-memory keyring (primary {self._keyring.primary!r})"

    def load(self) -> Keyring:
        return self._keyring

    def __reduce__(self) -> Any:
        return self._keyring.__reduce__()


def write_key_file(path: str | os.PathLike[str], keyring: Keyring) -> None:
    """Write ``keyring`` to ``path`` atomically, created with mode 0600, fsynced; a
    missing folder is made mode 0700 (whatever the umask), as :meth:`FileKeySource.load`
    requires.

    Takes no lock: to change a key file other processes may change too, use
    :meth:`FileKeySource.update`.
    """
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kek-", dir=target.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(keyring.to_document(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _others_may_write(st: os.stat_result) -> bool:
    """Whether users other than a folder's owner may add or rename entries in it: others
    or group write without the sticky bit, the owner's private group (the group named
    after the owner, with no other members) aside."""
    if st.st_mode & stat.S_ISVTX or not st.st_mode & 0o022:
        return False
    return bool(st.st_mode & 0o002) or not _private_group(st.st_uid, st.st_gid)


def _private_group(uid: int, gid: int) -> bool:
    """Whether ``gid`` is ``uid``'s private group: named after the user, with no other
    member, listed or by being another user's primary group."""
    import grp
    import pwd

    try:
        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:  # no name for one of them: not known to be private
        return False
    if group.gr_name != user.pw_name or not set(group.gr_mem) <= {user.pw_name}:
        return False
    return all(other.pw_uid == uid for other in pwd.getpwall() if other.pw_gid == gid)


def _folders_up(folder: str) -> list[str]:
    """``folder`` and every folder above it, to ``/``."""
    out = [folder]
    while (parent := os.path.dirname(out[-1])) != out[-1]:
        out.append(parent)
    return out


_KEY_SIZES = (16, 24, 32)
_HEX_KEY = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64}")


def _looks_like_a_raw_key(text: str) -> bool:
    """Whether ``text`` encodes 16, 24 or 32 bytes as an AES key is pasted where a key
    file's path belongs: hex, standard base64, URL-safe base64 (``-``/``_``, as
    ``secrets.token_urlsafe(32)`` or ``base64.urlsafe_b64encode`` write it) or base32
    (either case). Padding is optional. The caller also checks that no such file, and
    no folder it would be in, exists: ``/etc/kk/ml/prod1`` is base64 too.

    URL-safe base64 and base32 share their alphabets with ordinary file names
    (``my_model-keys``), so those two count only in their canonical form (the unused
    trailing bits zero, as every encoder writes them), and URL-safe base64 only in mixed
    case, which random bytes all but always give (a 16-byte key misses it about once in 100,000)
    and file names such as ``kek-2026-11-28-primary`` seldom have.
    """
    text = text.strip()
    if _HEX_KEY.fullmatch(text):
        return True
    return _is_base64_key(text) or _is_urlsafe_base64_key(text) or _is_base32_key(text)


def _is_base64_key(text: str) -> bool:
    if not re.fullmatch(r"[A-Za-z0-9+/]{21,43}={0,2}", text):
        return False
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        return False
    return len(raw) in _KEY_SIZES


def _is_urlsafe_base64_key(text: str) -> bool:
    if not re.fullmatch(r"[A-Za-z0-9_-]{21,43}={0,2}", text):
        return False
    bare = text.rstrip("=")
    mixed_case = bool(re.search("[A-Z]", bare) and re.search("[a-z]", bare))
    try:
        raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        return False
    canonical = base64.urlsafe_b64encode(raw).decode().rstrip("=") == bare
    return len(raw) in _KEY_SIZES and canonical and mixed_case


def _is_base32_key(text: str) -> bool:
    if not re.fullmatch(r"[A-Z2-7]{26,52}={0,6}|[a-z2-7]{26,52}={0,6}", text):
        return False
    bare = text.rstrip("=").upper()
    try:
        raw = base64.b32decode(bare + "=" * (-len(bare) % 8))
    except (binascii.Error, ValueError):
        return False
    return len(raw) in _KEY_SIZES and base64.b32encode(raw).decode().rstrip("=") == bare


def _refuse_a_raw_key(spec: str) -> None:
    """Raise :class:`ConfigError`, without showing ``spec``, if it is a raw key rather
    than the path of a key file: no file of that name exists, and either its last part
    (quotes, ``./``, ``~/`` and ``0x`` taken off) reads as a key wherever it would be
    (:func:`_a_key_as_a_name`),
    or the whole of it does and no folder it would be in exists (``/etc/kk/ml/prod1``
    is base64 too, and a base64 key may hold ``/``)."""
    if os.path.lexists(spec):
        return
    whole = spec.strip().strip("\"'")
    name = os.path.basename(whole.rstrip("/")).strip("\"'")
    parent = os.path.dirname(whole)
    if (
        _a_key_as_a_name(name)
        or (name[:2].lower() == "0x" and _looks_like_a_raw_key(name[2:]))  # hex, as 0x...
        or (
            _looks_like_a_raw_key(whole)
            and (parent.strip("/") == "" != parent or not os.path.isdir(parent or "."))
        )
    ):
        raise ConfigError(  # never shown: it may be the key itself
            "the key source looks like a raw key, not a key file's path: give the path "
            "of a key file (dcstore keys new makes one; a new file's name that reads as "
            "a key, such as 32 letters and digits, is taken for one)"
        )


def _a_key_as_a_name(name: str) -> bool:
    """Whether a path's last part, wherever it is, reads as a key: hex of a key's size
    (``openssl rand -hex 32``), base64 in mixed case, as every base64 key but almost no
    file name is (``datasetmasterkey2026v1`` is base64 too), or base32 in one case with
    a digit; other names of letters and digits are taken for names."""
    if _HEX_KEY.fullmatch(name):
        return True
    mixed = re.search("[A-Z]", name) and re.search("[a-z]", name)
    base32 = re.fullmatch("[A-Z2-7]+=*|[a-z2-7]+=*", name) and re.search("[2-7]", name)
    return bool(mixed or base32) and _looks_like_a_raw_key(name)


def open_key_source(spec: KeySource | Keyring | str | os.PathLike[str]) -> KeySource:
    """A :class:`KeySource` from a source, a keyring, ``file:///abs/kek.json`` or a path.

    A relative path is made absolute now (against the current directory).
    """
    if isinstance(spec, KeySource):
        return spec
    if isinstance(spec, Keyring):
        return StaticKeySource(spec)
    if isinstance(spec, os.PathLike):
        return FileKeySource(spec)
    if isinstance(spec, str):
        if spec[:5].lower() == "file:":  # file:/abs or file:kek.json too: one clear message
            parts = urlsplit(spec)
            if not spec.startswith("file://") or parts.netloc not in ("", "localhost"):
                raise ConfigError(
                    "key source must be file:///absolute/path (three slashes, no host) or a "
                    "key file's path"
                )
            if parts.query:
                raise ConfigError("key source must be file:///absolute/path (no query)")
            return FileKeySource(unquote(parts.path))
        if spec.lstrip().startswith("{") or "\n" in spec:
            raise ConfigError(  # never shown: it may be the key itself
                "the key source looks like a key file's contents, not its path: give the "
                "path of the file (or, in Python, a Keyring)"
            )
        _refuse_a_raw_key(spec)
        scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", spec)
        if spec.strip() and not scheme:
            return FileKeySource(spec)
        given = (
            f"key sources of scheme {scheme.group(0)[:-1]!r} are not supported"
            if scheme
            else "the key source is empty"
        )
        raise ConfigError(  # only the scheme is shown: the rest may hold a secret
            f"{given}: give a key file's path or file:///absolute/path.json (in Python, also a "
            "KeySource or a Keyring)"
        )
    kind = type(spec).__name__
    raise ConfigError(f"key source must be a KeySource or a key file URL, got {kind}")
