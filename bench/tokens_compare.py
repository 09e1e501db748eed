"""Token datasets: dcstore (plaintext, encrypted) vs LitData's TokensLoader and a memmap floor.

What is measured, on one synthetic corpus (default ~64 MB of text in 8 JSONL files,
generated from a seeded random word list; nothing is downloaded), tokenized with a
byte-level BPE tokenizer (``tokenizers``, default vocabulary 8,192 so ids are uint16)
trained here on a sample of that corpus, each document followed by ``<|endoftext|>``:

1. Pack: wall time of ``pack_text`` (``processes=2``, plaintext and encrypted) and of
   ``litdata.optimize`` (``num_workers=2``, ``chunk_bytes=64MB``,
   ``item_loader=TokensLoader()``, ``fn`` yields one uint16 torch tensor of token ids
   per document of each input file, as LitData's README shows for pre-training data),
   each in a fresh child process into an emptied directory, with
   ``TOKENIZERS_PARALLELISM=false`` so both run 2 single-threaded tokenizing processes.
   ``dcstore-default`` is ``pack_text``'s own default for a ``tokenizers`` tokenizer (one
   process, the tokenizer's threads). Figures: MB/s of UTF-8 text and tokens/s, CPU
   seconds of the child and its reaped workers, and the tokens each side stored.
2. Read: one epoch per rep of blocks of 2,048 tokens through ``DataLoader(batch_size=8,
   num_workers=2)`` (LitData through its ``StreamingDataLoader``), shuffle on for every
   loader, page cache warm, interleaved reps with the loader order rotated each rep.
   Rows: ``dcstore`` / ``dcstore-encrypted`` (``TokenDataset(shuffle=True)``), ``litdata``
   (``StreamingDataset(item_loader=TokensLoader(block_size), shuffle=True,
   drop_last=True)``), ``memmap-floor`` (a flat ``np.memmap`` of the same token stream,
   ``__getitem__`` returns ``torch.from_numpy(np.array(mm[i*B:(i+1)*B]))`` for a seeded
   permutation of block indices given as the sampler), and ``litdata-full-shuffle``
   (LitData with ``item_shuffle_window=0``, for context). Every row stops at the same
   number of blocks N, the fewest any loader's full epoch holds (counted in an uncapped
   warm-up epoch each; LitData drops each chunk's tail and, with ``drop_last``, partial
   batches), so all read exactly N * block_size tokens; the main process does the same tiny
   work per batch (one element summed). Time runs from loader creation (worker start-up
   included) to the N-th block in the main process; "steady" excludes the first batch.
   The same rows are then iterated without DataLoader (each dataset in the main process,
   one block at a time): the format's own cost, without torch's worker hand-off.
3. Random access: ``TokenDataset.read(i)`` for 1,000 seeded random block indices, store
   warm and local, plaintext and encrypted: p50 / p99 / max ms (LitData's
   ``StreamingDataset[i]`` and the memmap slice beside them for context), the readers
   taking turns index by index so machine noise hits them alike.

Usage: .venv/bin/python bench/tokens_compare.py [--text-mb 64] [--reps 5] [--pack-reps 2]
       [--root /tmp/dcstore-tokens-bench] [--out bench/results/tokens.md]
Needs: pip install litdata tokenizers (bench-only).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from dcstore.bench.machine import cpu_model

EOD = "<|endoftext|>"
PACK_ROWS = ("dcstore", "dcstore-encrypted", "litdata", "dcstore-default")
READ_ROWS = ("dcstore", "dcstore-encrypted", "litdata", "litdata-full-shuffle", "memmap-floor")
RING_ROWS = ("dcstore-ring", "dcstore-ring-encrypted")
"""TokenDataset through dcstore's RingLoader (reusable shared-memory slots) instead of
DataLoader's per-batch hand-off: DataLoader-table rows only."""
MB = 1e6


# -- corpus and tokenizer -------------------------------------------------------------------


