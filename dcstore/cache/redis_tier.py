"""The shared tier: Redis (standalone, TLS, or Redis Cluster) through redis-py + hiredis.

URLs::

    redis://[[user]:password@]host[:port][/db][?options]
    rediss://...                         TLS (ca_file, cert_file, key_file, tls_verify)
    redis+cluster://h1:p1,h2:p2[?options]  Redis Cluster (any reachable nodes seed it)
    rediss+cluster://...                 Redis Cluster over TLS

Options: ``namespace`` (key prefix, default ``dcstore``), ``password_file``
(read when connecting, never pickled), ``socket_timeout`` (s, default 2),
``connect_timeout`` (s, default 1), the TLS options above, and the
:class:`~dcstore.cache.tier.CachePolicy` options (``chunk_bytes``,
``max_object_bytes``, ``ttl``, ``single_flight``, ``lease_ttl``,
``wait_timeout``, ``retry_interval``, ``stats_interval``).

Keys: ``<namespace>:{<object digest>}:<chunk>`` for chunks (the hash tag keeps
an object's chunks in one cluster slot, so one MGET fetches them),
``<namespace>:{<digest>}:lease:<chunk>`` for single-flight leases and ``<namespace>:stats``
(a hash) for the shared counters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dcstore.backends.base import Buffer
from dcstore.backends.options import Options, ParsedUrl
from dcstore.cache.endpoints import check_namespace, check_timeouts, parse_host, query_string
from dcstore.cache.network_tier import NetworkTier, library_dirs
from dcstore.cache.resp import reply_capacity
from dcstore.cache.tier import STAT_FIELDS, CachePolicy, MiB
from dcstore.errors import ConfigError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.exceptions import RedisClusterException
    from redis.retry import Retry

    from dcstore.cache.redis_io import mget_into, set_values
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError("the redis cache tier needs redis-py: pip install 'dcstore[redis]'") from exc

SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
MGET_BYTES = 16 * MiB
"""Chunks fetched per MGET round trip (in bytes): large enough to amortise the
round trip, small enough to bound the server's reply buffer per client."""


