"""Key sources: where a process gets its :class:`Keyring`.

A :class:`KeySource` is small, picklable and holds no key material; each
process calls :meth:`KeySource.load` itself. That is the seam for a KMS:
implement ``load`` (fetch and unwrap the keyring from Vault, a cloud KMS...)
and ``describe``.

Built in:

* :class:`FileKeySource` — a JSON key file (``docs/format.md``) that must not
  be readable by group or others; written atomically with mode 0600 by
  :func:`write_key_file`.
* :class:`EnvKeySource` — the same document in an environment variable. For
  the CLI only: the library never constructs it and never reads the
  environment on its own.
* :class:`StaticKeySource` — an in-memory keyring (tests, single process);
  it does not pickle, because its keyring does not.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import re
import stat
import tempfile
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


class FileKeySource(KeySource):
    """A JSON key file; refuses files that group or others may read or write."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(os.path.abspath(os.fspath(path)))  # fixed now: workers may chdir

    def describe(self) -> str:
        return f"file://{self.path}"

    def load(self) -> Keyring:
        """Read the key file. A missing, unreadable or non-regular file is a
        :class:`ConfigError` naming the path; a symlink, or a file others may
        read, is a :class:`KeyAccessError`."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise ConfigError(f"key file {self.path} does not exist") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeyAccessError(f"key file {self.path} is a symlink (refused)") from None
            raise ConfigError(f"cannot read key file {self.path}: {exc.strerror}") from None
        text = b""
        try:
            mode = os.fstat(fd).st_mode
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
        return Keyring.from_document(text, f"key file {self.path}")

    def save(self, keyring: Keyring) -> None:
        """Atomically replace the key file with ``keyring`` (mode 0600)."""
        write_key_file(self.path, keyring)


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
    """Write ``keyring`` to ``path`` atomically, created with mode 0600, fsynced."""
    import json

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
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
        if spec.startswith("file://"):
            parts = urlsplit(spec)
            if parts.netloc not in ("", "localhost") or parts.query:
                raise ConfigError("key source must be file:///absolute/path (no host, no query)")
            return FileKeySource(unquote(parts.path))
        if spec.strip() and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", spec):
            return FileKeySource(spec)
        raise ConfigError(
            "key source must be a KeySource, a Keyring, 'file:///absolute/path.json' or a path"
        )
    kind = type(spec).__name__
    raise ConfigError(f"key source must be a KeySource or a key file URL, got {kind}")
