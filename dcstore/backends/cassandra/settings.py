"""Settings of the ``cassandra://`` backend: URL options, defaults, and the URL without secrets.

URL: ``cassandra://[user@]host1,host2[:port]/KEYSPACE[/ROOT/PREFIX]?option=value&...``
(the password is never part of a URL: pass ``password=`` as a keyword option).

=====================  ===============  =====================================================
option                 default          meaning
=====================  ===============  =====================================================
consistency            LOCAL_QUORUM     reads and writes (``read_consistency`` /
                                        ``write_consistency`` override one side)
serial_consistency     LOCAL_SERIAL     the commit (a lightweight transaction)
chunk_size             1048576          bytes per chunk cell (new writes only)
part_chunks            16               chunks per partition (new writes only)
max_in_flight          16               chunk requests in flight per backend (all its
                                        threads together; one call may use them all)
create_keyspace        true             the first write creates keyspace and tables
replication            (none)           ``dc1:3,dc2:3`` or ``simple:N`` for a new keyspace
replication_factor     min(3, nodes)    replicas in ``local_dc`` for a new keyspace
local_dc               (contact DC)     data centre for LOCAL_* levels and routing
username / password    (none)           PlainTextAuthProvider credentials (``password`` as a
                                        keyword option; never in a URL)
password_file          (none)           file holding the password, read at connect time
tls                    false            TLS to the native port; ``tls_ca``, ``tls_cert``,
                                        ``tls_key``, ``tls_verify`` (true),
                                        ``tls_server_hostname``
connect_timeout        10               seconds
request_timeout        30               seconds per request
compression            false            native-protocol compression (needs lz4)
protocol_version       4                native protocol; 4 works with Cassandra 2.2-5.x and is
                                        2-4x faster than 5 for 1 MiB cells in cassandra-driver
                                        3.29/3.30 (its v5 framing copies and checksums in Python)
abandon_after          3600             seconds without a heartbeat after which an
                                        unfinished write is abandoned (and swept)
=====================  ===============  =====================================================
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from dcstore.backends.cassandra.schema import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PART_CHUNKS,
    MAX_CHUNK_SIZE,
    check_identifier,
    parse_consistency,
)
from dcstore.backends.keys import validate_prefix
from dcstore.backends.options import Options, ParsedUrl
from dcstore.errors import ConfigError

DEFAULT_PORT = 9042


@dataclass(frozen=True)
class CassandraSettings:
    """Everything needed to (re)open a Cassandra backend; pickles with the backend."""

    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = DEFAULT_PORT
    keyspace: str = "dcstore"
    root: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    consistency: str = "LOCAL_QUORUM"
    read_consistency: str | None = None
    write_consistency: str | None = None
    serial_consistency: str = "LOCAL_SERIAL"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    part_chunks: int = DEFAULT_PART_CHUNKS
    max_in_flight: int = 16
    create_keyspace: bool = True
    replication: str | None = None
    replication_factor: int | None = None
    local_dc: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    tls_server_hostname: str | None = None
    connect_timeout: float = 10.0
    request_timeout: float = 30.0
    compression: bool = False
    protocol_version: int = 4
    abandon_after: float = 3600.0

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ConfigError("cassandra:// URL needs at least one host")
        check_identifier(self.keyspace, "keyspace")
        if self.local_dc is not None:
            check_identifier(self.local_dc, "local_dc")
        if self.root:
            if not self.root.endswith("/"):
                raise ConfigError(f"root prefix {self.root!r} must end with '/'")
            validate_prefix(self.root)
        for what in ("consistency", "read_consistency", "write_consistency", "serial_consistency"):
            value = getattr(self, what)
            if value is not None:
                parse_consistency(value, what)
        if not 4096 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(f"chunk_size must be 4 KiB..8 MiB, got {self.chunk_size}")
        if not 1 <= self.part_chunks <= 1024:
            raise ConfigError(f"part_chunks must be 1..1024, got {self.part_chunks}")
        if not 1 <= self.max_in_flight <= 1024:
            raise ConfigError(f"max_in_flight must be 1..1024, got {self.max_in_flight}")
        if self.protocol_version not in (3, 4, 5):
            raise ConfigError(f"protocol_version must be 3, 4 or 5, got {self.protocol_version}")
        if self.abandon_after <= 0:
            raise ConfigError("abandon_after must be positive (seconds)")

    # -- derived ---------------------------------------------------------------------------

    @property
    def read_cl(self) -> int:
        return parse_consistency(self.read_consistency or self.consistency, "read_consistency")

    @property
    def write_cl(self) -> int:
        return parse_consistency(self.write_consistency or self.consistency, "write_consistency")

    @property
    def serial_cl(self) -> int:
        return parse_consistency(self.serial_consistency, "serial_consistency")

    def secret(self) -> str:
        """The password: given directly, or the first line of ``password_file``."""
        if self.password is not None:
            return self.password
        if self.password_file is None:
            return ""
        try:
            with open(self.password_file, encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read password_file {self.password_file!r}: {exc}") from exc

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca)
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    @property
    def url(self) -> str:
        """The URL that reopens these settings (non-default options only, never the password)."""
        query: dict[str, Any] = {}
        defaults = CassandraSettings()
        for f in dataclasses.fields(self):
            if f.name in ("hosts", "port", "keyspace", "root", "username", "password"):
                continue
            value = getattr(self, f.name)
            if value != getattr(defaults, f.name):
                query[f.name] = str(value).lower() if isinstance(value, bool) else value
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        path = quote(f"/{self.keyspace}/{self.root}".rstrip("/"))
        qs = f"?{urlencode(query)}" if query else ""
        return f"cassandra://{user}{','.join(self.hosts)}:{self.port}{path}{qs}"

    # -- parsing ---------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> CassandraSettings:
        hosts, port = _hosts_and_port(url.hosts)
        keyspace, _, root = url.path.strip("/").partition("/")
        d = cls()
        timeout = options.number("connect_timeout", d.connect_timeout)
        return cls(
            hosts=hosts,
            port=port,
            keyspace=keyspace or d.keyspace,
            root=f"{root}/" if root else "",
            username=options.text("username", url.username),
            password=options.text("password", url.password),
            password_file=options.text("password_file"),
            consistency=options.text("consistency", d.consistency) or d.consistency,
            read_consistency=options.text("read_consistency"),
            write_consistency=options.text("write_consistency"),
            serial_consistency=options.text("serial_consistency", d.serial_consistency)
            or d.serial_consistency,
            chunk_size=options.size("chunk_size", d.chunk_size),
            part_chunks=options.integer("part_chunks", d.part_chunks),
            max_in_flight=options.integer("max_in_flight", d.max_in_flight),
            create_keyspace=options.flag("create_keyspace", d.create_keyspace),
            replication=options.text("replication"),
            replication_factor=_opt_int(options.raw("replication_factor")),
            local_dc=options.text("local_dc"),
            tls=options.flag("tls", d.tls),
            tls_ca=options.text("tls_ca"),
            tls_cert=options.text("tls_cert"),
            tls_key=options.text("tls_key"),
            tls_verify=options.flag("tls_verify", d.tls_verify),
            tls_server_hostname=options.text("tls_server_hostname"),
            connect_timeout=timeout,
            request_timeout=options.number("request_timeout", d.request_timeout),
            compression=options.flag("compression", d.compression),
            protocol_version=options.integer("protocol_version", d.protocol_version),
            abandon_after=options.number("abandon_after", d.abandon_after),
        )


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"replication_factor must be an integer, got {value!r}") from None


def _hosts_and_port(entries: list[str]) -> tuple[tuple[str, ...], int]:
    hosts: list[str] = []
    ports: set[int] = set()
    for entry in entries:
        host, sep, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if sep:
            try:
                ports.add(int(port))
            except ValueError:
                raise ConfigError(f"bad port in cassandra:// host {entry!r}") from None
        hosts.append(host)
    if len(ports) > 1:
        raise ConfigError("cassandra:// hosts must share one native port (host1,host2:9042)")
    return tuple(hosts), ports.pop() if ports else DEFAULT_PORT