_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then n = n + redis.call('del', key) end
end
return n
"""


class RedisTier(NetworkTier):
    """Chunks, leases and statistics in Redis; see the module docstring for URLs."""

    FAULTS = (redis.RedisError, RedisClusterException, OSError)
    LIBRARIES = library_dirs(redis)
    """Any other exception raised inside redis-py is a fault too: a server answering the
    handshake (HELLO) with ``+OK`` made redis-py 8 raise ``AttributeError`` in its
    connect (see :meth:`NetworkTier._raised_by_client` for the boundary)."""
    TRANSIENT = (*NetworkTier.TRANSIENT, "_release")  # a password from a file is not held
    slice_ratio = 1
    """GETRANGE moves only the bytes asked for, so any read short of its covering chunks
    is read as slices: an encrypted segment (not aligned to the chunks) moves once, not
    as the two whole chunks it straddles (measured: an encrypted dataset's cached epochs
    +20-25 %, pyarrow's encrypted reads through ``dcstore://`` -30 % time)."""

    def __init__(
        self,
        hosts: Sequence[tuple[str, int]] = (("127.0.0.1", 6379),),
        *,
        db: int = 0,
        cluster: bool = False,
        tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        password_file: str | None = None,
        namespace: str = "dcstore",
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls_verify: bool = True,
        policy: CachePolicy | None = None,
    ):
        if not hosts:
            raise ConfigError("a redis cache URL needs at least one host")
        if not cluster and len(hosts) != 1:
            raise ConfigError("several redis hosts need the redis+cluster:// scheme")
        if cluster and db != 0:
            raise ConfigError("Redis Cluster has only database 0")
        check_timeouts("redis", socket_timeout=socket_timeout, connect_timeout=connect_timeout)
        if password and password_file:
            raise ConfigError("give the redis password in the URL or in password_file, not both")
        self.hosts = [(h, int(p)) for h, p in hosts]
        self.db, self.cluster, self.tls = db, cluster, tls
        self.username, self.password_file = username, password_file
        self._url_password = password
        self.namespace = check_namespace(namespace)
        self.socket_timeout, self.connect_timeout = socket_timeout, connect_timeout
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.tls_verify = tls_verify
        self.policy = policy or CachePolicy()
        if password_file:
            self._read_password()  # fail early on a bad path, as a ConfigError
        self._init_state()

    def _init_state(self) -> None:
        super()._init_state()
        self._release: Any = None

    @classmethod
    def from_url(cls, url: ParsedUrl, options: Options) -> RedisTier:
        if url.scheme not in SCHEMES:
            raise ConfigError(f"not a redis URL scheme: {url.scheme!r}")
        cluster = url.scheme.endswith("+cluster")
        path = url.path.strip("/")
        try:
            db = int(path) if path else 0
        except ValueError:
            raise ConfigError(f"redis database must be a number, got {path!r}") from None
        tier = cls(
            [parse_host(h, 6379, "redis") for h in url.hosts] or [("127.0.0.1", 6379)],
            db=db,
            cluster=cluster,
            tls=url.scheme.startswith("rediss"),
            username=url.username,
            password=url.password,
            password_file=options.text("password_file"),
            namespace=options.text("namespace", "dcstore") or "dcstore",
            socket_timeout=options.number("socket_timeout", 2.0),
            connect_timeout=options.number("connect_timeout", 1.0),
            ca_file=options.text("ca_file"),
            cert_file=options.text("cert_file"),
            key_file=options.text("key_file"),
            tls_verify=options.flag("tls_verify", True),
            policy=CachePolicy.from_options(options),
        )
        return tier

    @property
    def url(self) -> str:
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        user = f"{quote(self.username)}@" if self.username else ""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        query: dict[str, object | None] = dict(self.policy.query())
        query.update(
            {
                "namespace": None if self.namespace == "dcstore" else self.namespace,
                "password_file": self.password_file,
                "socket_timeout": None if self.socket_timeout == 2.0 else self.socket_timeout,
                "connect_timeout": None if self.connect_timeout == 1.0 else self.connect_timeout,
                "ca_file": self.ca_file,
                "cert_file": self.cert_file,
                "key_file": self.key_file,
                "tls_verify": None if self.tls_verify else "false",
            }
        )
        db = "" if self.cluster else f"/{self.db}"
        return f"{scheme}://{user}{hosts}{db}{query_string(query)}"

    # -- connections -----------------------------------------------------------------

    def _read_password(self) -> str:
        assert self.password_file is not None
        try:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the redis password file {self.password_file}: {exc.strerror}"
            ) from None

    def _connect(self) -> Any:
        password = self._read_password() if self.password_file else self._url_password
        kwargs: dict[str, Any] = {
            "username": self.username,
            "password": password,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            # one quick reconnect heals a pooled connection broken by a restart; a timeout
            # is not retried (a hung Redis then costs socket_timeout, not twice that);
            # longer outages are the circuit breaker's business
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        }
        if self.tls:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=self.ca_file,
                ssl_certfile=self.cert_file,
                ssl_keyfile=self.key_file,
                ssl_cert_reqs="required" if self.tls_verify else "none",
                ssl_check_hostname=self.tls_verify,
            )
        client: redis.Redis | RedisCluster
        if self.cluster:
            nodes = [ClusterNode(h, p) for h, p in self.hosts]  # type: ignore[no-untyped-call]
            client = RedisCluster(startup_nodes=nodes, **kwargs)
        else:
            host, port = self.hosts[0]
            client = redis.Redis(host=host, port=port, db=self.db, **kwargs)
        self._release = client.register_script(_RELEASE)
        return client

    def _redis(self) -> Any:
        return self._connection()

    def _misconfigured(self, exc: BaseException) -> str | None:
        if isinstance(exc, redis.ResponseError) and "DB index is out of range" in str(exc):
            return f"the server has no database {self.db} (its 'databases' setting)"
        return None

    def _full(self, exc: BaseException) -> bool:
        return isinstance(exc, redis.OutOfMemoryError)

    def _explain(self, exc: BaseException) -> str | None:
        """An authentication failure names where the password came from (never the
        password): redis' own message without one is about HELLO, not the URL."""
        if not isinstance(exc, redis.AuthenticationError):
            return None
        if not self.password_file and not self._url_password:
            return (
                "the server requires a password: give one in the URL "
                "(redis://[user]:PASSWORD@host) or password_file=<file>"
            )
        source = f"password_file {self.password_file}" if self.password_file else "the URL"
        user = f" (user {self.username})" if self.username else ""
        reply = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"the server refused the password from {source}{user}: {reply}"

    def _on_fault(self) -> None:
        self._client = None  # reconnect (and re-discover a cluster) next time

    # -- the tier contract -----------------------------------------------------------

    def get_many(self, keys: Sequence[str], sizes: Sequence[int]) -> list[Buffer | None]:
        """MGETs of at most :data:`MGET_BYTES` each, received in place (:mod:`.resp`)
        into this thread's reused buffer."""
        full = [self.key(k) for k in keys]
        buf = self._buffers.get(reply_capacity(sizes) + 8 * len(sizes))  # + a header per batch
        step = max(1, MGET_BYTES // self.policy.chunk_bytes)
        view = memoryview(buf)
        out: list[Buffer | None] = []
        pos = 0
        with self._errors("MGET"):
            client = self._redis()
            for i in range(0, len(full), step):
                batch, batch_sizes = full[i : i + step], sizes[i : i + step]
                got = mget_into(client, self.cluster, batch, buf, pos, batch_sizes)
                if got is None:
                    return self._mget_slow(client, full, sizes)
                offsets, pos = got
                out.extend(None if o is None else view[o : o + n] for o, n in offsets)
        return out

    def _mget_slow(self, client: Any, keys: list[str], sizes: Sequence[int]) -> list[Buffer | None]:
        """MGET through redis-py (follows cluster redirects and refreshes the slot map)."""
        values = _bulk_replies(client.execute_command("MGET", *keys), len(keys), "MGET")
        return [
            v if v is not None and len(v) == n else None for v, n in zip(values, sizes, strict=True)
        ]

    def get_slices(self, items: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """One pipelined GETRANGE per chunk: only the requested bytes cross the wire."""
        with self._errors("GETRANGE"):
            pipe = self._redis().pipeline(transaction=False)
            for key, start, end in items:
                pipe.getrange(self.key(key), start, end - 1)
            values = _bulk_replies(pipe.execute(), len(items), "GETRANGE")
        # a missing key reads as b"": never a valid answer, since end > start
        return [v if v else None for v in values]

    def set_many(self, items: Sequence[tuple[str, Buffer]]) -> None:
        ttl = self.policy.ttl
        px = None if ttl is None else max(1, int(ttl * 1000))
        if not items:
            return
        with self._errors("SET"):
            full = [(self.key(k), v) for k, v in items]
            set_values(self._redis(), self.cluster, full, px)

    def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with self._errors("UNLINK"):
            pipe = self._redis().pipeline(transaction=False)
            for key in keys:
                pipe.unlink(self.key(key))
            pipe.execute()

    def try_leases(self, keys: Sequence[str], token: str, ttl: float) -> list[bool]:
        px = max(1, int(ttl * 1000))
        with self._errors("lease"):
            pipe = self._redis().pipeline(transaction=False)
            for key in keys:
                pipe.set(self.key(key), token, nx=True, px=px)
            return [bool(r) for r in pipe.execute()]

    def leases_held(self, keys: Sequence[str]) -> bool:
        with self._errors("lease check"):
            return bool(self._redis().exists(*[self.key(k) for k in keys]))

    def release_leases(self, keys: Sequence[str], token: str) -> None:
        with self._errors("lease release"):
            self._redis()
            self._release(keys=[self.key(k) for k in keys], args=[token])

    def add_stats(self, counts: Mapping[str, int]) -> None:
        nonzero = {k: v for k, v in counts.items() if v}
        if not nonzero:
            return
        with self._errors("stats"):
            pipe = self._redis().pipeline(transaction=False)
            for name, value in nonzero.items():
                pipe.hincrby(self.key("stats"), name, value)
            pipe.execute()

    def read_stats(self) -> dict[str, int]:
        with self._errors("stats"):
            raw = self._redis().hgetall(self.key("stats"))
            try:
                values = {k.decode(): int(v) for k, v in raw.items()}
            except ValueError as exc:  # written by something else: a fault of the tier
                raise redis.DataError(f"a counter is not a number: {exc}") from exc
        return {name: values.get(name, 0) for name in STAT_FIELDS}

    def server_info(self) -> dict[str, Any]:
        """Memory and eviction figures of the server(s), summed over cluster nodes."""
        with self._errors("INFO"):
            client = self._redis()
            if self.cluster:
                nodes = list(client.info(target_nodes=RedisCluster.PRIMARIES).values())
            else:
                nodes = [client.info()]
            try:
                policy_name = client.config_get("maxmemory-policy").get(
                    "maxmemory-policy", "unknown"
                )
            except redis.ResponseError:  # CONFIG disabled (managed services)
                policy_name = "unknown"
        total = {
            name: sum(int(n.get(name, 0)) for n in nodes if isinstance(n, dict))
            for name in ("used_memory", "maxmemory", "evicted_keys")
        }
        return {**total, "maxmemory_policy": policy_name, "nodes": len(nodes)}

    def clear(self) -> int:
        count = 0
        with self._errors("clear"):
            client = self._redis()
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.namespace}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    count += self._unlink(client, batch)
                    batch = []
            count += self._unlink(client, batch)
        return count

    @staticmethod
    def _unlink(client: Any, keys: list[bytes]) -> int:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.unlink(key)
        return sum(int(n) for n in pipe.execute())


def _bulk_replies(values: Any, count: int, command: str) -> list[Any]:
    """``values`` if it is ``count`` replies, each bytes or nil; else a ``ResponseError``
    (a fault of the server, as any other): a server answering not as the protocol says
    made the read fail (``zip()`` lengths, ``len()`` of an integer)."""
    if not isinstance(values, list) or len(values) != count:  # never the values: data
        got = f"{len(values)} replies" if isinstance(values, list) else type(values).__name__
        raise redis.ResponseError(f"{command}: {count} replies expected, got {got}")
    for value in values:
        if value is not None and not isinstance(value, bytes | bytearray | memoryview):
            raise redis.ResponseError(
                f"{command}: a bulk string expected, got {type(value).__name__}"
            )
    return values
