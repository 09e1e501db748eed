"""Tamper campaign: damage encrypted objects every way we know and check that
``dcstore get`` and ``dcstore verify`` reject each one (exit 4 or 6, no output file).

    python bench/tamper_campaign.py [--segment 1024] [--flips-per-segment 6] [--seed 0]
                                    [--header-stride 1] [--key-types aes,rsa,x25519]

For each key type (``aes``: format v1; ``rsa``, ``x25519``: public-key wraps,
format v2), objects of awkward sizes (empty, 1 byte, around one and several segments) are
written through the Python API with a small segment size, then each case writes a
damaged copy into a fresh local store and runs the real CLI entry point in-process.
Prints the number of cases per kind, tried and caught; exits 1 if any was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from dcstore.backends.local import LocalBackend
from dcstore.cli.main import main as cli
from dcstore.crypto import EncryptedBackend, FileKeySource, Keyring, parse_header
from dcstore.crypto.format import TAG_SIZE, Layout
from dcstore.crypto.kek import KEY_TYPES

REJECTED = {4, 6}  # KeyAccessError, IntegrityError


def layout_of(blob: bytes) -> Layout:
    header = parse_header(blob, "campaign")
    return Layout.from_cipher_size(header.size, header.segment_size, len(blob), "campaign")


def segments(blob: bytes) -> list[bytes]:
    layout = layout_of(blob)
    return [blob[slice(*layout.cipher_span(i))] for i in range(layout.segments)]


def cases(
    name: str, blob: bytes, other: bytes, rng: random.Random, flips: int, header_stride: int = 1
) -> Iterator[tuple[str, str, bytes]]:
    """(kind, key to store it under, damaged bytes) for one object."""
    layout = layout_of(blob)
    head, segs = blob[: layout.header_size], segments(blob)
    for byte in range(0, layout.header_size, header_stride):
        yield "header bit flip", name, flip(blob, byte, rng.randrange(8))
    for i in range(layout.segments):
        c0, c1 = layout.cipher_span(i)
        picks = {c0, c1 - 1, c1 - TAG_SIZE} | {rng.randrange(c0, c1) for _ in range(flips)}
        for byte in sorted(picks):
            yield "segment bit flip", name, flip(blob, byte, rng.randrange(8))
    for i in range(1, layout.segments + 1):  # every segment boundary, header end included
        yield "truncated at a segment boundary", name, blob[: layout.cipher_span(i - 1)[0]]
    for _ in range(flips):
        yield "truncated anywhere", name, blob[: rng.randrange(0, len(blob))]
    for extra in (1, 15, 16, 17, layout.segment_size + TAG_SIZE):
        yield f"{extra} bytes appended", name, blob + rng.randbytes(extra)
    yield "last segment appended again", name, blob + segs[-1]
    if len(segs) > 1:
        yield "two segments swapped", name, head + segs[1] + segs[0] + b"".join(segs[2:])
        yield "a segment duplicated", name, head + segs[0] + b"".join(segs)
        yield "a segment dropped", name, head + b"".join(segs[1:])
    yield "renamed", name + ".moved", blob
    other_head = other[: parse_header(other, "campaign").size]
    yield "header of another object", name, other_head + blob[layout.header_size :]


def flip(blob: bytes, byte: int, bit: int) -> bytes:
    bad = bytearray(blob)
    bad[byte] ^= 1 << bit
    return bytes(bad)


def rejected(argv: list[str], output: Path | None) -> bool:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli(argv)
    lines = err.getvalue().strip().splitlines()
    return code in REJECTED and (output is None or not output.exists()) and bool(lines)


def run(
    segment: int, flips: int, seed: int, header_stride: int = 1, key_type: str = "aes"
) -> Counter[tuple[str, bool]]:
    """Tally of (tamper kind, caught by both get and verify) for objects under a
    ``key_type`` key."""
    rng = random.Random(seed)
    tally: Counter[tuple[str, bool]] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keyfile, wrongfile = root / "kek.json", root / "wrong.json"
        FileKeySource(str(keyfile)).save(Keyring.generate("kek-campaign", key_type))
        FileKeySource(str(wrongfile)).save(Keyring.generate("kek-campaign", key_type))
        source = LocalBackend(str(root / "source"))
        enc = EncryptedBackend(source, FileKeySource(str(keyfile)), segment_size=segment)
        sizes = [0, 1, segment - 1, segment, segment + 1, 2 * segment, 3 * segment + 20]
        names = [f"obj-{size}" for size in sizes]
        for name, size in zip(names, sizes, strict=True):
            enc.put(name, rng.randbytes(size))
        blobs = {name: source.get(name) for name in names}
        store = root / "store"
        plan = [("wrong key material", name, blobs[name]) for name in names]
        for i, name in enumerate(names):
            other = blobs[names[(i + 1) % len(names)]]
            plan += list(cases(name, blobs[name], other, rng, flips, header_stride))
        for n, (kind, key, damaged) in enumerate(plan):
            url = str(store / str(n))
            LocalBackend(url).put(key, damaged)
            keys = str(wrongfile if kind == "wrong key material" else keyfile)
            out = root / f"out-{n}"
            get_ok = rejected(["get", url, key, "--keys", keys, "-o", str(out)], out)
            verify_ok = rejected(["verify", url, "--keys", keys], None)
            tally[(kind, get_ok and verify_ok)] += 1
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segment", type=int, default=1024)
    parser.add_argument("--flips-per-segment", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--header-stride", type=int, default=1, help="flip every Nth header byte")
    parser.add_argument(
        "--key-types", default=",".join(KEY_TYPES), help="comma-separated key types to campaign"
    )
    args = parser.parse_args()
    missed_any = False
    for key_type in args.key_types.split(","):
        tally = run(args.segment, args.flips_per_segment, args.seed, args.header_stride, key_type)
        kinds = sorted({kind for kind, _ in tally})
        print(f"{'tamper kind (' + key_type + ' key)':<34} {'tried':>6} {'caught':>6}")
        for kind in kinds:
            caught, missed = tally[(kind, True)], tally[(kind, False)]
            print(f"{kind:<34} {caught + missed:>6} {caught:>6}")
        total = sum(tally.values())
        caught = sum(n for (_, ok), n in tally.items() if ok)
        print(f"{'all':<34} {total:>6} {caught:>6}\n")
        missed_any |= caught != total
    return 1 if missed_any else 0


if __name__ == "__main__":
    sys.exit(main())
