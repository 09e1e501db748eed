"""CassandraBackend against a real Apache Cassandra 5.0: conformance, layout, cleanup, options."""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import cassandra
import pytest
from cassandra.cluster import NoHostAvailable
from cassandra_server import cassandra_hosts, cassandra_url  # noqa: F401 - fixtures
from full_stack import full_stack, stack_keys  # noqa: F401 - fixture

from dcstore.backends.base import Backend
from dcstore.backends.cassandra import CassandraBackend
from dcstore.backends.cassandra.errors import map_errors
from dcstore.backends.cassandra.schema import (
    CHUNKS,
    UPLOADS,
    Layout,
    bucket_of,
    prefix_successor,
    replication_map,
)
from dcstore.backends.cassandra.settings import CassandraSettings
from dcstore.backends.options import Options, parse_url
from dcstore.backends.registry import open_backend
from dcstore.errors import (
    BackendUnavailableError,
    ConfigError,
    DcstoreError,
    IntegrityError,
    KeyAccessError,
    NotFoundError,
)
from dcstore.testing.conformance import BackendConformance, payload

MiB = 1 << 20
KiB = 1 << 10


class TestCassandraConformance(BackendConformance):
    """Small chunks and partitions, so multi-chunk and multi-partition paths are exercised."""

    @pytest.fixture
    def backend(self, cassandra_url: str) -> Iterator[Backend]:  # noqa: F811
        backend = open_backend(cassandra_url, chunk_size=256 * KiB, part_chunks=4)
        yield backend
        backend.close()


class TestCassandraStoreConformance(BackendConformance):
    """The stack users run: ``open_store`` with keys, the Redis tier and retries, over
    the default layout (1 MiB x 16)."""

    state_machine_examples = 10

    @pytest.fixture
    def backend(self, cassandra_url: str, stack_keys: str) -> Iterator[Backend]:  # noqa: F811
        # a root of its own: an encrypted listing refuses objects that are not encrypted
        store, _ = full_stack(f"{cassandra_url}/store-{uuid.uuid4().hex[:10]}", stack_keys)
        yield store
        store.close()


@pytest.fixture
def cass(cassandra_url: str) -> Iterator[CassandraBackend]:  # noqa: F811
    backend = open_backend(
        f"{cassandra_url}/t{uuid.uuid4().hex[:8]}",
        chunk_size=64 * KiB,
        part_chunks=4,
    )
    assert isinstance(backend, CassandraBackend)
    yield backend
    backend.close()


def _chunk_partitions(backend: CassandraBackend, version: str, layout: Layout) -> int:
    conn = backend._connection()
    ks = backend.settings.keyspace
    found = 0
    for part in range(layout.parts):
        rows = conn.session.execute(
            f"SELECT idx FROM {ks}.{CHUNKS} WHERE version = %s AND part = %s",
            (uuid.UUID(version), part),
        )
        found += len(list(rows))
    return found


# -- layout and cleanup on the real server -------------------------------------------------


def test_layout_spreads_chunks_over_partitions(cass: CassandraBackend) -> None:
    data = payload(10 * 64 * KiB + 5, 1)
    meta = cass.put("obj", data)
    layout = Layout(len(data), 64 * KiB, 4)
    assert (layout.chunks, layout.parts) == (11, 3)
    assert _chunk_partitions(cass, meta.version, layout) == 11
    assert cass.get("obj") == data


def test_overwrite_and_delete_remove_old_chunks(cass: CassandraBackend) -> None:
    first = cass.put("o", payload(300 * KiB, 2))
    layout = Layout(300 * KiB, 64 * KiB, 4)
    second = cass.put("o", payload(200 * KiB, 3))
    assert _chunk_partitions(cass, first.version, layout) == 0
    assert _chunk_partitions(cass, second.version, Layout(200 * KiB, 64 * KiB, 4)) == 4
    cass.delete("o")
    assert _chunk_partitions(cass, second.version, Layout(200 * KiB, 64 * KiB, 4)) == 0


