"""dcstore's MongoDB backend next to raw pymongo GridFS on the same objects, in the same run.

Runs ``dcstore bench compare``'s engine (interleaved repetitions, same objects,
same workers, same verification) on two stacks over one GridFS bucket:

* ``raw-gridfs`` (baseline): what a pymongo user writes. ``get``:
  ``GridFSBucket.open_download_stream_by_name(key).read()``; ``get_range``: the same
  stream, ``seek`` + ``read``; ``put``: ``upload_from_stream`` then ``delete`` of the
  replaced revision(s). With ``--raw cursor`` reads use the GridFS collections
  directly (newest ``files`` document, then a chunk cursor with a bounded batch
  size), because pymongo's GridFS reader cannot read files of more than ~44 MB of
  chunks per reply from FerretDB v1 (it does not cap reply batches in bytes).
* ``dcstore``: ``open_store(URL)``, i.e. MongoBackend behind RetryingBackend.

Both use the same client options (write concern ``majority``) and chunk size.
Example (prints the tables; ``--json`` saves the result for ``dcstore bench show``)::

    .venv/bin/python bench/mongodb_vs_raw.py mongodb://127.0.0.1:27017/bench \\
        --op put,get --size 4MiB,64MiB --threads 1,4,16 --duration 5s --reps 3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gridfs
from pymongo import DESCENDING, MongoClient

from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range
from dcstore.backends.mongodb import BATCH_BYTES, MongoBackend
from dcstore.backends.registry import open_backend
from dcstore.bench.stacks import StackSpec
from dcstore.cli.bench import add_storage_options, finish, storage_config
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
        old = [d["_id"] for d in self.files.find({"filename": key}, projection={"_id": 1})]
        file_id = self.bucket.upload_from_stream(key, bytes(data))
        for old_id in old:
            self.bucket.delete(old_id)
        return ObjectMeta(key, len(data), str(file_id))

    def head(self, key: str) -> ObjectMeta:
        doc = self._newest(key)
        return ObjectMeta(key, doc["length"], str(doc["_id"]))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return iter(self.like.list(prefix))

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
    from dcstore.bench.compare import summarize
    from dcstore.bench.render import LiveReporter
    from dcstore.bench.storage import StorageBench

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="mongodb://host:port/db[?bucket=..&chunk_size=..]")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--raw",
        choices=("gridfs", "cursor"),
        default="gridfs",
        help="baseline reads: pymongo GridFSBucket (default) or a bounded chunk cursor",
    )
    add_storage_options(parser)  # also adds the load and output options
    args = parser.parse_args(argv)
    if args.option:
        parser.error("put backend options into the URL")
    stacks = [
        RawStack(args.url, label=f"raw-{args.raw}", mode=args.raw),
        StackSpec(args.url, retries=args.retries, label="dcstore"),
    ]
    config = storage_config(args, args.reps)
    with LiveReporter(live=not args.no_progress) as reporter:
        bench = StorageBench(stacks, config, suite="compare", command=sys.argv, reporter=reporter)
        result, error = bench.run()
    result.summary = summarize(result)
    return finish(result, error, args)


if __name__ == "__main__":
    sys.exit(main())
