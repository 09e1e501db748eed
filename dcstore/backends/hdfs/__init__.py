"""The ``hdfs://`` / ``viewfs://`` backend (hdfs-native): objects as files, written to a
temporary name and renamed. ``backend`` (the Backend), ``errors`` (the driver's
exceptions as dcstore errors), ``fork`` (the driver's connections across ``fork``).
See docs/hdfs.md."""

from dcstore.backends.hdfs.backend import HdfsBackend

__all__ = ["HdfsBackend"]
