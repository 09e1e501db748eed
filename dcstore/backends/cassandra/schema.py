"""The Cassandra storage layout of dcstore: tables, CQL text and chunk arithmetic.

Three tables in the keyspace (format 1)::

    dcstore_objects  ((bucket), key)           version, size, chunk_size, part_chunks
    dcstore_chunks   ((version, part), idx)    data blob          -- compression off
    dcstore_uploads  ((bucket), key, version)  started, size, chunk_size, part_chunks

* ``dcstore_objects`` is the commit point: a key points at exactly one immutable
  version. ``bucket = crc32(key) % META_BUCKETS`` spreads the metadata over
  :data:`META_BUCKETS` partitions; ``key`` is the clustering column, so each
  bucket is sorted and ``list_objects`` merges the buckets lazily. The write time
  of a row's ``version`` cell (``WRITETIME``) is the object's ``modified``.
* ``dcstore_chunks`` holds a version's bytes in chunks of ``chunk_size`` bytes;
  chunk ``idx`` lives in partition ``(version, idx // part_chunks)``. With the
  defaults (1 MiB chunks, 16 per partition) a 1 GiB object is 64 partitions of
  16 MiB, spread over the ring, and deleting a version is one partition
  tombstone per 16 MiB. Both numbers are stored with each object, so changing
  them only affects new writes.
* ``dcstore_uploads`` is the intent log: a row per write in progress. A writer
  that dies leaves its row behind; the row names the chunks to reclaim: ``size`` is
  an upper bound of the bytes written (exact for ``put``; a partition ahead for a
  stream of unknown size) and ``started`` the writer's last heartbeat.
"""

# CQL text is built from validated identifiers only (check_identifier); values are bound.
# ruff: noqa: S608
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from cassandra import ConsistencyLevel
from dcstore.errors import ConfigError

MiB = 1 << 20
META_BUCKETS = 16
OBJECTS, CHUNKS, UPLOADS = "dcstore_objects", "dcstore_chunks", "dcstore_uploads"
DEFAULT_CHUNK_SIZE = MiB
DEFAULT_PART_CHUNKS = 16
MAX_CHUNK_SIZE = 8 * MiB  # stays well below Cassandra's 16 MiB mutation limit (32 MiB segments)

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def bucket_of(key: str) -> int:
    """The metadata partition of ``key`` (stable across processes and versions)."""
    return zlib.crc32(key.encode("utf-8")) % META_BUCKETS


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the bytes of one version live."""

    size: int
    chunk_size: int
    part_chunks: int

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    @property
    def parts(self) -> int:
        return -(-self.chunks // self.part_chunks)

    def chunk_len(self, idx: int) -> int:
        return min(self.chunk_size, self.size - idx * self.chunk_size)

    def part_of(self, idx: int) -> int:
        return idx // self.part_chunks


def check_identifier(name: str, what: str) -> str:
    """Keyspace and DC names go into CQL text: allow plain identifiers only."""
    if not _IDENT.match(name):
        raise ConfigError(f"{what} {name!r} must match {_IDENT.pattern}")
    return name


def parse_consistency(name: str, what: str) -> int:
    """``LOCAL_QUORUM`` / ``local_quorum`` -> the driver's ConsistencyLevel value."""
    value = ConsistencyLevel.name_to_value.get(name.upper())
    if value is None:
        accepted = ", ".join(sorted(ConsistencyLevel.name_to_value))
        raise ConfigError(f"{what} {name!r} is not a consistency level; accepted: {accepted}")
    return int(value)


