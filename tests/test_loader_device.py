"""DeviceLoader: CPU fallback, data-wait metering, and (marker gpu) the CUDA path."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import DataLoader

from dcstore.loaders import DataWaitMeter, DeviceLoader, ShardedDataset, ShardWriter


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
