"""Real torch.distributed (gloo, 2 ranks): equal steps per rank and exactly-once coverage."""

from __future__ import annotations

import json
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from dcstore.loaders import ShardedDataset, ShardWriter

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, url: str, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        ds = ShardedDataset(url, shuffle=True, seed=5).map(lambda s: s["__index__"])
        results = {}
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            steps, seen = 0, []
            for batch in DataLoader(ds, batch_size=7, num_workers=2):
                steps += 1
                seen.extend(int(i) for i in batch)
                dist.barrier()  # a collective per step: unequal step counts would hang here
            gathered: list = [None] * WORLD
            dist.all_gather_object(gathered, {"steps": steps, "seen": seen})
            results[epoch] = gathered
        if rank == 0:
            with open(out, "w") as f:
                json.dump(results, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_ranks_equal_steps_and_exactly_once(tmp_path) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    url = f"file://{tmp_path / 'ds'}"
    with ShardWriter(url, shard_size=3000) as writer:  # 101 samples in uneven shards
        for i in range(101):
            writer.write({"__key__": f"s{i:04d}", "bin": bytes(i * 37 % 700)})
    out = str(tmp_path / "result.json")
    mp.start_processes(_rank_main, args=(url, _free_port(), out), nprocs=WORLD,
                       start_method="fork")  # fmt: skip
    with open(out) as f:
        results = json.load(f)
    orders = []
    for per_rank in results.values():
        assert per_rank[0]["steps"] == per_rank[1]["steps"]
        seen = per_rank[0]["seen"] + per_rank[1]["seen"]
        assert len(seen) == 102 and set(seen) == set(range(101))  # one padded repeat
        orders.append(seen)
    assert orders[0] != orders[1]  # set_epoch reshuffles