def replication_map(spec: str | None, factor: int | None, local_dc: str) -> dict[str, str]:
    """The replication map for ``CREATE KEYSPACE``.

    ``spec`` is ``dc1:3,dc2:3`` (NetworkTopologyStrategy) or ``simple:N``
    (SimpleStrategy); otherwise NetworkTopologyStrategy with ``factor`` replicas
    in ``local_dc``.
    """
    if spec:
        if spec.lower().startswith("simple:"):
            return {"class": "SimpleStrategy", "replication_factor": str(_factor(spec[7:]))}
        out = {"class": "NetworkTopologyStrategy"}
        for item in spec.split(","):
            dc, sep, n = item.partition(":")
            if not sep:
                raise ConfigError(f"replication {spec!r}: expected dc1:3,dc2:3 or simple:N")
            out[check_identifier(dc.strip(), "data centre")] = str(_factor(n))
        return out
    return {"class": "NetworkTopologyStrategy", local_dc: str(_factor(str(factor)))}


def _factor(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"replication factor {text!r} is not an integer") from None
    if not 1 <= n <= 10:
        raise ConfigError(f"replication factor {n} must be between 1 and 10")
    return n


def keyspace_cql(keyspace: str, replication: dict[str, str]) -> str:
    items = ", ".join(f"'{k}': '{v}'" for k, v in replication.items())
    return f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{items}}}"


def tables_cql(keyspace: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{OBJECTS} ("
        " bucket int, key text, version uuid, size bigint, chunk_size int, part_chunks int,"
        " PRIMARY KEY ((bucket), key))",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{CHUNKS} ("
        " version uuid, part int, idx int, data blob,"
        " PRIMARY KEY ((version, part), idx))"
        " WITH compression = {'enabled': 'false'}",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{UPLOADS} ("
        " bucket int, key text, version uuid, started timestamp,"
        " size bigint, chunk_size int, part_chunks int,"
        " PRIMARY KEY ((bucket), key, version))",
    ]


def statements_cql(ks: str) -> dict[str, str]:
    """Every statement the backend prepares, by name."""
    cols = "version, size, chunk_size, part_chunks"
    # WRITETIME(version): the commit's timestamp (microseconds; a Paxos ballot's for LWTs).
    listed = "key, size, version, WRITETIME(version)"
    return {
        "head": f"SELECT {cols}, WRITETIME(version) FROM {ks}.{OBJECTS}"
        " WHERE bucket = ? AND key = ?",
        "list": f"SELECT {listed} FROM {ks}.{OBJECTS} WHERE bucket = ? AND key >= ?",
        "list_to": f"SELECT {listed} FROM {ks}.{OBJECTS} WHERE bucket = ? AND key >= ? AND key < ?",
        "create": f"INSERT INTO {ks}.{OBJECTS} (bucket, key, {cols}) VALUES (?, ?, ?, ?, ?, ?)"
        " IF NOT EXISTS",
        "replace": f"UPDATE {ks}.{OBJECTS} SET version = ?, size = ?, chunk_size = ?,"
        " part_chunks = ? WHERE bucket = ? AND key = ? IF version = ?",
        "remove": f"DELETE FROM {ks}.{OBJECTS} WHERE bucket = ? AND key = ? IF version = ?",
        "chunk_put": f"INSERT INTO {ks}.{CHUNKS} (version, part, idx, data) VALUES (?, ?, ?, ?)",
        "chunk_get": f"SELECT data FROM {ks}.{CHUNKS} WHERE version = ? AND part = ? AND idx = ?",
        "part_drop": f"DELETE FROM {ks}.{CHUNKS} WHERE version = ? AND part = ?",
        "intent_put": f"INSERT INTO {ks}.{UPLOADS} (bucket, key, version, started, size,"
        " chunk_size, part_chunks) VALUES (?, ?, ?, ?, ?, ?, ?)",
        "intent_drop": f"DELETE FROM {ks}.{UPLOADS} WHERE bucket = ? AND key = ? AND version = ?",
        "intents_of": f"SELECT key, version, started, size, chunk_size, part_chunks"
        f" FROM {ks}.{UPLOADS} WHERE bucket = ? AND key = ?",
        "intents_all": f"SELECT key, version, started, size, chunk_size, part_chunks"
        f" FROM {ks}.{UPLOADS} WHERE bucket = ?",
    }


def prefix_successor(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (UTF-8 order).

    ``None`` when there is none (empty prefix, or only U+10FFFF characters).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None
