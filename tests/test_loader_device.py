"""DeviceLoader: CPU fallback, data-wait metering, and (marker gpu) the CUDA path."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dcstore.errors import IntegrityError
from dcstore.loaders import DataWaitMeter, DeviceLoader, RingLoader, ShardedDataset, ShardWriter
from dcstore.loaders.receive import Received


def batches(n: int, delay: float = 0.0):
    for i in range(n):
        time.sleep(delay)
        yield {"x": torch.full((4, 8), i, dtype=torch.uint8), "label": torch.tensor([i]), "k": i}


def test_cpu_fallback_passes_batches_through() -> None:
    loader = DeviceLoader(batches(5), "cpu")
    got = list(loader)
    assert [b["k"] for b in got] == list(range(5)) and got[3]["x"].device.type == "cpu"
    assert loader.summary()["steps"] == 5


def test_data_wait_is_measured() -> None:
    meter = DataWaitMeter(warmup=0)
    for _ in meter.wrap(batches(6, delay=0.02)):
        time.sleep(0.02)  # the "step": wait is about half of it
    s = meter.summary()
    assert 15 < s["data_wait_pct"] < 85 and s["wait_p50_ms"] >= 15
    meter = DataWaitMeter(warmup=0)
    for _ in meter.wrap(batches(6)):
        time.sleep(0.02)
    assert meter.summary()["data_wait_pct"] < 10


def test_batches_are_received_ahead_in_a_thread() -> None:
    def timed(depth: int) -> float:
        loader = DeviceLoader(batches(8, delay=0.02), "cpu", warmup=1, depth=depth)
        for _ in loader:
            time.sleep(0.04)  # the step: long enough for the thread to receive the next batch
        return loader.summary()["data_wait_pct"]

    assert timed(2) < 15 < timed(0)


def test_receiving_is_bounded_and_keeps_order() -> None:
    produced = []

    def counted():
        for b in batches(50):
            produced.append(b["k"])
            yield b

    it = iter(Received(counted(), depth=2))
    assert next(it)["k"] == 0
    time.sleep(0.2)
    assert len(produced) <= 4  # the one handed out, two queued, one being put
    assert [b["k"] for b in it] == list(range(1, 50))


def test_loader_errors_are_raised_in_the_caller() -> None:
    def failing():
        yield from batches(3)
        raise IntegrityError("shard s-00002.tar: bad tar header")

    got = []
    with pytest.raises(IntegrityError, match="s-00002"):
        for b in DeviceLoader(failing(), "cpu"):
            got.append(b["k"])
    assert got == [0, 1, 2]


def _receivers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dcstore-receive"]


def test_breaking_out_stops_the_thread_and_the_workers(tmp_path) -> None:
    url = f"file://{tmp_path}"
    with ShardWriter(url, shard_size=1 << 16) as writer:
        for i in range(2000):
            writer.write({"__key__": f"s{i:05d}", "bin": bytes(512)})
    ds = ShardedDataset(url).map(lambda s: s["__index__"])
    for i, _ in enumerate(DeviceLoader(DataLoader(ds, batch_size=4, num_workers=2), "cpu")):
        if i == 2:
            break
    deadline = time.monotonic() + 10
    while (_receivers() or mp.active_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _receivers() and not mp.active_children()


def slow_index(sample) -> int:
    time.sleep(0.002)
    return sample["__index__"]


def test_an_abandoned_pass_does_not_race_the_next_one(tmp_path) -> None:
    url = f"file://{tmp_path}"
    with ShardWriter(url, shard_size=1 << 16) as writer:
        for i in range(800):
            writer.write({"__key__": f"s{i:05d}", "bin": bytes(256)})
    ds = ShardedDataset(url, shuffle=True).map(slow_index)  # the old thread waits in next()
    loader = DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True)
    feed = DeviceLoader(loader, "cpu")
    assert feed.warmup == 2  # each worker's first batch includes its start-up
    for i, _ in enumerate(feed):  # epoch 0, abandoned after 3 batches
        old = feed._receiver.thread
        if i == 2:
            break
    assert not old.is_alive()  # it let go of the loader when the pass was left
    ds.set_epoch(1)
    second = iter(feed)
    assert sorted(int(x) for b in second for x in b) == list(range(800))


def index_of(sample) -> int:
    return sample["__index__"]


@pytest.mark.parametrize("kind", ["stateful", "ring"])
@pytest.mark.parametrize("depth", [0, 2, 4])
def test_a_resumed_device_loader_loses_no_batch_received_ahead(tmp_path, kind, depth) -> None:
    """The loader's own state_dict counted the ``depth + 1`` batches received ahead as
    consumed: a run resumed from it lost them (952 of 1000 samples at depth 2)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    url = f"file://{tmp_path}"
    with ShardWriter(url, shard_size=1 << 14) as writer:
        for i in range(600):
            writer.write({"__key__": f"s{i:05d}", "cls": str(i).encode()})

    def feed() -> DeviceLoader:
        ds = ShardedDataset(url, shuffle=True, seed=3)
        if kind == "ring":
            inner = RingLoader(ds.to_tuple("__index__", "cls"), batch_size=10, num_workers=2)
        else:
            inner = StatefulDataLoader(ds.map(index_of), batch_size=10, num_workers=2)
        return DeviceLoader(inner, "cpu", depth=depth)

    def indices(batch) -> list[int]:
        return [int(i) for i in (batch[0] if kind == "ring" else batch)]

    first, seen = feed(), []
    for batch in first:
        seen += indices(batch)
        if len(seen) == 150:
            break
    state = first.state_dict()
    resumed = feed()
    resumed.load_state_dict(state)
    for batch in resumed:
        seen += indices(batch)
    assert sorted(seen) == list(range(600))


