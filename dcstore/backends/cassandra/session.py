"""One process's connection to Cassandra for the ``cassandra://`` backend.

:func:`connect` builds the driver ``Cluster`` (token-aware, DC-aware routing; the
configured consistency, timeouts, credentials and TLS) and prepares every statement
if the keyspace and tables exist; :meth:`Session.create_schema` creates them (the
first write does: a read, a listing or a delete never changes the cluster's schema).
:class:`Session` runs the statements:

* every request of the backend, from any thread, passes one bounded semaphore
  (``max_in_flight``), so many threads reading large objects cannot pile hundreds of
  1 MiB responses onto one connection and one server. Measured (bench/results/
  cassandra.md): 16 threads x 16 requests made the server run out of direct memory or
  the clients time out; a backend-wide limit of 64 read 2-3x slower than 16 at 4 and
  16 threads;
* :meth:`Session.window` pipelines one call's requests in order, within that limit;
* requests the driver refuses because the socket buffer is full (``ConnectionBusy``,
  raised before anything is sent) are sent again once earlier ones drain.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from cassandra import InvalidRequest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    ResultSet,
)
from cassandra.cluster import Session as DriverSession
from cassandra.connection import ConnectionBusy
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import ServerError
from cassandra.query import PreparedStatement, tuple_factory
from dcstore.backends.cassandra import schema
from dcstore.backends.cassandra.settings import CassandraSettings
from dcstore.errors import ConfigError

log = logging.getLogger(__name__)

LIST_PAGE = 1000
DDL_TIMEOUT = 120.0
LWT = ("create", "replace", "remove")
WRITES = ("chunk_put", "part_drop", "intent_put", "intent_drop")


class Session:
    """Cluster, driver session and prepared statements of one process."""

    def __init__(
        self,
        cluster: Cluster,
        session: DriverSession,
        stmts: dict[str, PreparedStatement],
        settings: CassandraSettings,
        url: str,
    ):
        self.pid = os.getpid()
        self.cluster = cluster
        self.session = session
        self.stmts = stmts
        """Empty while the keyspace or its tables do not exist (see :meth:`create_schema`)."""
        self.settings, self.url = settings, url
        self._schema_lock = threading.Lock()
        self.request_timeout = settings.request_timeout
        self.limit = settings.max_in_flight
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)

    def submit(self, name: str, params: Any) -> tuple[str, Any, ResponseFuture]:
        """Send ``name`` once a slot is free; the slot returns when the response arrives."""
        self._slots.acquire()
        try:
            future = self.session.execute_async(self.stmts[name], params)
        except BaseException:
            self._slots.release()
            raise
        released = threading.Lock()

        def release(_: Any) -> None:
            if released.acquire(blocking=False):  # exactly once, whatever the driver calls
                self._slots.release()

        future.add_callbacks(release, release)
        return name, params, future

    def settle(self, pending: tuple[str, Any, ResponseFuture]) -> ResultSet:
        """The result of a submitted request; resend it while the socket buffer is full."""
        name, params, future = pending
        deadline = time.monotonic() + self.request_timeout
        delay = 0.001
        while True:
            try:
                return future.result()
            except NoHostAvailable as exc:
                errors = list((exc.errors or {}).values())
                if not errors or not all(isinstance(e, ConnectionBusy) for e in errors):
                    raise
                if time.monotonic() > deadline:
                    raise
                for error in (exc, *errors):  # retried: tracebacks would keep frames alive
                    error.__traceback__ = None
            finally:
                _forget(future)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            future = self.submit(name, params)[2]

    def found_schema(self) -> bool:
        """Whether the tables exist now (asked of the cluster, not its cached metadata,
        which learns of another client's new tables only later); if so, prepares the
        statements. A store read before its first write asks this on each call.

        Tables listed while another client still creates them cannot be prepared yet
        (the server says the table does not exist, or 'Unknown CF'): that is still
        "not yet", and no write can have been made to them."""
        rows = self.session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (self.settings.keyspace,),
            timeout=self.request_timeout,
        )
        names = {row[0] for row in rows}
        if not all(name in names for name in (schema.OBJECTS, schema.CHUNKS, schema.UPLOADS)):
            return False
        with self._schema_lock:
            if not self.stmts:
                try:
                    self.stmts = _prepare(self.settings, self.session)
                except (InvalidRequest, NoHostAvailable) as exc:
                    if not _still_being_created(exc):
                        raise
                    return False
        return True

    def create_schema(self) -> None:
        """Create the keyspace and tables if missing and prepare the statements (once);
        while another client's creation of the same tables settles, prepare again."""
        with self._schema_lock:
            if self.stmts:
                return
            _ensure_schema(self.settings, self.url, self.cluster, self.session)
            deadline = time.monotonic() + DDL_TIMEOUT
            while True:
                try:
                    self.stmts = _prepare(self.settings, self.session)
                    return
                except (InvalidRequest, NoHostAvailable) as exc:
                    if not _still_being_created(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(0.05)

    def run(self, name: str, params: Any) -> ResultSet:
        return self.settle(self.submit(name, params))

    def window(self, name: str, params: Iterable[Any]) -> Iterator[ResultSet]:
        """Results of ``name`` for each parameter tuple, in order, pipelined."""
        pending: deque[tuple[str, Any, ResponseFuture]] = deque()
        for p in params:
            if len(pending) >= self.limit:
                yield self.settle(pending.popleft())
            pending.append(self.submit(name, p))
        while pending:
            yield self.settle(pending.popleft())

    def close(self) -> None:
        if self.pid == os.getpid():
            self.cluster.shutdown()


def _still_being_created(exc: Exception) -> bool:
    """Whether preparing failed only because a table is still being created: the server
    answers "table ... does not exist" (InvalidRequest) or, a moment later, a server
    error "Unknown CF <id>" (seen against Cassandra 5 by a reader that lists the tables
    while another client creates them)."""
    if isinstance(exc, InvalidRequest):
        return "does not exist" in str(exc) or "unconfigured table" in str(exc)
    errors = list((getattr(exc, "errors", None) or {}).values())
    return bool(errors) and all(
        isinstance(e, ServerError) and "Unknown CF" in str(e) for e in errors
    )


def _forget(future: ResponseFuture) -> None:
    """Break the cycle between a finished request and its timeout timer (cassandra-driver
    3.29: ``future._timer.callback`` is ``future._on_timeout``; a refused request's
    exception traceback is another). Only the cyclic garbage collector frees such a
    request, with its parameters and result: streaming 256 MiB in fresh 1 MiB chunks
    kept ~160 of them alive (+160 MiB RSS)."""
    if getattr(future, "_timer", None) is not None:
        future._timer = None


def connect(settings: CassandraSettings, url: str) -> Session:
    """Open the cluster and prepare the statements if the schema exists (a missing
    keyspace is a :class:`ConfigError` with ``create_keyspace=false``)."""
    s = settings
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=s.local_dc)),
        consistency_level=s.read_cl,
        serial_consistency_level=s.serial_cl,
        request_timeout=s.request_timeout,
        row_factory=tuple_factory,
    )
    auth = PlainTextAuthProvider(s.username, s.secret()) if s.username else None
    ssl_options = {"server_hostname": s.tls_server_hostname} if s.tls_server_hostname else None
    cluster = Cluster(
        contact_points=list(s.hosts),
        port=s.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        ssl_context=s.ssl_context(),
        ssl_options=ssl_options,
        connect_timeout=s.connect_timeout,
        control_connection_timeout=s.connect_timeout,
        compression=s.compression,
        protocol_version=s.protocol_version,
    )
    try:
        session = cluster.connect()
        stmts = _prepare(s, session) if _has_schema(s, url, cluster) else {}
    except BaseException:
        cluster.shutdown()
        raise
    return Session(cluster, session, stmts, s, url)