def make_corpus(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Seeded synthetic JSONL corpus (reused when its parameters match)."""
    where = root / "corpus"
    info_file = root / "corpus.json"
    want = {"text_mb": args.text_mb, "files": args.files, "seed": args.seed, "version": 1}
    if info_file.exists():
        info = json.loads(info_file.read_text())
        if info["params"] == want:
            return info
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    # 300k words of 2-11 letters (skewed letter frequencies), drawn Zipf(0.8): an 8k BPE
    # vocabulary covers the frequent words whole and splits the rest (~3 bytes/token).
    n_words = 300_000
    lens = rng.integers(2, 12, n_words)
    letter_p = rng.dirichlet(np.full(26, 2.0))
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
    letters = rng.choice(alphabet, lens.sum(), p=letter_p)
    blob = letters.tobytes().decode("ascii")
    ends = np.cumsum(lens)
    words = [blob[e - n : e] for n, e in zip(lens.tolist(), ends.tolist(), strict=True)]
    cdf = np.cumsum(1.0 / np.arange(1, n_words + 1) ** 0.8)
    cdf /= cdf[-1]
    target = int(args.text_mb * MB)
    per_file = -(-target // args.files)
    docs = text_bytes = 0
    for f in range(args.files):
        written = 0
        with open(where / f"part-{f:03d}.jsonl", "w") as out:
            while written < per_file:
                n = int(rng.integers(50, 1500))
                idx = np.searchsorted(cdf, rng.random(n)).tolist()
                text = " ".join([words[i] for i in idx])
                out.write(json.dumps({"text": text}) + "\n")
                written += len(text)
                docs += 1
        text_bytes += written
    files = sorted(str(p) for p in where.glob("*.jsonl"))
    info = {
        "params": want, "files": files, "documents": docs, "text_bytes": text_bytes,
        "file_bytes": sum(os.path.getsize(p) for p in files),
    }  # fmt: skip
    info_file.write_text(json.dumps(info))
    print(f"corpus: {docs} documents, {text_bytes / MB:.0f} MB of text in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)  # fmt: skip
    return info


def sample_texts(files: list[str], limit_bytes: int) -> Iterator[str]:
    got = 0
    for path in files:
        with open(path) as f:
            for line in f:
                text = json.loads(line)["text"]
                got += len(text)
                yield text
                if got >= limit_bytes:
                    return


def make_tokenizer(root: Path, corpus: dict[str, Any], args: argparse.Namespace) -> Path:
    """A byte-level BPE tokenizer trained on the corpus's first ``--train-mb`` MB."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = root / f"tokenizer-{args.vocab}-{args.train_mb}mb.json"
    if path.exists() and path.stat().st_mtime >= os.path.getmtime(root / "corpus.json"):
        return path
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab, special_tokens=[EOD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(sample_texts(corpus["files"], int(args.train_mb * MB)), trainer)
    tok.save(str(path))
    return path


# -- pack (each in a child process) ----------------------------------------------------------


def litdata_tokenize(path: str, tokenizer: Any = None, eod: int = 0) -> Iterator[torch.Tensor]:
    """LitData's ``fn``: one uint16 tensor of token ids (+ end of document) per document."""
    with open(path) as f:
        for line in f:
            ids = tokenizer.encode(json.loads(line)["text"]).ids
            ids.append(eod)
            yield torch.from_numpy(np.asarray(ids, dtype=np.uint16))


def pack_one(args: argparse.Namespace) -> int:
    """Child process: pack the corpus as ``args.pack_one`` into ``args.pack_out``; print JSON."""
    from tokenizers import Tokenizer

    name, out = args.pack_one, Path(args.pack_out)
    root = Path(args.root)
    corpus = json.loads((root / "corpus.json").read_text())
    tok = Tokenizer.from_file(args.tokenizer)
    shard = int(args.shard_mb * MB)
    ru0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t0 = time.perf_counter()
    if name == "litdata":
        import litdata

        fn = functools.partial(litdata_tokenize, tokenizer=tok, eod=tok.token_to_id(EOD))
        litdata.optimize(
            fn=fn, inputs=corpus["files"], output_dir=str(out), chunk_bytes=shard,
            item_loader=litdata.TokensLoader(), num_workers=args.processes,
            mode="overwrite", verbose=False,
        )  # fmt: skip
    else:
        from dcstore.tokens import pack_text

        keys = str(root / "kek.json") if name == "dcstore-encrypted" else None
        pack_text(
            corpus["files"], f"file://{out}", tokenizer=tok, eod=EOD, keys=keys,
            shard_bytes=shard, processes=None if name == "dcstore-default" else args.processes,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    tokens = stored_tokens(name, out, root)
    ru1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(
        b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(ru0, ru1, strict=True)
    )
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "tokens": tokens}))
    return 0


