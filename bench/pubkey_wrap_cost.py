"""Per-object cost of the key-encryption key type: put and get of small objects
in memory, for aes, rsa (3072 bits) and x25519 KEKs.

    python bench/pubkey_wrap_cost.py [--objects 200] [--size 65536]

``get (cold)`` unwraps every data key (a fresh keyring per round: the unwrap
cache is empty); ``get (warm)`` reads the same objects again, with the data keys
of public-key KEKs cached. Prints the median microseconds per object over 3
rounds, and the load time of each key file document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import EncryptedBackend, Keyring
from dcstore.crypto.kek import KEY_TYPES


def per_object_us(action: Callable[[str], object], names: list[str]) -> float:
    start = time.perf_counter()
    for name in names:
        action(name)
    return (time.perf_counter() - start) / len(names) * 1e6


def measure(key_type: str, objects: int, size: int) -> dict[str, float]:
    keyring = Keyring.generate("kek-bench", key_type)
    document = json.dumps(keyring.to_document())
    data = bytes(size)
    names = [f"obj-{i}" for i in range(objects)]
    rows: dict[str, list[float]] = {"put": [], "get (cold)": [], "get (warm)": [], "load": []}
    for round_ in range(3):
        inner = MemoryBackend(f"bench-{key_type}-{round_}")
        writer = EncryptedBackend(inner, keyring)
        rows["put"].append(per_object_us(lambda n, w=writer: w.put(n, data), names))
        start = time.perf_counter()
        fresh = Keyring.from_document(document, "bench")
        rows["load"].append((time.perf_counter() - start) * 1e6)
        reader = EncryptedBackend(inner, fresh)
        rows["get (cold)"].append(per_object_us(reader.get, names))
        rows["get (warm)"].append(per_object_us(reader.get, names))
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size", type=int, default=64 << 10)
    args = parser.parse_args()
    print(f"{args.objects} objects of {args.size} bytes, median of 3 rounds, us per object")
    print(f"{'kek':<8} {'put':>9} {'get cold':>9} {'get warm':>9} {'key load':>9}")
    for key_type in KEY_TYPES:
        r = measure(key_type, args.objects, args.size)
        print(
            f"{key_type:<8} {r['put']:>9.0f} {r['get (cold)']:>9.0f} "
            f"{r['get (warm)']:>9.0f} {r['load']:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
