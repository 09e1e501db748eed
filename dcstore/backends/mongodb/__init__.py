"""The ``mongodb://`` backend (pymongo): objects as GridFS-style revisions of chunk
documents, committed by one document insert. ``backend`` (the Backend), ``config`` (URL
options), ``gc`` (revisions and orphan chunks), ``errors`` (the driver's exceptions as
dcstore errors). See docs/mongodb.md."""

from dcstore.backends.mongodb.backend import MongoBackend

__all__ = ["MongoBackend"]
