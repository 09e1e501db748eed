"""dcstore's HDFS backend next to WebHDFS over HTTP and raw hdfs-native, same objects, same run.

Runs ``dcstore bench compare``'s engine (interleaved repetitions, same objects, same
workers, same verification) on three stacks over one HDFS directory:

* ``webhdfs`` (baseline): the REST API every HDFS ships, as a plain HTTP client uses it.
  ``get``: ``GET /webhdfs/v1/<path>?op=OPEN`` on the NameNode, then the redirect to a
  DataNode; ``get_range``: the same with ``offset``/``length``; ``put``:
  ``PUT ?op=CREATE&overwrite=true`` then the redirected ``PUT`` of the body. One
  keep-alive connection per thread and host (``http.client``).
* ``hdfs-native``: the raw driver, no dcstore: ``read(path).read_range``,
  ``create(overwrite=True)`` + ``write`` + ``close`` (no temporary file, no rename).
* ``dcstore``: ``open_store(URL)``: HdfsBackend (temp file + rename, version via
  ``set_times``) behind RetryingBackend.

Example (prints the tables; ``--json`` saves the result for ``dcstore bench show``)::

    .venv/bin/python bench/hdfs_vs_raw.py hdfs://127.0.0.1:9000/bench \\
        --http http://127.0.0.1:9870 --op put,get --size 4MiB,64MiB \\
        --threads 1,4,16 --duration 3s --reps 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import hdfs_native

from dcstore.backends.base import Backend, Buffer, ObjectMeta, check_range
from dcstore.backends.hdfs import HdfsBackend
from dcstore.backends.registry import open_backend
from dcstore.bench.stacks import StackSpec
from dcstore.cli.bench import run_stacks
from dcstore.cli.bench_options import add_storage_options
from dcstore.errors import DcstoreError, NotFoundError


class _Raw(Backend):
    """Shared plumbing: paths, head and list come from an HdfsBackend on the same URL."""

    def __init__(self, like: HdfsBackend):
        self.like = like

    def head(self, key: str) -> ObjectMeta:
        return self.like.head(key)

    def list_objects(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self.like.list_objects(prefix)

    def delete(self, key: str) -> None:
        self.like.delete(key)


class RawHdfsNative(_Raw):
    """hdfs-native calls without dcstore's atomic put or error mapping."""

    @property
    def url(self) -> str:
        return f"hdfs-native+{self.like.url}"

    def _open(self, key: str) -> hdfs_native.FileReader:
        try:
            return self.like._fs().read(self.like._path(key))
        except FileNotFoundError:
            raise NotFoundError(key) from None  # the harness skips objects never written

    def get(self, key: str) -> bytes:
        reader = self._open(key)
        return reader.read_range(0, len(reader))

    def get_range(self, key: str, start: int, end: int) -> bytes:
        reader = self._open(key)
        check_range(key, start, end, len(reader))
        return reader.read_range(start, end - start)

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        options = hdfs_native.WriteOptions(overwrite=True, create_parent=True)
        with self.like._fs().create(self.like._path(key), options) as writer:
            writer.write(data)
        return ObjectMeta(key, len(data), "")


class WebHdfs(_Raw):
    """WebHDFS REST over keep-alive HTTP connections (one per thread and host)."""

    def __init__(self, like: HdfsBackend, http_url: str, user: str):
        super().__init__(like)
        parts = urlsplit(http_url)
        self.namenode = (parts.hostname or "127.0.0.1", parts.port or 9870)
        self.user = user
        self.local = threading.local()

    @property
    def url(self) -> str:
        return f"webhdfs+http://{self.namenode[0]}:{self.namenode[1]}"

    def _conn(self, host: str, port: int) -> http.client.HTTPConnection:
        pool = self.local.__dict__.setdefault("pool", {})
        if (host, port) not in pool:
            pool[host, port] = http.client.HTTPConnection(host, port, timeout=120)
        return pool[host, port]

    def _request(
        self, method: str, host: str, port: int, target: str, body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            conn = self._conn(host, port)
            try:
                conn.request(method, target, body=body)
                resp = conn.getresponse()
                payload = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self.local.pool.pop((host, port), None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _call(self, method: str, key: str, op: str, body: Any = None, **params: Any) -> bytes:
        query = "&".join(
            f"{k}={v}" for k, v in {"op": op, "user.name": self.user, **params}.items()
        )
        target = f"/webhdfs/v1{quote(self.like._path(key))}?{query}"
        status, headers, payload = self._request(method, *self.namenode, target)
        if status == 307:  # to the DataNode that serves (or receives) the data
            location = urlsplit(headers["location"])
            hop = f"{location.path}?{location.query}"
            status, headers, payload = self._request(
                method, location.hostname or "", location.port or 80, hop, body
            )
        if status == 404:
            raise NotFoundError(key)
        if status >= 300:
            raise DcstoreError(f"webhdfs {op} {key}: HTTP {status} {payload[:200]!r}")
        return payload

    def get(self, key: str) -> bytes:
        return self._call("GET", key, "OPEN")

    def get_range(self, key: str, start: int, end: int) -> bytes:
        size = json.loads(self._call("GET", key, "GETFILESTATUS"))["FileStatus"]["length"]
        check_range(key, start, end, size)
        if start == end:
            return b""
        return self._call("GET", key, "OPEN", offset=start, length=end - start)

    def put(self, key: str, data: Buffer) -> ObjectMeta:
        self._call("PUT", key, "CREATE", body=bytes(data), overwrite="true")
        return ObjectMeta(key, len(data), "")


@dataclass(frozen=True)
class RawStack(StackSpec):
    kind: str = "webhdfs"
    http: str = "http://127.0.0.1:9870"
    user: str = "root"

    def open(self) -> Backend:
        like = open_backend(self.url, **self.options)
        assert isinstance(like, HdfsBackend)
        if self.kind == "webhdfs":
            return WebHdfs(like, self.http, self.user)
        return RawHdfsNative(like)


def main(argv: list[str] | None = None) -> int:
    import getpass

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="hdfs://namenode:port/base/path[?options]")
    parser.add_argument("--http", default="http://127.0.0.1:9870", help="NameNode HTTP address")
    parser.add_argument("--user", default=getpass.getuser(), help="WebHDFS user.name")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--stacks", default="webhdfs,hdfs-native,dcstore", help="which stacks, in this order"
    )
    add_storage_options(parser)  # also adds the load and output options
    args = parser.parse_args(argv)
    if args.option:
        parser.error("put backend options into the URL")
    known = {
        "webhdfs": RawStack(
            args.url, label="webhdfs", kind="webhdfs", http=args.http, user=args.user
        ),
        "hdfs-native": RawStack(args.url, label="hdfs-native", kind="native"),
        "dcstore": StackSpec(args.url, retries=args.retries, label="dcstore"),
    }
    stacks = [known[name] for name in args.stacks.split(",")]
    return run_stacks(stacks, args, "compare", args.reps)


if __name__ == "__main__":
    sys.exit(main())
