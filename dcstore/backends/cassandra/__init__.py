"""The ``cassandra://`` backend (cassandra-driver): objects as chunk rows with a
compare-and-set metadata row per key. ``backend`` (the Backend), ``schema`` (tables and
layout), ``session`` (driver session, prepared statements), ``settings`` (URL options),
``errors`` (the driver's exceptions as dcstore errors). See docs/cassandra.md."""

from dcstore.backends.cassandra.backend import CassandraBackend

__all__ = ["CassandraBackend"]