def _has_schema(s: CassandraSettings, url: str, cluster: Cluster) -> bool:
    meta = cluster.metadata.keyspaces.get(s.keyspace)
    if meta is None and not s.create_keyspace:
        raise ConfigError(f"{url}: keyspace {s.keyspace!r} does not exist")
    names = (schema.OBJECTS, schema.CHUNKS, schema.UPLOADS)
    return meta is not None and all(name in meta.tables for name in names)


def _ensure_schema(s: CassandraSettings, url: str, cluster: Cluster, session: Any) -> None:
    meta = cluster.metadata.keyspaces.get(s.keyspace)
    if meta is None:
        if not s.create_keyspace:
            raise ConfigError(f"{url}: keyspace {s.keyspace!r} does not exist")
        local_dc = s.local_dc or _contact_dc(session)
        nodes = sum(1 for h in cluster.metadata.all_hosts() if h.datacenter == local_dc)
        factor = s.replication_factor or max(1, min(3, nodes))
        replication = schema.replication_map(s.replication, factor, local_dc)
        log.info("%s: creating keyspace with replication %s", url, replication)
        session.execute(schema.keyspace_cql(s.keyspace, replication), timeout=DDL_TIMEOUT)
        meta = cluster.metadata.keyspaces.get(s.keyspace)
    tables = meta.tables if meta is not None else {}
    names = (schema.OBJECTS, schema.CHUNKS, schema.UPLOADS)
    for cql, name in zip(schema.tables_cql(s.keyspace), names, strict=True):
        if name not in tables:
            session.execute(cql, timeout=DDL_TIMEOUT)


def _prepare(s: CassandraSettings, session: Any) -> dict[str, PreparedStatement]:
    statements = schema.statements_cql(s.keyspace)
    stmts = {}
    for name, cql in statements.items():
        stmt = session.prepare(cql)
        stmt.consistency_level = s.write_cl if name in LWT + WRITES else s.read_cl
        stmt.is_idempotent = name not in LWT
        if name.startswith("list") or name == "intents_all":
            stmt.fetch_size = LIST_PAGE
        stmts[name] = stmt
    serial = session.prepare(statements["head"])
    serial.consistency_level = s.serial_cl  # a Paxos read: sees any in-progress commit
    serial.is_idempotent = True
    stmts["head_serial"] = serial
    return stmts


def _contact_dc(session: Any) -> str:
    for host in session.hosts:
        if host.datacenter:
            return str(host.datacenter)
    raise ConfigError("cannot tell the local data centre; pass local_dc=")
