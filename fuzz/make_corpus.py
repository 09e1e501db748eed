"""Write the seed corpora (fuzz/corpus/<target>/) from inputs the product itself makes.

    python fuzz/make_corpus.py

Deterministic apart from random keys and nonces; the seeds are committed, small.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dcstore.backends.memory import MemoryBackend  # noqa: E402
from dcstore.cache.resp import pack_set  # noqa: E402
from dcstore.loaders.tario import member_bytes  # noqa: E402
from dcstore.loaders.writer import ShardWriter  # noqa: E402
from dcstore.tokens.writer import TokenWriter  # noqa: E402
from fuzz.targets import FIXED_KEYRING, seed_ciphertext  # noqa: E402


def seeds() -> dict[str, dict[str, bytes]]:
    shard = b"".join(
        bytes(p)
        for i in range(3)
        for name, data in ((f"s{i}.jpg", b"\xff\xd8" * 20), (f"s{i}.cls", b"%d" % i))
        for p in member_bytes(name, data)
    ) + bytes(1024)
    long_names = io.BytesIO()
    with tarfile.open(fileobj=long_names, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("d/" + "x" * 150 + ".txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    cipher = seed_ciphertext()
    store = MemoryBackend("fuzz-corpus")
    with ShardWriter(store, shard_size=4096) as writer:
        for i in range(4):
            writer.write({"__key__": f"k{i}", "bin": bytes([i]) * 1500, "cls": i})
    manifest = store.get("manifest.parquet")
    with TokenWriter(store, vocab_size=300, eod=299, columns=["label"], shard_bytes=64) as tw:
        for i in range(5):
            tw.write(list(range(i * 7, i * 7 + 20)), label=i % 2)
    tokens = store.get("tokens.parquet")
    keyfile = json.dumps(FIXED_KEYRING.to_document()).encode()
    urls = [
        b"file:///tmp/x?fsync=false",
        b"memory://fuzz",
        b"hdfs://user@nn:9000/data?replication=2",
        b"cassandra://a,b:9042/ks?consistency=QUORUM",
        b"mongodb://u:p@h:27017/db?chunk_size=1MiB",
        b"./relative/path",
        b"redis+cluster://h1:7000,h2:7001",
    ]
    value = b"v" * 10
    resp = [
        bytes([2, 10]) + b"*2\r\n$10\r\n" + value + b"\r\n$-1\r\n",
        bytes([1, 10]) + b"-MOVED 3999 127.0.0.1:7001\r\n",
        bytes([3, 10]) + b"*3\r\n_\r\n$20\r\n" + b"w" * 20 + b"\r\n_\r\n",
        bytes([1, 3]) + b"".join(bytes(p) for p in pack_set(b"k", b"abc", 100)),
    ]
    return {
        "tar": {"shard": shard, "pax": long_names.getvalue()},
        "header": {"object": cipher, "header": cipher[:200]},
        "decrypt": {"object": cipher},
        "manifest": {"manifest": manifest},
        "tokens": {"tokens": tokens},
        "keyfile": {"keyfile": keyfile},
        "url": {f"url{i}": u for i, u in enumerate(urls)},
        "resp": {f"reply{i}": r for i, r in enumerate(resp)},
    }


def main() -> None:
    for target, files in seeds().items():
        folder = HERE / "corpus" / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{target}: {len(files)} seed(s)")


if __name__ == "__main__":
    main()
