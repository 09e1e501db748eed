"""dcstore's MongoDB backend next to raw pymongo GridFS on the same objects, in the same run.

Runs ``dcstore bench compare``'s engine (interleaved repetitions, same objects,
same workers, same verification) over one GridFS bucket, baseline(s) first:

* ``raw-id`` (default baseline): plain pymongo doing the same work as dcstore with the
  same layout: ``get`` = newest ``files`` document + one ``find_one`` by ``_id`` per
  chunk; ``put`` = ``insert_many`` of the chunks, ``insert_one`` of the ``files``
  document, then deletes of the replaced revision by ``_id``. The difference to
  ``dcstore`` is the cost of the layer itself (validation, retry wrapper, checks).
* ``raw-gridfs``: pymongo's ``GridFSBucket``: ``open_download_stream_by_name(key).read()``,
  ``upload_from_stream`` + ``delete`` of the replaced revision. On FerretDB v1 its chunk
  query by ``files_id`` scans the whole chunks collection, and it cannot read files with
  more than ~44 MB of chunks per reply (no batch size): compare it on 4 MiB objects only.
* ``raw-cursor``: newest ``files`` document, then a ``(files_id, n)`` chunk cursor with a
  bounded batch size (what GridFS readers do, made to work on FerretDB).
* ``dcstore``: ``open_store(URL)``, i.e. MongoBackend behind RetryingBackend.

Stacks share the keys: the last stack to write an object decides its layout, so run
``put`` cases and mixed baselines knowingly (``--raw id`` keeps every layout identical).
Both use the same client options (write concern ``majority``) and chunk size.
Example (prints the tables; ``--json`` saves the result for ``dcstore bench show``)::

    .venv/bin/python bench/mongodb_vs_raw.py mongodb://127.0.0.1:27017/bench \\
        --op put,get --size 4MiB,64MiB --threads 1,4,16 --duration 5s --reps 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gridfs
from bson import ObjectId
from pymongo import DESCENDING, DeleteOne, MongoClient

from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range
from dcstore.backends.mongodb.backend import BATCH_BYTES, MongoBackend
from dcstore.backends.registry import open_backend
from dcstore.bench.stacks import StackSpec
from dcstore.cli.bench import run_stacks
from dcstore.cli.bench_options import add_storage_options
from dcstore.errors import NotFoundError


class RawGridFS(Backend):
    """Plain pymongo GridFS calls on ``like``'s database, bucket and chunk size."""

    def __init__(self, like: MongoBackend, mode: str):
        self.like, self.mode = like, mode
        self.client: MongoClient = MongoClient(
            f"{like.scheme}://{','.join(like.hosts)}/",
            username=like.username,
            password=like._password,
            **like.driver_options,
        )
        db = self.client[like.database]
        self.bucket = gridfs.GridFSBucket(db, like.bucket, chunk_size_bytes=like.chunk_size)
        self.files, self.chunks = db[f"{like.bucket}.files"], db[f"{like.bucket}.chunks"]

    @property
    def url(self) -> str:
        return f"raw-gridfs+{self.like.url}"

    def _newest(self, key: str) -> dict[str, Any]:
        doc = self.files.find_one(
            {"filename": key}, sort=[("uploadDate", DESCENDING), ("_id", DESCENDING)]
        )
        if doc is None:
            raise NotFoundError(key)
        return doc

    def _stream(self, key: str) -> gridfs.GridOut:
        try:
            return self.bucket.open_download_stream_by_name(key)
        except gridfs.errors.NoFile:
            raise NotFoundError(key) from None

    def get(self, key: str) -> bytes:
        if self.mode == "gridfs":
            return self._stream(key).read()
        doc = self._newest(key)
        if self.mode == "id":
            return b"".join(
                self.chunks.find_one({"_id": f"{doc['_id']}.{n}"}, {"data": 1})["data"]
                for n in range(-(-doc["length"] // doc["chunkSize"]))
            )
        cursor = self.chunks.find(
            {"files_id": doc["_id"]},
            sort=[("n", 1)],
            batch_size=max(1, BATCH_BYTES // doc["chunkSize"] - 1),
        )
        return b"".join(c["data"] for c in cursor)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        stream = self._stream(key)
        check_range(key, start, end, stream.length)
        stream.seek(start)
        return stream.read(end - start)

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        if self.mode == "id":
            return self._put_with_ids(key, memoryview(data))
        old = [d["_id"] for d in self.files.find({"filename": key}, projection={"_id": 1})]
        file_id = self.bucket.upload_from_stream(key, bytes(data))
        for old_id in old:
            self.bucket.delete(old_id)
        return ObjectMeta(key, len(data), str(file_id))

    def _put_with_ids(self, key: str, data: memoryview) -> ObjectMeta:
        """dcstore's layout written with plain pymongo calls: chunks, files document, cleanup."""
        old = list(self.files.find({"filename": key}, {"length": 1, "chunkSize": 1}))
        fid, cs = ObjectId(), self.like.chunk_size
        count = -(-len(data) // cs)
        per_call = max(1, BATCH_BYTES // cs)
        for first in range(0, count, per_call):
            self.chunks.insert_many(
                [
                    {
                        "_id": f"{fid}.{n}",
                        "files_id": fid,
                        "n": n,
                        "data": bytes(data[n * cs : (n + 1) * cs]),
                    }
                    for n in range(first, min(count, first + per_call))
                ]
            )
        self.files.insert_one(
            {
                "_id": fid,
                "length": len(data),
                "chunkSize": cs,
                "uploadDate": dt.datetime.now(dt.timezone.utc),
                "filename": key,
                "metadata": {"dcstore_chunk_ids": True},
            }
        )
        for doc in old:
            self.files.delete_one({"_id": doc["_id"]})
            self.chunks.bulk_write(
                [
                    DeleteOne({"_id": f"{doc['_id']}.{n}"})
                    for n in range(-(-doc["length"] // doc["chunkSize"]))
                ]
            )
        return ObjectMeta(key, len(data), str(fid))

    def head(self, key: str) -> ObjectMeta:
        doc = self._newest(key)
        return ObjectMeta(key, doc["length"], str(doc["_id"]))

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return iter(self.like.list_objects(prefix))

    def delete(self, key: str) -> None:
        for doc in self.files.find({"filename": key}, projection={"_id": 1}):
            self.bucket.delete(doc["_id"])

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class RawStack(StackSpec):
    mode: str = "gridfs"

    def open(self) -> Backend:
        like = open_backend(self.url, **self.options)
        assert isinstance(like, MongoBackend)
        return RawGridFS(like, self.mode)


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="mongodb://host:port/db[?bucket=..&chunk_size=..]")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--raw",
        default="id",
        help="baseline(s), comma-separated: id (plain pymongo, same queries and layout as "
        "dcstore; default), gridfs (pymongo GridFSBucket), cursor (files + bounded chunk cursor)",
    )
    add_storage_options(parser)  # also adds the load and output options
    args = parser.parse_args(argv)
    if args.option:
        parser.error("put backend options into the URL")
    modes = args.raw.split(",")
    if not set(modes) <= {"id", "gridfs", "cursor"}:
        parser.error(f"--raw: unknown mode in {args.raw!r}")
    stacks: list[StackSpec] = [RawStack(args.url, label=f"raw-{m}", mode=m) for m in modes]
    stacks.append(StackSpec(args.url, retries=args.retries, label="dcstore"))
    return run_stacks(stacks, args, "compare", args.reps)


if __name__ == "__main__":
    sys.exit(main())
