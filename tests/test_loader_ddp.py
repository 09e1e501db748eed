"""Real torch.distributed (gloo, 2 ranks): equal steps per rank and exactly-once coverage."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

import dcstore.loaders.versions as versions_module
import dcstore.tokens.dataset as token_dataset_module
from dcstore.errors import VersionChangedError
from dcstore.loaders import ShardedDataset, ShardWriter, agreement
from dcstore.loaders.agreement import agree_on_version
from dcstore.tokens import TokenDataset, TokenWriter

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_entry(rank: int, port: int, out: str, body: Callable[..., Any], args: tuple) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        gathered: list = [None] * WORLD
        dist.all_gather_object(gathered, body(rank, out, *args))
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def in_two_ranks(tmp_path: Path, body: Callable[..., Any], *args: Any) -> list[Any]:
    """``body(rank, scratch, *args)`` in each of 2 forked gloo ranks: their results (JSON)."""
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    out = str(tmp_path / "result.json")
    mp.start_processes(_rank_entry, args=(_free_port(), out, body, args), nprocs=WORLD,
                       start_method="fork")  # fmt: skip
    with open(out) as f:
        return json.load(f)


def _epochs(rank: int, scratch: str, url: str) -> dict[int, dict[str, Any]]:
    ds = ShardedDataset(url, shuffle=True, seed=5).map(lambda s: s["__index__"])
    results = {}
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        steps, seen = 0, []
        for batch in DataLoader(ds, batch_size=7, num_workers=2):
            steps += 1
            seen.extend(int(i) for i in batch)
            dist.barrier()  # a collective per step: unequal step counts would hang here
        results[epoch] = {"steps": steps, "seen": seen}
    return results


@pytest.mark.timeout(300)
def test_two_ranks_equal_steps_and_exactly_once(tmp_path) -> None:
    url = f"file://{tmp_path / 'ds'}"
    with ShardWriter(url, shard_size=3000) as writer:  # 101 samples in uneven shards
        for i in range(101):
            writer.write({"__key__": f"s{i:04d}", "bin": bytes(i * 37 % 700)})
    ranks = in_two_ranks(tmp_path, _epochs, url)
    orders = []
    for epoch in ("0", "1"):
        assert ranks[0][epoch]["steps"] == ranks[1][epoch]["steps"]
        seen = ranks[0][epoch]["seen"] + ranks[1][epoch]["seen"]
        assert len(seen) == 102 and set(seen) == set(range(101))  # one padded repeat
        orders.append(seen)
    assert orders[0] != orders[1]  # set_epoch reshuffles


# -- a pack commits between the ranks' opens: they still read one version ----------------

SAMPLES = {"old": 101, "new": 60}


def _pack(url: str, generation: str, keep: int) -> None:
    with ShardWriter(url, shard_size=3000, keep=keep) as writer:
        for i in range(SAMPLES[generation]):
            writer.write({"__key__": f"s{i:04d}", "txt": generation})


def _pack_tokens(url: str, generation: str) -> None:
    with TokenWriter(url, vocab_size=1000, shard_bytes=200) as writer:
        for i in range(SAMPLES[generation]):
            writer.write([i, 900 + list(SAMPLES).index(generation)])


def _race(rank: int, scratch: str, url: str, early: int, kind: str, keep: int) -> dict:
    """The ``early`` rank opens the manifest, then the other packs a new version and opens."""
    module, name = (
        (versions_module, "load_manifest")
        if kind == "samples"
        else (token_dataset_module, "load_token_manifest")
    )
    real, flag, calls = getattr(module, name), scratch + ".opened", []

    def first_open_in_order(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        if len(calls) == 1 and rank != early:
            while not os.path.exists(flag):
                time.sleep(0.01)
            if kind == "samples":
                _pack(url, "new", keep)
            else:
                _pack_tokens(url, "new")
        found = real(*args, **kwargs)
        if len(calls) == 1 and rank == early:
            open(flag, "w").close()
        return found

    setattr(module, name, first_open_in_order)
    if kind == "samples":
        dataset: Any = ShardedDataset(url, shuffle=True, seed=3)
        items = [[s["txt"].decode(), int(s["__index__"])] for s in dataset]
    else:
        dataset = TokenDataset(url, block_size=2, shuffle=True, seed=3)
        items = [[{900: "old", 901: "new"}[int(b[1])], int(b[0])] for b in dataset]
    return {"version": dataset.manifest.version, "items": items}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("kind", "early", "keep", "read"),
    [
        ("samples", 0, 2, "old"),  # rank 1 saw the new version: it reads rank 0's archive
        ("samples", 1, 2, "new"),  # rank 1 saw the old one: it reopens the current
        ("samples", 0, 1, "new"),  # rank 0's version is gone: both reopen the current
        ("tokens", 0, 0, "old"),  # a token corpus: rank 1 reads the archive too
    ],
)
def test_ranks_agree_on_the_version_when_a_pack_commits_between_their_opens(
    tmp_path: Path, kind: str, early: int, keep: int, read: str
) -> None:
    url = f"file://{tmp_path / 'ds'}"
    if kind == "samples":
        _pack(url, "old", 2)
    else:
        _pack_tokens(url, "old")
    ranks = in_two_ranks(tmp_path, _race, url, early, kind, keep)
    assert ranks[0]["version"] == ranks[1]["version"]
    items = ranks[0]["items"] + ranks[1]["items"]
    assert {generation for generation, _ in items} == {read}
    assert sorted({index for _, index in items}) == list(range(SAMPLES[read]))
    assert len(ranks[0]["items"]) == len(ranks[1]["items"])


def _never_agree(rank: int, scratch: str, backend: str) -> str:
    """Each rank only ever finds a version of its own: every rank must give up."""
    agreement.default_backend = lambda: backend  # "nccl": the names go over a gloo group
    mine = SimpleNamespace(version=f"v{rank}")
    try:
        agree_on_version(mine, lambda _v: mine, lambda: mine)
    except VersionChangedError as exc:
        return str(exc)
    return "agreed"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_ranks_that_cannot_agree_all_raise_naming_the_versions(
    tmp_path: Path, backend: str
) -> None:
    outcomes = in_two_ranks(tmp_path, _never_agree, backend)
    assert all("could not agree" in o and "v0, v1" in o for o in outcomes), outcomes
