"""Addressing and removing GridFS chunks, for dcstore-written and foreign revisions.

dcstore gives each chunk a deterministic ``_id`` (:func:`chunk_id`:
``"<files_id hex>.<n>"``) and marks its ``files`` documents with
``metadata.dcstore_chunk_ids``. Chunks keep the standard ``files_id`` and ``n``
fields, so every GridFS reader still finds them; dcstore itself reads and deletes
them by ``_id``: MongoDB serves that from its ``_id`` index, and it is the only filter
FerretDB v1 passes down to SQLite (any other filter makes it decode every document of
the collection).
Revisions written by other tools (ObjectId chunk ids) are handled by ``files_id``.

Leftovers that readers never see but that take space:

* orphan chunks: an upload that died before inserting its ``files`` document
  (the commit point) left chunks whose ``files_id`` no ``files`` document has;
* superseded revisions: a writer that died after its commit but before deleting
  the revisions it replaced left older ``files`` documents (and their chunks).

:func:`remove_orphans` deletes both, only for uploads idle for more than ``min_age_s``.
An upload is judged by its newest chunk: dcstore stamps each chunk it inserts with
:data:`WRITTEN` (the writer's clock, like the ObjectId) and a long-running writer
refreshes the stamp of its newest chunk while it is being written to (see
:class:`dcstore.backends.mongodb.backend.MongoBackend.open_write`), so a stream that
runs for hours is never taken for an abandoned one. Chunks without the stamp (other
GridFS tools, older dcstore) are judged by their upload's start, the second the
``files_id`` ObjectId carries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, DeleteOne
from pymongo.collection import Collection

MARK = "dcstore_chunk_ids"
WRITTEN = "dcstore_written"
"""Chunk field: when the chunk was inserted or its upload last refreshed it (UTC)."""
REVISION_FIELDS = {"length": 1, "chunkSize": 1, "uploadDate": 1, "metadata": 1}


def upload_date(doc: Mapping[str, Any]) -> dt.datetime:
    """The revision's ``uploadDate`` as an aware UTC datetime (BSON dates are UTC; the
    driver returns them naive unless ``tz_aware``)."""
    return cast("dt.datetime", doc["uploadDate"]).replace(tzinfo=dt.timezone.utc)


def chunk_id(files_id: Any, n: int) -> str:
    """The ``_id`` dcstore gives chunk ``n`` of revision ``files_id``."""
    return f"{files_id}.{n}"


def addressed(doc: Mapping[str, Any]) -> bool:
    """True if the revision's chunks carry :func:`chunk_id` ids (written by dcstore)."""
    metadata = doc.get("metadata")
    return isinstance(metadata, Mapping) and bool(metadata.get(MARK))


def chunk_count(doc: Mapping[str, Any]) -> int:
    return -(-int(doc["length"]) // int(doc["chunkSize"]))


def delete_chunks(chunks: Collection[Any], ids: Iterable[str]) -> None:
    """Delete chunks by ``_id`` in one round trip (missing ones are fine)."""
    ops = [DeleteOne({"_id": i}) for i in ids]
    if ops:
        chunks.bulk_write(ops, ordered=False)


def drop_revisions(
    files: Collection[Any], chunks: Collection[Any], docs: Sequence[Mapping[str, Any]]
) -> None:
    """Delete revisions: their ``files`` documents first (readers stop finding them), then
    their chunks. ``docs`` need ``_id`` and :data:`REVISION_FIELDS`."""
    if not docs:
        return
    files.bulk_write([DeleteOne({"_id": d["_id"]}) for d in docs], ordered=False)
    delete_chunks(
        chunks, (chunk_id(d["_id"], n) for d in docs if addressed(d) for n in range(chunk_count(d)))
    )
    foreign = [d["_id"] for d in docs if not addressed(d)]
    if foreign:
        chunks.delete_many({"files_id": {"$in": foreign}})


def remove_orphans(
    files: Collection[Any], chunks: Collection[Any], min_age_s: float = 3600.0
) -> int:
    """Delete orphan chunks and superseded revisions older than ``min_age_s``; return how many."""
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=min_age_s)
    superseded: list[Mapping[str, Any]] = []
    previous = None
    for doc in files.find(
        {},
        projection={"filename": 1, **REVISION_FIELDS},
        sort=[("filename", ASCENDING), ("uploadDate", DESCENDING), ("_id", DESCENDING)],
    ):
        if doc["filename"] == previous and upload_date(doc) < cutoff:
            superseded.append(doc)
        previous = doc["filename"]
    drop_revisions(files, chunks, superseded)
    started_before = ObjectId.from_datetime(cutoff)
    candidates = [
        d["_id"]
        for d in chunks.aggregate(
            [
                {"$match": {"files_id": {"$lt": started_before}}},
                {"$group": {"_id": "$files_id"}},
            ]
        )
    ]
    live = {d["_id"] for d in files.find({"_id": {"$in": candidates}}, projection={"_id": 1})}
    orphans = [c for c in candidates if c not in live]
    if orphans:
        # Started long ago but written to (or refreshed) recently: an upload in flight.
        fresh = {
            d["_id"]
            for d in chunks.aggregate(
                [
                    {"$match": {"files_id": {"$in": orphans}, WRITTEN: {"$gte": cutoff}}},
                    {"$group": {"_id": "$files_id"}},
                ]
            )
        }
        orphans = [c for c in orphans if c not in fresh]
    if orphans:
        chunks.delete_many({"files_id": {"$in": orphans}})
    return len(orphans) + len(superseded)