def test_range_reads_touch_only_their_chunks(cass: CassandraBackend) -> None:
    data = payload(8 * 64 * KiB, 4)
    meta = cass.put("r", data)
    conn = cass._connection()
    ks = cass.settings.keyspace
    # Remove chunk 0 behind the backend's back: ranges that avoid it still work.
    conn.session.execute(
        f"DELETE FROM {ks}.{CHUNKS} WHERE version = %s AND part = 0 AND idx = 0",
        (uuid.UUID(meta.version),),
    )
    assert cass.get_range("r", 64 * KiB, 3 * 64 * KiB + 7) == data[64 * KiB : 3 * 64 * KiB + 7]
    with pytest.raises(IntegrityError, match="chunk 0"):
        cass.get_range("r", 10, 20)


def test_truncated_chunk_is_an_integrity_error(cass: CassandraBackend) -> None:
    meta = cass.put("t", payload(3 * 64 * KiB, 5))
    conn = cass._connection()
    conn.session.execute(
        f"UPDATE {cass.settings.keyspace}.{CHUNKS} SET data = %s"
        " WHERE version = %s AND part = 0 AND idx = 1",
        (b"short", uuid.UUID(meta.version)),
    )
    with pytest.raises(IntegrityError, match="chunk 1"):
        cass.get("t")


def test_abandoned_put_is_swept(cass: CassandraBackend) -> None:
    """An intent row without a commit (a killed writer) is reclaimed by sweep()."""
    kept = cass.put("k", b"committed")
    conn = cass._connection()
    ks = cass.settings.keyspace
    full = cass.settings.root + "k"
    ghost = uuid.uuid4()
    layout = Layout(130 * KiB, 64 * KiB, 4)
    conn.session.execute(
        f"INSERT INTO {ks}.{UPLOADS} (bucket, key, version, started, size, chunk_size,"
        " part_chunks) VALUES (%s, %s, %s, toTimestamp(now()), %s, %s, %s)",
        (bucket_of(full), full, ghost, layout.size, layout.chunk_size, layout.part_chunks),
    )
    for idx in range(layout.chunks):
        conn.session.execute(
            f"INSERT INTO {ks}.{CHUNKS} (version, part, idx, data) VALUES (%s, 0, %s, %s)",
            (ghost, idx, b"x" * layout.chunk_len(idx)),
        )
    assert cass.sweep() == 0, "young intents are left alone"
    assert _chunk_partitions(cass, str(ghost), layout) == 3
    assert cass.sweep(older_than=0) >= 1
    assert _chunk_partitions(cass, str(ghost), layout) == 0
    assert cass.get("k") == b"committed"
    assert cass.head("k").version == kept.version


def test_pickled_backend_reconnects(cass: CassandraBackend) -> None:
    cass.put("p", b"x" * 100)
    clone = pickle.loads(pickle.dumps(cass))
    assert clone.get("p") == b"x" * 100
    assert clone.settings == cass.settings
    clone.close()


def test_existing_keyspace_is_required_when_creation_is_off(cassandra_hosts: str) -> None:  # noqa: F811
    backend = open_backend(f"{cassandra_hosts}/dcstore_absent_ks", create_keyspace=False)
    with pytest.raises(ConfigError, match="does not exist"):
        backend.head("x")


