"""examples/text_classifier.py end to end, CI-sized: the loss goes down, and with keys
the token shards on disk hold neither a corpus word nor a document's token ids."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "text_classifier.py"
TINY = ["--docs", "600", "--steps", "40", "--hidden", "32", "--layers", "1"]
FINAL = re.compile(r"^final: loss ([0-9.]+) \(from ([0-9.]+)\), eval accuracy ([0-9.]+)")

pytestmark = pytest.mark.slow


def run_example(workdir: Path, *extra: str) -> str:
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *TINY, "--workdir", str(workdir), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def final_losses(stdout: str) -> tuple[float, float]:
    """(last, first) window losses of the example's final line."""
    match = FINAL.match(stdout.strip().splitlines()[-1])
    assert match, stdout
    return float(match[1]), float(match[2])


def shard_bytes(store: Path) -> bytes:
    """Every token shard of the store, in key order (the token stream when not encrypted)."""
    shards = sorted((store / "tokens").rglob("*.bin"))
    assert shards, f"no token shards under {store / 'tokens'}"
    return b"".join(p.read_bytes() for p in shards)


def first_document(workdir: Path, corpus: str = "corpus") -> tuple[str, bytes]:
    """A word of the corpus' first document, and its token ids as the shards store them."""
    from tokenizers import Tokenizer

    with open(workdir / corpus / "part-0.jsonl", encoding="utf-8") as f:
        text = json.loads(f.readline())["text"]
    ids = Tokenizer.from_file(str(workdir / "tokenizer.json")).encode(text).ids
    word = max(text.split(), key=len)
    return word, np.asarray(ids, dtype="<u2").tobytes()


def test_loss_goes_down(tmp_path: Path) -> None:
    last, first = final_losses(run_example(tmp_path))
    assert last < first
    # plain shards: the document's ids are there (the check below would catch them)
    word, ids = first_document(tmp_path)
    data = shard_bytes(tmp_path / "store")
    assert ids in data
    assert word.encode() not in data  # ids, not text, even unencrypted


def test_encrypted_shards_hold_no_plaintext(tmp_path: Path) -> None:
    kek = tmp_path / "kek.json"
    last, first = final_losses(run_example(tmp_path, "--keys", str(kek)))
    assert last < first
    assert kek.is_file()
    for store, corpus in (("store", "corpus"), ("eval-store", "eval")):
        word, ids = first_document(tmp_path, corpus)
        data = shard_bytes(tmp_path / store)
        assert word.encode() not in data
        assert ids not in data