def stored_tokens(name: str, out: Path, root: Path) -> int:
    if name == "litdata":
        index = json.loads((out / "index.json").read_text())
        return sum(int(c["dim"]) for c in index["chunks"])
    from dcstore.store import open_store
    from dcstore.tokens import load_token_manifest

    keys = str(root / "kek.json") if name == "dcstore-encrypted" else None
    return int(load_token_manifest(open_store(f"file://{out}", keys=keys)).num_tokens)


def store_dir(root: Path, name: str) -> Path:
    return root / "stores" / name


def run_pack(name: str, tokenizer: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = store_dir(Path(args.root), name)
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if name == "dcstore-default":
        env.pop("TOKENIZERS_PARALLELISM", None)
    else:
        env["TOKENIZERS_PARALLELISM"] = "false"
    cmd = [sys.executable, __file__, "--root", args.root, "--pack-one", name, "--pack-out",
           str(out), "--tokenizer", str(tokenizer), "--processes", str(args.processes),
           "--shard-mb", str(args.shard_mb)]  # fmt: skip
    done = subprocess.run(cmd, check=True, env=env, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- read ------------------------------------------------------------------------------------


class MemmapBlocks(Dataset):  # type: ignore[type-arg]
    """Block ``i`` of a flat uint16 file: ``torch.from_numpy(np.array(mm[i*B:(i+1)*B]))``."""

    def __init__(self, path: Path, block: int):
        self.path, self.block = str(path), block
        self.mm: np.memmap | None = None

    def __len__(self) -> int:
        return os.path.getsize(self.path) // 2 // self.block

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.mm is None:
            self.mm = np.memmap(self.path, dtype=np.uint16, mode="r")
        b = self.block
        return torch.from_numpy(np.array(self.mm[i * b : (i + 1) * b]))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "mm": None}


def make_flat(root: Path) -> Path:
    """The plaintext dcstore token stream as one flat file (the memmap floor's input)."""
    from dcstore.store import open_store
    from dcstore.tokens import load_token_manifest

    plain = store_dir(root, "dcstore")
    flat = root / "stores" / "memmap-floor.u16"
    if flat.exists() and flat.stat().st_mtime >= (plain / "tokens.parquet").stat().st_mtime:
        return flat
    manifest = load_token_manifest(open_store(f"file://{plain}"))
    with open(flat, "wb") as out:
        for s in manifest.shards:
            with open(plain / s.key, "rb") as f:
                shutil.copyfileobj(f, out, 8 << 20)
    return flat


def make_loader(name: str, args: argparse.Namespace, workers: int) -> Iterable[torch.Tensor]:
    """Row ``name``'s dataset through the loader its docs recommend (LitData: its
    ``StreamingDataLoader``, else torch's ``DataLoader``); ``workers=0``: the dataset alone,
    iterated in this process (no DataLoader, one block at a time)."""
    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader

    from dcstore.tokens.dataset import TokenDataset

    root = Path(args.root)
    block, batch = args.block_size, args.batch
    if name.startswith("dcstore"):
        encrypted = name.endswith("-encrypted")
        ds = TokenDataset(
            f"file://{store_dir(root, 'dcstore-encrypted' if encrypted else 'dcstore')}",
            block_size=block, shuffle=True, seed=0,
            keys=str(root / "kek.json") if encrypted else None,
        )  # fmt: skip
        if not workers:
            return ds
        if name.startswith("dcstore-ring"):
            from dcstore import RingLoader

            return RingLoader(ds, batch_size=batch, num_workers=workers)
        return DataLoader(ds, batch_size=batch, num_workers=workers)
    if name.startswith("litdata"):
        # litdata-full-shuffle: a full permutation inside each chunk instead of LitData's
        # default (aligned windows of 256 items shuffled, then the items inside each).
        full = {"item_shuffle_window": 0} if name == "litdata-full-shuffle" else {}
        lit = StreamingDataset(
            input_dir=str(store_dir(root, "litdata")), item_loader=TokensLoader(block_size=block),
            shuffle=True, drop_last=True, **full,
        )  # fmt: skip
        return StreamingDataLoader(lit, batch_size=batch, num_workers=workers) if workers else lit
    floor = MemmapBlocks(args.flat, block)
    order = np.random.default_rng(0).permutation(len(floor))[: args.n_blocks].tolist()
    if workers:
        return DataLoader(floor, batch_size=batch, num_workers=workers, sampler=order)
    return (floor[i] for i in order)


class ChildCpu:
    """CPU seconds of this process's children (last reading before each exits, 50 ms)."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            for p in me.children(recursive=True):
                with contextlib.suppress(psutil.Error, OSError):
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system

    def __enter__(self) -> ChildCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_epoch(name: str, args: argparse.Namespace, workers: int, cap: int | None) -> dict[str, Any]:
    """One epoch of row ``name``, stopped at ``cap`` blocks (None: the whole epoch). Time
    runs from loader creation to the ``cap``-th block in this process; every row does the
    same tiny work per batch (or per block, in process): one element summed."""
    gc.collect()
    limit = cap if cap is not None else 1 << 62
    with ChildCpu() as children:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        loader = make_loader(name, args, workers)
        it = iter(loader)
        blocks = acc = first_blocks = 0
        first = None
        shape = ""
        for batch in it:
            n = batch.shape[0] if batch.ndim == 2 else 1
            take = min(n, limit - blocks)
            acc += int(batch.reshape(-1)[0])
            blocks += take
            if first is None:
                first, first_blocks = time.perf_counter(), take
                shape = f"{tuple(batch.shape)} {batch.dtype}"
            if blocks >= limit:
                break
        end = time.perf_counter()
        cpu = time.process_time() - cpu0
        del it, loader  # workers shut down after the clock stopped
    cpu += sum(children.cpu.values())
    first = first or end
    return {
        "blocks": blocks,
        "blocks_s": blocks / (end - t0),
        "steady_blocks_s": (blocks - first_blocks) / (end - first) if end > first else 0.0,
        "first_batch_s": first - t0,
        "cpu_us": 1e6 * cpu / max(blocks, 1),
        "shape": shape,
    }


def interleaved(
    args: argparse.Namespace, workers: int, reps: int, tag: str
) -> dict[str, list[dict[str, Any]]]:
    """``reps`` rounds over every read row, the row order rotated each round."""
    results: dict[str, list[dict[str, Any]]] = {}
    names = list(READ_ROWS) + (list(RING_ROWS) if workers else [])
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            r = run_epoch(name, args, workers, args.n_blocks)
            results.setdefault(name, []).append(r)
            print(f"{tag} rep {rep} {name:18} {r['blocks']} blocks {r['blocks_s']:7.0f} blocks/s "
                  f"steady {r['steady_blocks_s']:7.0f} first {r['first_batch_s']:.2f} s "
                  f"cpu {r['cpu_us']:5.0f} us/block {r['shape']}", file=sys.stderr)  # fmt: skip
    return results


def warm_page_cache(root: Path) -> None:
    buf = bytearray(8 << 20)
    for p in sorted((root / "stores").rglob("*")):
        if p.is_file():
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


# -- random access ----------------------------------------------------------------------------


def random_access(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Latency of single-block reads at seeded random indices, the readers taking turns
    index by index (so machine noise hits them alike), after 20 warm-up reads each."""
    from litdata import StreamingDataset, TokensLoader

    from dcstore.tokens.dataset import TokenDataset

    root = Path(args.root)
    readers: dict[str, tuple[Callable[[int], Any], int]] = {}
    for name in ("dcstore", "dcstore-encrypted"):
        ds = TokenDataset(
            f"file://{store_dir(root, name)}", block_size=args.block_size,
            keys=str(root / "kek.json") if name == "dcstore-encrypted" else None,
        )  # fmt: skip
        readers[name] = (ds.read, ds.num_items)
    lit = StreamingDataset(
        input_dir=str(store_dir(root, "litdata")),
        item_loader=TokensLoader(block_size=args.block_size),
    )
    readers["litdata"] = (lit.__getitem__, len(lit))
    floor = MemmapBlocks(args.flat, args.block_size)
    readers["memmap-floor"] = (floor.__getitem__, len(floor))
    n = min(count for _, count in readers.values())
    rng = np.random.default_rng(1)
    for i in rng.integers(0, n, 20).tolist():
        for read, _ in readers.values():
            read(i)
    lat: dict[str, list[float]] = {name: [] for name in readers}
    gc.collect()
    for i in rng.integers(0, n, args.random_reads).tolist():
        for name, (read, _) in readers.items():
            t0 = time.perf_counter()
            block = read(i)
            lat[name].append(time.perf_counter() - t0)
            assert len(block) == args.block_size, (name, len(block))
    out = {}
    for name, values in lat.items():
        ms = np.asarray(values) * 1e3
        out[name] = {
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()), "mean": float(ms.mean()), "n": len(ms),
            "over_5ms": int((ms >= 5.0).sum()),
        }  # fmt: skip
    return out