def test_reads_of_a_keyspace_never_written_change_no_schema(cassandra_hosts: str) -> None:  # noqa: F811
    """`dcstore ls` of a mistyped keyspace created it; now only a write creates one, and
    a reader that connected before that write sees the objects written after it."""
    keyspace = f"dcstore_ro_{uuid.uuid4().hex[:8]}"
    reader = open_backend(f"{cassandra_hosts}/{keyspace}")
    writer = open_backend(f"{cassandra_hosts}/{keyspace}")
    assert isinstance(reader, CassandraBackend)
    try:
        for read in (lambda: reader.head("x"), lambda: reader.get("x")):
            with pytest.raises(NotFoundError, match="no dcstore tables yet"):
                read()
        assert list(reader.list_objects()) == [] and reader.sweep() == 0
        reader.delete("x")
        assert reader._conn is not None
        exists = "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s"
        assert not list(reader._conn.session.execute(exists, (keyspace,)))
        writer.put("x", b"written")
        assert reader.get("x") == b"written"
        assert [m.key for m in reader.list_objects()] == ["x"]
    finally:
        if reader._conn is not None:
            reader._conn.session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        reader.close()
        writer.close()


def test_readers_polling_while_a_writer_creates_the_tables_never_fail(
    cassandra_hosts: str,  # noqa: F811
) -> None:
    """Tables listed while another client still creates them cannot be prepared for a
    moment ('table ... does not exist', then 'Unknown CF'): a reader polling then finds
    no objects, then the object written, and never an error (measured here: a poller
    hit one of the two in each of 12 creations out of 12)."""
    for _ in range(3):
        _race_a_reader_against_two_creating_writers(cassandra_hosts)


def _race_a_reader_against_two_creating_writers(hosts: str) -> None:
    keyspace = f"dcstore_race_{uuid.uuid4().hex[:8]}"
    reader = open_backend(f"{hosts}/{keyspace}")
    writers = [open_backend(f"{hosts}/{keyspace}") for _ in range(2)]
    found: list[bytes] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set() and not found:
            try:
                found.append(reader.get("x"))
            except NotFoundError:
                continue
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        # two writers at once: one's CREATE ... IF NOT EXISTS returns while the other's
        # creation settles, and it prepares again until it can
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda w: w.put("x", b"written"), writers))
        thread.join(timeout=30)
        assert not failures, failures
        assert found == [b"written"]
    finally:
        stop.set()
        thread.join()
        assert isinstance(reader, CassandraBackend) and reader._conn is not None
        reader._conn.session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        for backend in (reader, *writers):
            backend.close()


def test_an_unknown_host_is_unavailable_and_an_unknown_data_centre_a_config_error(
    cassandra_hosts: str,  # noqa: F811
) -> None:
    """Both were exit 1 with a bare driver error, where HDFS and MongoDB say 5 for a host
    that does not resolve and the docs say a bad replication is a ConfigError."""
    with pytest.raises(BackendUnavailableError, match="no contact point resolves"):
        open_backend("cassandra://nosuchhost.invalid:9042/ks", connect_timeout=2).head("x")
    keyspace = f"dcstore_dc9_{uuid.uuid4().hex[:8]}"
    backend = open_backend(f"{cassandra_hosts}/{keyspace}?replication=dc9:1")
    try:
        with pytest.raises(ConfigError, match="Unrecognized strategy option"):
            backend.put("x", b"1")
    finally:
        backend.close()


def test_unreachable_cluster_is_unavailable() -> None:
    backend = open_backend("cassandra://127.0.0.1:1/ks", connect_timeout=1)
    with pytest.raises(BackendUnavailableError) as info:
        backend.get("x")
    assert isinstance(info.value, ConnectionError)
    assert "cassandra://127.0.0.1:1/ks" in str(info.value)


# -- pure logic (no server) ------------------------------------------------------------------


def _settings(url: str, **kw: object) -> CassandraSettings:
    parsed = parse_url(url)
    opts = Options(parsed.scheme, parsed.query, kw)
    settings = CassandraSettings.from_url(parsed, opts)
    opts.finish()
    return settings