def test_a_state_taken_after_a_whole_pass_resumes_where_the_loader_would(tmp_path) -> None:
    """It kept the state after the last batch, not the epoch's end: resumed, an empty
    epoch (a loop checkpointing at each epoch's end lost the next one)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    url = f"file://{tmp_path}"
    with ShardWriter(url) as writer:
        for i in range(60):
            writer.write({"__key__": f"s{i:03d}", "cls": i})

    def feed() -> DeviceLoader:
        inner = StatefulDataLoader(ShardedDataset(url).map(index_of), batch_size=8, num_workers=2)
        return DeviceLoader(inner, "cpu")

    first = feed()
    assert sum(len(b) for b in first) == 60
    resumed = feed()
    resumed.load_state_dict(first.state_dict())
    assert sum(len(b) for b in resumed) == 60  # the next epoch, as the loader's own state gives


class Plain(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter([(b"x" * (i + 1), i) for i in range(20)])


def test_a_ring_loader_over_a_dataset_that_cannot_resume_still_feeds() -> None:
    """Taking states made every pass of such a RingLoader fail at once."""
    from dcstore.errors import ConfigError

    feed = DeviceLoader(RingLoader(Plain(), 5), "cpu")
    assert sum(len(b[1]) for b in feed) == 20
    with pytest.raises(ConfigError, match="cannot be resumed"):
        feed.state_dict()


def test_a_device_loader_over_a_plain_loader_says_it_cannot_resume() -> None:
    with pytest.raises(TypeError, match="has no state_dict"):
        DeviceLoader(batches(3), "cpu").state_dict()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copies_on_a_side_stream(tmp_path) -> None:
    url = f"file://{tmp_path}"
    with ShardWriter(url, shard_size=1 << 20) as writer:
        for i in range(512):
            writer.write({"__key__": f"s{i:04d}", "bin": bytes([i % 251]) * 4096, "cls": i})

    def to_tensor(s):
        return torch.frombuffer(bytearray(s["bin"]), dtype=torch.uint8), s["__index__"]

    ds = ShardedDataset(url, shuffle=True).map(to_tensor)
    loader = DeviceLoader(DataLoader(ds, batch_size=64, num_workers=2, pin_memory=True), "cuda")
    seen = []
    for x, idx in loader:
        assert x.is_cuda and x.shape == (len(idx), 4096)
        assert torch.equal(x[:, 0].cpu().long(), (idx.cpu() % 251).long())
        seen.extend(idx.cpu().tolist())
        torch.cuda._sleep(1_000_000)  # ~a step of GPU work overlapping the next copy
    assert sorted(seen) == list(range(512))
    assert loader.summary()["steps"] == 8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ring_batches_are_pinned_copied_and_their_slots_reused(tmp_path) -> None:
    url = f"file://{tmp_path}"
    with ShardWriter(url, shard_size=1 << 20) as writer:
        for i in range(512):
            writer.write({"__key__": f"s{i:04d}", "bin": bytes([i % 251]) * 4096, "cls": i})

    def to_array(s):
        return np.frombuffer(s["bin"], dtype=np.uint8), s["__index__"]

    ring = RingLoader(ShardedDataset(url, shuffle=True).map(to_array), 64, num_workers=2)
    loader = DeviceLoader(ring, "cuda")
    seen = []
    for x, idx in loader:
        assert x.is_cuda and x.shape == (len(idx), 4096)
        assert torch.equal(x[:, 0].cpu().long(), (idx.cpu() % 251).long())
        seen.extend(idx.cpu().tolist())
        torch.cuda._sleep(1_000_000)
    assert sorted(seen) == list(range(512))
    assert ring.stats["retired"] == 0  # pinned copies freed every slot for reuse