def store_layout(root: Path) -> str:
    """How many shards / chunks each format cut the stream into."""
    from dcstore.store import open_store
    from dcstore.tokens import load_token_manifest

    manifest = load_token_manifest(open_store(f"file://{store_dir(root, 'dcstore')}"))
    index = json.loads((store_dir(root, "litdata") / "index.json").read_text())
    dims = [int(c["dim"]) for c in index["chunks"]]
    return (
        f"dcstore: {len(manifest.shards)} shard(s) of up to {manifest.shard_tokens:,} tokens; "
        f"LitData: {len(dims)} chunk(s) of {', '.join(f'{d:,}' for d in dims)} tokens"
    )


def check_same_stream(args: argparse.Namespace) -> str:
    """The plaintext, encrypted and flat streams agree block for block (a few seeded blocks)."""
    from dcstore.tokens.dataset import TokenDataset

    root = Path(args.root)
    plain = TokenDataset(f"file://{store_dir(root, 'dcstore')}", block_size=args.block_size)
    enc = TokenDataset(
        f"file://{store_dir(root, 'dcstore-encrypted')}", block_size=args.block_size,
        keys=str(root / "kek.json"),
    )  # fmt: skip
    floor = MemmapBlocks(args.flat, args.block_size)
    for i in np.random.default_rng(2).integers(0, plain.num_items, 16).tolist():
        a, b, c = plain.read(i), enc.read(i), floor[i]
        if not (torch.equal(a, b) and torch.equal(a, c)):
            return f"MISMATCH at block {i}"
    return "plaintext, encrypted and memmap streams identical on 16 sampled blocks"


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )  # fmt: skip
    p.add_argument("--text-mb", type=float, default=64, help="corpus text size (default 64)")
    p.add_argument("--files", type=int, default=8, help="JSONL files of the corpus")
    p.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary (<= 65536: uint16)")
    p.add_argument("--train-mb", type=float, default=4, help="corpus MB the tokenizer learns on")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--processes", type=int, default=2, help="tokenizing processes, both sides")
    p.add_argument("--shard-mb", type=float, default=64,
                   help="dcstore shard_bytes and LitData chunk_bytes, MB")  # fmt: skip
    p.add_argument("--pack-reps", type=int, default=2, help="interleaved pack repetitions")
    p.add_argument("--pack-rows", default=",".join(PACK_ROWS))
    p.add_argument("--skip-pack", action="store_true",
                   help="reuse the stores of an earlier run (no pack figures)")  # fmt: skip
    p.add_argument("--block-size", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=5, help="interleaved read repetitions")
    p.add_argument("--random-reads", type=int, default=1000)
    p.add_argument("--root", default="/tmp/dcstore-tokens-bench")
    p.add_argument("--out", default="", help="write the markdown report here")
    p.add_argument("--pack-one", default="", help=argparse.SUPPRESS)
    p.add_argument("--pack-out", default="", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.root = str(Path(args.root).resolve())
    if args.pack_one:
        return pack_one(args)
    if args.vocab > 1 << 16:
        p.error("--vocab must be <= 65536 (uint16 ids, as both readers here assume)")
    root = Path(args.root)
    missing = [n for n in PACK_ROWS[:3] if not store_dir(root, n).is_dir()]
    if args.skip_pack and missing:
        p.error(f"--skip-pack: no earlier stores {missing} under {root}")
    root.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    from dcstore.crypto import Keyring, write_key_file

    if not (root / "kek.json").exists():
        write_key_file(root / "kek.json", Keyring.generate())
    corpus = make_corpus(root, args)
    tokenizer = make_tokenizer(root, corpus, args)

    packs: dict[str, list[dict[str, Any]]] = {}
    if not args.skip_pack:
        rows = [r for r in args.pack_rows.split(",") if r]
        for rep in range(args.pack_reps):
            order = rows[rep % len(rows) :] + rows[: rep % len(rows)]
            for name in order:
                r = run_pack(name, tokenizer, args)
                packs.setdefault(name, []).append(r)
                mb_s = corpus["text_bytes"] / MB / r["seconds"]
                tok_s = r["tokens"] / r["seconds"] / 1e6
                print(f"pack rep {rep} {name:18} {r['seconds']:6.1f} s {mb_s:5.2f} MB/s text "
                      f"{tok_s:5.2f} M tokens/s", file=sys.stderr)  # fmt: skip
        shutil.rmtree(store_dir(root, "dcstore-default"), ignore_errors=True)

    args.flat = make_flat(root)
    args.layout = store_layout(root)
    stream_check = check_same_stream(args)
    warm_page_cache(root)
    # One uncapped epoch per loader (also a warm-up): how many blocks each epoch holds.
    args.n_blocks = None
    natural = {
        name: run_epoch(name, args, args.workers, None)["blocks"] for name in READ_ROWS + RING_ROWS
    }
    args.n_blocks = min(natural.values())
    results = interleaved(args, args.workers, args.reps, "read")
    in_process = interleaved(args, 0, args.reps, "in-process")
    access = random_access(args)
    args.load = (load_start, os.getloadavg())
    report = render(args, corpus, packs, natural, stream_check, results, in_process, access)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


# -- report -----------------------------------------------------------------------------------


def _ratios(results: dict, a: str, b: str, key: str) -> tuple[float, str]:
    per = [x[key] / y[key] for x, y in zip(results[a], results[b], strict=True)]
    return statistics.median(per), ", ".join(f"{r:.2f}" for r in per)


def read_table(results: dict, block: int) -> list[str]:
    rows = [
        "| loader | blocks | tokens | blocks/s | M tokens/s | steady blocks/s | first batch s | "
        "CPU us/block | reps (blocks/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    med = {k: {m: statistics.median(r[m] for r in rs) for m in rs[0] if m != "shape"}
           for k, rs in results.items()}  # fmt: skip
    for name in sorted(med, key=lambda k: -med[k]["blocks_s"]):
        m = med[name]
        rows.append(
            f"| {name} | {m['blocks']:,.0f} | {m['blocks'] * block:,.0f} | {m['blocks_s']:.0f} | "
            f"{m['blocks_s'] * block / 1e6:.1f} | {m['steady_blocks_s']:.0f} | "
            f"{m['first_batch_s']:.3f} | {m['cpu_us']:.0f} | "
            + ", ".join(f"{r['blocks_s']:.0f}" for r in results[name])
            + " |"
        )
    return rows


def render(
    args: argparse.Namespace, corpus: dict, packs: dict, natural: dict, stream_check: str,
    results: dict, in_process: dict, access: dict,
) -> str:  # fmt: skip
    block = args.block_size
    cmd = " ".join([".venv/bin/python", *sys.argv])
    (l1, l5, _), (e1, e5, _) = args.load
    lines = [
        "# Token datasets: dcstore vs LitData TokensLoader vs a memmap floor",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, litdata {_version('litdata')}, tokenizers "
        f"{_version('tokenizers')}. The machine is shared with other work: load average "
        f"(1 / 5 min) {l1:.1f} / {l5:.1f} at the start, {e1:.1f} / {e5:.1f} at the end.",
        "",
        f"Corpus: {corpus['documents']} synthetic documents (seeded random words, Zipf 0.8 over "
        f"300k words), {corpus['text_bytes'] / MB:.1f} MB of text in {args.files} JSONL files "
        f"({corpus['file_bytes'] / MB:.1f} MB on disk); byte-level BPE, vocabulary {args.vocab}, "
        f"trained on its first {args.train_mb:g} MB; `{EOD}` after each document.",
        "",
    ]
    if packs:
        lines += [
            f"## Pack ({args.pack_reps} rep(s), median; {args.processes} tokenizing processes "
            "unless noted, each run in a fresh child process into an empty directory)",
            "",
            "| packer | seconds | MB/s text | M tokens/s | CPU s | tokens stored | reps (s) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, rs in packs.items():
            sec = statistics.median(r["seconds"] for r in rs)
            cpu = statistics.median(r["cpu_s"] for r in rs)
            label = {
                "dcstore": f"dcstore `pack_text(processes={args.processes})`",
                "dcstore-encrypted": f"dcstore-encrypted `pack_text(processes={args.processes}, "
                "keys=...)`",
                "litdata": f"litdata `optimize(num_workers={args.processes}, "
                "item_loader=TokensLoader())`",
                "dcstore-default": "dcstore-default `pack_text()` (1 process, tokenizer threads)",
            }[name]
            lines.append(
                f"| {label} | {sec:.1f} | {corpus['text_bytes'] / MB / sec:.2f} | "
                f"{rs[-1]['tokens'] / sec / 1e6:.2f} | {cpu:.1f} | {rs[-1]['tokens']:,} | "
                + ", ".join(f"{r['seconds']:.1f}" for r in rs)
                + " |"
            )
        if "dcstore" in packs and "litdata" in packs:
            for name in ("dcstore", "dcstore-encrypted", "dcstore-default"):
                if name in packs:
                    ratio = statistics.median(r["seconds"] for r in packs["litdata"]) / (
                        statistics.median(r["seconds"] for r in packs[name])
                    )
                    lines.append(f"\n{name} / litdata pack throughput: {ratio:.2f}x")
        lines.append("")
    n = args.n_blocks
    lines += [
        f"## Read: blocks of {block} tokens, DataLoader(batch_size={args.batch}, "
        f"num_workers={args.workers}), shuffle on, page cache warm, {args.reps} interleaved reps "
        "(order rotated), median",
        "",
        f"Every row reads exactly {n:,} blocks = {n * block:,} tokens (the fewest any epoch "
        "holds). Blocks in one full epoch of each loader (an uncapped warm-up epoch, counted): "
        + ", ".join(f"{k} {v:,}" for k, v in natural.items())
        + f". Check: {stream_check}. blocks/s counts from loader creation (worker start-up "
        "included); steady excludes the first batch; CPU is this process plus its workers.",
        "",
        *read_table(results, block),
        "",
        "Ratios (per rep, loaders of one rep ran back to back; median of the per-rep ratios):",
        "",
    ]
    for ours in ("dcstore", "dcstore-encrypted", *RING_ROWS):
        for other, goal in (("litdata", ">= 1.5x"), ("memmap-floor", ">= 0.8x"),
                            ("litdata-full-shuffle", "none, context")):  # fmt: skip
            r, per = _ratios(results, ours, other, "blocks_s")
            rs, pers = _ratios(results, ours, other, "steady_blocks_s")
            lines.append(
                f"- {ours} / {other}: **{r:.2f}x** blocks/s (reps {per}); steady state "
                f"{rs:.2f}x (reps {pers}); goal {goal}"
            )
    lines += [
        "",
        "### The same datasets without DataLoader (format cost alone)",
        "",
        "Each dataset iterated in the main process, no workers, one block at a time, shuffle "
        f"on, the same {n:,} blocks, {args.reps} interleaved reps: what each reader costs "
        "before torch's worker hand-off (which bounds every row of the table above).",
        "",
        *read_table(in_process, block),
        "",
    ]
    for ours in ("dcstore", "dcstore-encrypted"):
        parts = []
        for other in ("litdata", "memmap-floor"):
            r, per = _ratios(in_process, ours, other, "blocks_s")
            parts.append(f"{ours} / {other} {r:.2f}x (reps {per})")
        lines.append("- " + "; ".join(parts))
    lines += [
        "",
        f"## Random access: `read(i)` of one {block}-token block, {args.random_reads} seeded "
        "random indices after 20 warm-up reads, local store, page cache warm; the readers "
        "take turns index by index",
        "",
        "| reader | p50 ms | p99 ms | max ms | mean ms | reads >= 5 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    label = {
        "dcstore": "dcstore `TokenDataset.read(i)`",
        "dcstore-encrypted": "dcstore-encrypted `TokenDataset.read(i)`",
        "litdata": "litdata `StreamingDataset[i]` (context)",
        "memmap-floor": "memmap slice copy (context)",
    }
    for name, a in access.items():
        lines.append(
            f"| {label[name]} | {a['p50']:.3f} | {a['p99']:.3f} | {a['max']:.3f} | "
            f"{a['mean']:.3f} | {a['over_5ms']} of {a['n']} |"
        )
    lines += ["", *method_notes(args)]
    return "\n".join(lines) + "\n"


def method_notes(args: argparse.Namespace) -> list[str]:
    """What favours or handicaps each side, by construction (true whatever the figures)."""
    window_mib = 256 * args.block_size * 2 / 2**20
    return [
        "## How the sides differ by construction",
        "",
        f"- Pack, same work: {args.processes} single-threaded tokenizing processes on each side "
        "(`TOKENIZERS_PARALLELISM=false`), the same tokenizer file and documents, "
        f"`{EOD}` after each document; the stored token counts are in the table.",
        "- Pack, different shapes: `pack_text` parses the JSONL in its main process and hands "
        "batches of 512 documents to forked workers (`encode_batch`), so 3 busy processes "
        "share the CPUs. LitData's spawned workers each read, parse and tokenize their share "
        "of the files one document at a time (`encode`, as its README's `fn` does) and write "
        "their own chunks; its time includes starting fresh interpreters that import torch "
        "and litdata (about 3 s of CPU each here), which a bigger corpus amortizes.",
        f"- Shuffle: {args.layout}. dcstore permutes shard order, then all the blocks of "
        "each worker's contiguous share of a shard. LitData (default `FullShuffle`) permutes "
        f"chunk order, then aligned windows of 256 blocks ({window_mib:g} MiB of tokens) and "
        "the blocks inside each window, so consecutive blocks come from the same window: "
        "weaker mixing and better locality than dcstore's (it would favour LitData on a cold "
        "or remote store; with a warm page cache it matters little). `litdata-full-shuffle` is "
        "LitData with `item_shuffle_window=0` (a full permutation in each chunk). memmap-floor "
        "reads a global permutation of all blocks (the strongest mixing).",
        "- Counting: LitData with `drop_last=True` hands out whole batches only, so its epoch "
        "can hold a few blocks fewer; every row stops at the same block count, so dcstore and "
        "the floor skip their last few blocks (and their partial last batches).",
        f"- Transport: a batch is {args.batch} x {args.block_size} uint16 tokens "
        f"({args.batch * args.block_size * 2 // 1024} KiB); torch's per-batch worker hand-off "
        "(collate into a fresh shared-memory tensor, a file descriptor sent, unpickled) costs "
        "the same for every row and bounds all of them (compare CPU us/block with and without "
        "DataLoader). The memmap floor is a floor for the format, not for that transport.",
        "- `dcstore-ring` rows: the same TokenDataset through dcstore's `RingLoader` "
        "(`RingLoader(ds, batch_size, num_workers)`, the same 2 workers and batch), whose "
        "workers collate into reusable shared-memory slots and send a slot number: a "
        "different transport, offered by dcstore to its users; LitData's `StreamingDataLoader` "
        "is a `DataLoader`, so it has none. The plain `dcstore` rows are the like-for-like "
        "format comparison.",
        "- Encrypted random access: AES-256-GCM segments (4 MiB by default) are authenticated "
        "whole, so `read(i)` of one block maps and decrypts its whole segment(s).",
    ]


def _version(module: str) -> str:
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return version(module)
    return "?"


if __name__ == "__main__":
    sys.exit(main())
