"""MongoBackend against a real MongoDB-wire server (FerretDB in CI): conformance and GridFS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import gridfs
import pymongo
import pytest
from ferretdb_server import mongodb_url  # noqa: F401 - fixture
from full_stack import full_stack, stack_keys  # noqa: F401 - fixture

from dcstore.backends.base import Backend
from dcstore.backends.mongodb import MongoBackend
from dcstore.backends.mongodb.gc import chunk_id
from dcstore.backends.registry import open_backend
from dcstore.testing.conformance import BackendConformance, payload

pytestmark = pytest.mark.server("mongodb")

MiB = 1 << 20


def _bucket() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def conformance_bucket() -> str:
    return _bucket()


class TestMongoConformance(BackendConformance):
    """Small chunks (1 MiB) so multi-chunk reads, ranges and overwrites are exercised."""

    @pytest.fixture
    def backend(self, mongodb_url: str, conformance_bucket: str) -> Iterator[Backend]:  # noqa: F811
        backend = open_backend(mongodb_url, bucket=conformance_bucket, chunk_size=MiB)
        yield backend
        backend.close()


class TestMongoStoreConformance(BackendConformance):
    """The stack users run: ``open_store`` with keys, the Redis tier and retries, over
    the default 4 MiB chunks."""

    large_object_size = 16 * MiB + 1
    state_machine_examples = 10

    @pytest.fixture
    def backend(
        self,
        mongodb_url: str,  # noqa: F811
        conformance_bucket: str,
        stack_keys: str,  # noqa: F811
    ) -> Iterator[Backend]:
        store, _ = full_stack(mongodb_url, stack_keys, bucket=conformance_bucket + "s")
        yield store
        store.close()


@pytest.fixture
def mongo(mongodb_url: str) -> Iterator[MongoBackend]:  # noqa: F811
    backend = open_backend(mongodb_url, bucket=_bucket(), chunk_size=256 * 1024)
    assert isinstance(backend, MongoBackend)
    yield backend
    backend.close()


@pytest.fixture
def raw_db(mongo: MongoBackend) -> Iterator[pymongo.database.Database]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        f"mongodb://{mongo.hosts[0]}/", serverSelectionTimeoutMS=3000
    )
    yield client[mongo.database]
    client.close()


def test_objects_are_standard_gridfs_files(mongo: MongoBackend, raw_db) -> None:
    data = payload(3 * MiB + 5, 1)
    meta = mongo.put("ds/shard-000.tar", data)
    bucket = gridfs.GridFSBucket(raw_db, mongo.bucket)
    # pymongo's own GridFS reader finds and reads it by name, and by the version token
    assert bucket.open_download_stream_by_name("ds/shard-000.tar").read() == data
    grid_out = bucket.open_download_stream(pymongo.collection.ObjectId(meta.version))
    assert (grid_out.length, grid_out.chunk_size) == (len(data), 256 * 1024)


def test_reads_files_written_by_gridfs(mongo: MongoBackend, raw_db) -> None:
    data = payload(1_000_003, 2)
    bucket = gridfs.GridFSBucket(raw_db, mongo.bucket, chunk_size_bytes=100_000)
    file_id = bucket.upload_from_stream("from/gridfs.bin", data)
    assert mongo.get("from/gridfs.bin") == data
    assert mongo.get_range("from/gridfs.bin", 99_999, 300_001) == data[99_999:300_001]
    assert mongo.head("from/gridfs.bin").version == str(file_id)
    # a newer GridFS revision is what readers see; ours then replaces both
    bucket.upload_from_stream("from/gridfs.bin", b"newer")
    assert mongo.get("from/gridfs.bin") == b"newer"
    mongo.put("from/gridfs.bin", b"ours")
    assert raw_db[f"{mongo.bucket}.files"].count_documents({"filename": "from/gridfs.bin"}) == 1
    assert bucket.open_download_stream_by_name("from/gridfs.bin").read() == b"ours"


def test_overwrite_removes_old_revision_and_chunks(mongo: MongoBackend, raw_db) -> None:
    mongo.put("k", payload(MiB, 3))
    new = mongo.put("k", payload(MiB, 4))
    files = list(raw_db[f"{mongo.bucket}.files"].find({"filename": "k"}))
    assert [str(f["_id"]) for f in files] == [new.version]
    assert raw_db[f"{mongo.bucket}.chunks"].count_documents({}) == 4


def record_chunk_finds(mongo: MongoBackend, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The filters of every later ``find`` on the backend's chunks collection, in order."""
    chunks = mongo._connection().chunks
    filters: list[dict] = []
    real_find = chunks.find

    def recording_find(filter, *args, **kwargs):
        filters.append(filter)
        return real_find(filter, *args, **kwargs)

    monkeypatch.setattr(chunks, "find", recording_find)
    return filters


