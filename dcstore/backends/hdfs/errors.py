"""How hdfs-native's exceptions map onto the dcstore error tree (used by the HDFS backend).

The driver raises Python builtins for some failures and ``HdfsError`` with a Rust
variant name (or a remote Java exception class inside ``RPCError(...)``) for the
rest; :func:`classify_error` turns either into a dcstore error class and a one-line
message.
"""

from __future__ import annotations

import re

from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    IntegrityError,
    KeyAccessError,
    NotFoundError,
    StorageFullError,
)

_RPC_ERROR = re.compile(r'RPCError\("([^"]+)", "(.*)', re.DOTALL)
_VARIANT = re.compile(r"^([A-Za-z]+)\(")

#: Remote (Java) exception classes, last dotted part, by the dcstore error they become.
_REMOTE: dict[str, type[DcstoreError]] = {
    "FileNotFoundException": NotFoundError,
    "PathIsDirectoryException": NotFoundError,
    "AccessControlException": KeyAccessError,
    "AuthorizationException": KeyAccessError,
    "InvalidToken": KeyAccessError,
    "DSQuotaExceededException": StorageFullError,
    "NSQuotaExceededException": StorageFullError,
    "QuotaExceededException": StorageFullError,
    "SafeModeException": BackendUnavailableError,
    "StandbyException": BackendUnavailableError,
    "RetriableException": BackendUnavailableError,
    "ObserverRetryOnActiveException": BackendUnavailableError,
    "ServerTooBusyException": BackendUnavailableError,
    "CallQueueOverflowException": BackendUnavailableError,
    "ConnectTimeoutException": BackendUnavailableError,
    "NotReplicatedYetException": BackendUnavailableError,
}
#: Driver (hdfs-native ``HdfsError``) variants that are not remote exceptions.
_DRIVER: dict[str, type[DcstoreError]] = {
    "IOError": BackendUnavailableError,
    "DataTransferError": BackendUnavailableError,
    "BlocksNotFound": BackendUnavailableError,
    "OperationFailed": BackendUnavailableError,
    "InvalidRPCResponse": BackendUnavailableError,
    "FatalRPCError": BackendUnavailableError,
    "ChecksumError": IntegrityError,
    "InvalidPath": ConfigError,
    "InvalidArgument": ConfigError,
    "UrlParseError": ConfigError,
    "XmlParseError": ConfigError,
    "UnsupportedFeature": ConfigError,
    "UnsupportedErasureCodingPolicy": ConfigError,
    "SASLError": KeyAccessError,
    "GSSAPIError": KeyAccessError,
    "NoSASLMechanism": KeyAccessError,
}
#: Messages of otherwise generic remote IOExceptions that mean "not enough DataNodes now".
_TRANSIENT_TEXT = ("could only be written to", "could only be replicated to", "safe mode")


def remote_error(exc: BaseException) -> tuple[str, str]:
    """(short Java class, first message line) of a driver RPC error, else (variant, text)."""
    text = str(exc)
    match = _RPC_ERROR.search(text)
    if match:
        cls = match.group(1).rsplit(".", 1)[-1].split("$")[-1]
        message = match.group(2).split("\\n", 1)[0].split("\n", 1)[0]
        return cls, message.removesuffix('")')
    variant = _VARIANT.match(text)
    return (variant.group(1) if variant else ""), text.split("\n", 1)[0]


def classify_error(exc: Exception) -> tuple[type[DcstoreError], str]:
    """The dcstore error class for a driver exception, and a one-line description."""
    name, message = remote_error(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError)):
        return NotFoundError, "not found"
    if isinstance(exc, PermissionError):
        return KeyAccessError, f"permission denied: {message}"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return BackendUnavailableError, message
    if isinstance(exc, ValueError):
        return ConfigError, message
    described = f"{name}: {message}" if name and not message.startswith(name) else message
    if name == "AccessControlException" and message.endswith("(is not a directory)"):
        return NotFoundError, f"not found ({message})"  # a path through an object
    if name in _REMOTE:
        return _REMOTE[name], described
    if name in _DRIVER:
        return _DRIVER[name], described
    if any(text in message for text in _TRANSIENT_TEXT):
        return BackendUnavailableError, described
    if name in ("ParentNotDirectoryException", "PathIsNotEmptyDirectoryException"):
        return DcstoreError, f"{described} (on HDFS a key cannot also be a prefix of other keys)"
    if isinstance(exc, OSError):  # socket-level failures (reset, refused, unreachable)
        return BackendUnavailableError, described
    return DcstoreError, described
