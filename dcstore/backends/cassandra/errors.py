"""The one place where cassandra-driver's exceptions become dcstore errors.

* Not enough replicas (``Unavailable``), server-side read/write timeouts, client
  timeouts (``OperationTimedOut``), ``NoHostAvailable``, lost connections, coordinator
  failures, overloaded or bootstrapping nodes and server errors:
  :class:`BackendUnavailableError` (retried by :class:`dcstore.retry.RetryingBackend`).
* Failed authentication and missing permissions: :class:`KeyAccessError`.
* TLS handshake failures (untrusted certificate, wrong host name): :class:`ConfigError`.
* Invalid requests and schema problems (a missing keyspace when ``create_keyspace``
  is off, bad replication options such as an unknown data centre): :class:`ConfigError`.
* Contact points that do not resolve: :class:`BackendUnavailableError`, as HDFS and
  MongoDB report an unknown host.
* Anything else from the driver: :class:`DcstoreError`.

Messages name the URL (never a password) and the key.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractContextManager

import cassandra
from cassandra import protocol
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from dcstore.backends.error_map import mapped_errors
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    KeyAccessError,
    driver_detail,
)

TRANSIENT: tuple[type[BaseException], ...] = (
    cassandra.Unavailable,
    cassandra.Timeout,  # ReadTimeout, WriteTimeout (including CAS write timeouts)
    cassandra.OperationTimedOut,
    cassandra.CoordinationFailure,  # ReadFailure, WriteFailure
    ConnectionException,
    protocol.ServerError,
    protocol.OverloadedErrorMessage,
    protocol.IsBootstrappingErrorMessage,
    protocol.TruncateError,
    ConnectionError,
    TimeoutError,
)
ACCESS: tuple[type[BaseException], ...] = (cassandra.AuthenticationFailed, cassandra.Unauthorized)


def _no_host_cause(exc: NoHostAvailable) -> BaseException | None:
    """The common cause when every host failed the same way (e.g. bad credentials)."""
    causes: list[BaseException] = list((exc.errors or {}).values())
    if causes and all(isinstance(c, ACCESS) for c in causes):
        return causes[0]
    if causes and all(_is_tls_failure(c) for c in causes):
        return causes[0]
    return None


def _is_tls_failure(exc: BaseException) -> bool:
    # The driver re-raises handshake failures as a plain OSError naming the SSL error.
    return isinstance(exc, ssl.SSLError) or "[SSL" in str(exc)


def classify(exc: Exception) -> tuple[type[DcstoreError], str] | None:
    """The dcstore error class and detail for a cassandra-driver exception (else None)."""
    if isinstance(exc, NoHostAvailable):
        cause = _no_host_cause(exc)
        if isinstance(cause, ACCESS):
            return KeyAccessError, f"access denied ({driver_detail(cause)})"
        if cause is not None:
            return ConfigError, f"TLS handshake failed ({driver_detail(cause)})"
        return BackendUnavailableError, f"Cassandra unavailable ({driver_detail(exc)})"
    if isinstance(exc, ACCESS):
        return KeyAccessError, f"access denied ({driver_detail(exc)})"
    if isinstance(exc, TRANSIENT):
        return BackendUnavailableError, f"Cassandra unavailable ({driver_detail(exc)})"
    if isinstance(exc, cassandra.UnresolvableContactPoints):  # as HDFS and MongoDB say it
        return BackendUnavailableError, "Cassandra unavailable (no contact point resolves)"
    if isinstance(exc, (cassandra.RequestValidationException, protocol.RequestValidationException)):
        # invalid requests, and a keyspace's replication the cluster refuses (the server's
        # ConfigurationException, not the driver's class of that name)
        return ConfigError, f"rejected by Cassandra ({driver_detail(exc)})"
    if isinstance(exc, (cassandra.DriverException, protocol.ErrorMessage)):
        return DcstoreError, f"Cassandra error ({driver_detail(exc)})"
    return None


def map_errors(url: str, op: str, key: str = "") -> AbstractContextManager[None]:
    """Translate cassandra-driver exceptions raised inside the block (``raise ... from exc``)."""
    return mapped_errors(url, op, key, classify)
