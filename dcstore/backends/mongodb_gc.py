"""Garbage collection for GridFS buckets written by dcstore (or any GridFS writer).

Two kinds of leftovers are invisible to readers but take space:

* orphan chunks: an upload that died before inserting its ``files`` document
  (the commit point) left chunks whose ``files_id`` no ``files`` document has;
* superseded revisions: a writer that died after its commit but before deleting
  the revisions it replaced left older ``files`` documents (and their chunks).

:func:`remove_orphans` deletes both, but only for uploads that started more
than ``min_age_s`` ago (the ``files_id`` ObjectId carries its creation second),
so uploads still in flight are never touched.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection


def remove_orphans(files: Collection, chunks: Collection, min_age_s: float = 3600.0) -> int:
    """Delete orphan chunks and superseded revisions older than ``min_age_s``; return how many."""
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=min_age_s)
    superseded: list[Any] = []
    previous = None
    for doc in files.find(
        {},
        projection={"filename": 1, "uploadDate": 1},
        sort=[("filename", ASCENDING), ("uploadDate", DESCENDING), ("_id", DESCENDING)],
    ):
        if (
            doc["filename"] == previous
            and doc["uploadDate"].replace(tzinfo=dt.timezone.utc) < cutoff
        ):
            superseded.append(doc["_id"])
        previous = doc["filename"]
    if superseded:
        files.delete_many({"_id": {"$in": superseded}})
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
    if orphans or superseded:
        chunks.delete_many({"files_id": {"$in": orphans + superseded}})
    return len(orphans) + len(superseded)