def test_settings_from_url_and_back() -> None:
    s = _settings(
        "cassandra://reader@h1,h2:9142/ks/some/root?consistency=local_one&chunk_size=524288"
        "&replication=dc1:3,dc2:2&tls=true",
        password="s3cret",
    )
    assert s.hosts == ("h1", "h2") and s.port == 9142
    assert (s.keyspace, s.root, s.username, s.password) == ("ks", "some/root/", "reader", "s3cret")
    assert s.chunk_size == 512 * KiB and s.tls
    assert "s3cret" not in s.url and "s3cret" not in repr(s)
    assert _settings(s.url, password="s3cret") == s
    backend = CassandraBackend(s)
    assert "s3cret" not in str(backend) + repr(backend)


def test_password_in_url_never_shows() -> None:
    backend = open_backend("cassandra://u:hunter2@127.0.0.1/ks")
    assert "hunter2" not in str(backend) + repr(backend)
    assert backend.settings.password == "hunter2"


@pytest.mark.parametrize(
    "url,kw,match",
    [
        ("cassandra://h/ks", {"consistency": "most"}, "consistency"),
        ("cassandra://h/bad-name", {}, "keyspace"),
        ("cassandra://h/ks", {"chunk_size": 100}, "chunk_size"),
        ("cassandra://h/ks", {"bogus": 1}, "unknown option"),
        ("cassandra://h1:9042,h2:9043/ks", {}, "one native port"),
    ],
)
def test_bad_settings(url: str, kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_backend(url, **kw)


def test_replication_map() -> None:
    assert replication_map(None, 1, "datacenter1") == {
        "class": "NetworkTopologyStrategy",
        "datacenter1": "1",
    }
    assert replication_map("simple:2", None, "x") == {
        "class": "SimpleStrategy",
        "replication_factor": "2",
    }
    assert replication_map("a:3,b:1", None, "x")["b"] == "1"
    with pytest.raises(ConfigError):
        replication_map("a", None, "x")


def test_layout_arithmetic() -> None:
    lay = Layout(1 << 30, MiB, 16)
    assert (lay.chunks, lay.parts) == (1024, 64), "1 GiB is 64 partitions of 16 MiB"
    assert Layout(0, MiB, 16).chunks == 0
    assert Layout(MiB + 1, MiB, 16).chunk_len(1) == 1


@pytest.mark.parametrize("prefix", ["", "a", "ab/", "z\U0010ffff", "\U0010ffff", "\ud7ff"])
def test_prefix_successor(prefix: str) -> None:
    succ = prefix_successor(prefix)
    if succ is None:
        assert prefix.strip("\U0010ffff") == ""
        return
    assert prefix < succ
    for s in (prefix, prefix + "\U0010ffff" * 3, prefix + "zzz"):
        assert s < succ
        assert s.encode() < succ.encode()


def test_maintenance_sweep_command(cass: CassandraBackend) -> None:
    import json
    import subprocess
    import sys

    cass.put("x", b"1")
    done = subprocess.run(
        [sys.executable, "-m", "dcstore.cli", "maintenance", "sweep", cass.url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"url": cass.url, "reclaimed": 0}


@pytest.mark.parametrize(
    "exc,expected",
    [
        (cassandra.Unavailable("x", 1, 2, 1), BackendUnavailableError),
        (cassandra.ReadTimeout("x"), BackendUnavailableError),
        (cassandra.OperationTimedOut("x"), BackendUnavailableError),
        (
            NoHostAvailable("down", {"h": ConnectionRefusedError(111, "refused")}),
            BackendUnavailableError,
        ),
        (NoHostAvailable("auth", {"h": cassandra.AuthenticationFailed("bad")}), KeyAccessError),
        (
            NoHostAvailable("tls", {"h": OSError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")}),
            ConfigError,
        ),
        (cassandra.Unauthorized("no"), KeyAccessError),
        (cassandra.InvalidRequest("bad"), ConfigError),
        (cassandra.DriverException("other"), DcstoreError),
    ],
)
def test_error_mapping(exc: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as info, map_errors("cassandra://h:9042/ks", "get", "a/b"):
        raise exc
    assert "cassandra://h:9042/ks: get 'a/b'" in str(info.value)
    assert info.value.__cause__ is exc