def test_get_range_reads_only_needed_chunks(
    mongo: MongoBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(4 * MiB, 5)
    mongo.put("r", data)
    filters = record_chunk_finds(mongo, monkeypatch)
    start = 256 * 1024 + 10
    assert mongo.get_range("r", start, start + 300_000) == data[start : start + 300_000]
    version = mongo.head("r").version
    assert filters == [{"_id": f"{version}.1"}, {"_id": f"{version}.2"}]  # point lookups


def test_get_range_of_foreign_files_queries_a_chunk_range(
    mongo: MongoBackend, raw_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(1_000_000, 12)
    bucket = gridfs.GridFSBucket(raw_db, mongo.bucket, chunk_size_bytes=100_000)
    bucket.upload_from_stream("foreign", data)
    filters = record_chunk_finds(mongo, monkeypatch)
    assert mongo.get_range("foreign", 250_000, 420_000) == data[250_000:420_000]
    assert [f["n"] for f in filters] == [{"$gte": 2, "$lte": 4}]


def test_large_foreign_files_read_in_bounded_batches(mongo: MongoBackend, raw_db) -> None:
    """FerretDB v1 batches replies by document count only: 4 MiB chunks x 101 would exceed
    the 48 MB message limit unless the reader bounds the batch size (dcstore does)."""
    data = payload(60 * MiB + 1, 6)
    bucket = gridfs.GridFSBucket(raw_db, mongo.bucket, chunk_size_bytes=4 * MiB)
    bucket.upload_from_stream("big-foreign", data)
    assert mongo.get("big-foreign") == data
    mongo.delete("big-foreign")
    assert raw_db[f"{mongo.bucket}.chunks"].count_documents({}) == 0


def test_failed_upload_keeps_old_object_and_removes_its_chunks(
    mongo: MongoBackend, raw_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = mongo.put("obj", payload(MiB, 7))
    conn = mongo._writable()
    real_insert = conn.chunks.insert_many
    calls = []

    def failing_insert(docs, **kw):
        calls.append(len(docs))
        if len(calls) == 2:
            raise pymongo.errors.AutoReconnect("injected: connection lost mid-upload")
        return real_insert(docs, **kw)

    monkeypatch.setattr(conn.chunks, "insert_many", failing_insert)
    with pytest.raises(ConnectionError):
        mongo.put("obj", payload(40 * MiB, 8))
    monkeypatch.undo()
    assert mongo.head("obj") == old
    assert mongo.get("obj") == payload(MiB, 7)
    chunks = raw_db[f"{mongo.bucket}.chunks"]
    assert (
        chunks.count_documents({"files_id": {"$ne": pymongo.collection.ObjectId(old.version)}}) == 0
    )


def test_sweep_removes_orphans(mongo: MongoBackend, raw_db) -> None:
    keep = mongo.put("keep", payload(600_000, 9))
    chunks = raw_db[f"{mongo.bucket}.chunks"]
    files = raw_db[f"{mongo.bucket}.files"]
    orphan_id = pymongo.collection.ObjectId()
    chunks.insert_many([{"files_id": orphan_id, "n": n, "data": b"x" * 10} for n in range(3)])
    # a superseded revision left behind by a writer that died after its commit
    stale = files.find_one({"_id": pymongo.collection.ObjectId(keep.version)})
    stale["_id"] = pymongo.collection.ObjectId()
    stale["uploadDate"] = stale["uploadDate"].replace(year=2001)
    files.insert_one(stale)
    chunks.insert_one(
        {"_id": chunk_id(stale["_id"], 0), "files_id": stale["_id"], "n": 0, "data": b"y"}
    )
    assert mongo.sweep() == 1  # the stale revision; the fresh orphan is too young
    assert chunks.count_documents({"files_id": orphan_id}) == 3
    assert chunks.count_documents({"files_id": stale["_id"]}) == 0
    time.sleep(1.1)  # upload start times (ObjectId) have one-second resolution
    assert mongo.sweep(older_than=0) == 1
    assert chunks.count_documents({"files_id": orphan_id}) == 0
    assert files.count_documents({"filename": "keep"}) == 1
    assert mongo.get("keep") == payload(600_000, 9)
    assert mongo.head("keep") == keep
