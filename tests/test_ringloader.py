"""RingLoader over a real local store: batch shapes, exactly-once, lifetimes, resumption,
worker and main-process crashes (no shared memory left behind)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from dcstore.errors import ConfigError
from dcstore.loaders import DeviceLoader, RingLoader, ShardedDataset, ShardWriter, stages
from dcstore.loaders.ring import (
    ALIGN,
    FREE,
    RETIRED,
    BytesLeaf,
    Delivery,
    SlotWriter,
    new_flags,
)

N = 500


def payload(i: int) -> bytes:
    return bytes([i % 251]) * (100 + (i * 37) % 3000)


@pytest.fixture(scope="module")
def dataset_url(tmp_path_factory) -> str:
    url = f"file://{tmp_path_factory.mktemp('ringds')}"
    with ShardWriter(url, shard_size=60_000) as writer:
        for i in range(N):
            writer.write({"__key__": f"k{i:05d}", "bin": payload(i), "cls": i % 5})
    return url


def fields(sample: dict) -> dict:
    return {"i": sample["__index__"], "bin": sample["bin"], "key": sample["__key__"]}


def dataset(url: str, **kw) -> ShardedDataset:
    return ShardedDataset(url, shuffle=True, seed=3, **kw).map(fields)


def check(batch) -> list[int]:
    """The batch's sample indices, after checking every payload byte for byte."""
    got = batch["i"].tolist()
    assert batch["i"].dtype == torch.int64
    for i, view, key in zip(got, batch["bin"], batch["key"], strict=True):
        assert view.dtype == torch.uint8 and bytes(view.numpy()) == payload(i)
        assert key == f"k{i:05d}"
    return got


@pytest.mark.parametrize("workers", [0, 2])
def test_every_sample_once_with_intact_payloads(dataset_url, workers) -> None:
    loader = RingLoader(dataset(dataset_url), batch_size=32, num_workers=workers)
    for _ in range(2):  # a second epoch reuses nothing stale
        seen = [i for batch in loader for i in check(batch)]
        assert sorted(seen) == list(range(N))
        assert loader.stats["batches"] == len(loader)
        assert loader.stats["retired"] == 0  # a plain loop frees every slot for reuse
        assert loader.stats["buffers"] <= max(1, workers) * loader.slots_per_worker


def test_ranks_split_the_epoch_and_match_the_plain_dataloader(dataset_url) -> None:
    seen: Counter[int] = Counter()
    for rank in range(3):
        ring = RingLoader(dataset(dataset_url, rank=rank, world_size=3), 16, num_workers=2)
        plain = DataLoader(dataset(dataset_url, rank=rank, world_size=3), 16, num_workers=2,
                           collate_fn=lambda b: [s["i"] for s in b])  # fmt: skip
        got = [i for batch in ring for i in check(batch)]
        assert got == [i for batch in plain for i in batch]  # same plan, same order
        seen.update(got)
    assert set(seen) == set(range(N))


def test_batches_kept_by_the_caller_are_never_overwritten(dataset_url) -> None:
    loader = RingLoader(dataset(dataset_url), batch_size=32, num_workers=2, slot_bytes=4096)
    kept = list(loader)  # every batch kept: slots are given up, not rewritten
    assert sorted(i for batch in kept for i in check(batch)) == list(range(N))
    assert loader.stats["retired"] > 0


def test_collates_like_default_collate() -> None:
    samples = [
        {"x": torch.full((2, 3), float(i)), "n": np.arange(4) + i, "y": i, "f": i / 2,
         "b": i % 2 == 0, "s": f"s{i}", "none": None, "t": (i, torch.tensor([i, -i]))}
        for i in range(5)
    ]  # fmt: skip

    class Fixed(IterableDataset):
        def __iter__(self):
            return iter(samples)

    (batch,) = list(RingLoader(Fixed(), batch_size=5))
    expected = default_collate([{k: v for k, v in s.items() if k != "none"} for s in samples])
    for key in ("x", "n", "y", "f", "b"):
        assert torch.equal(batch[key], expected[key]) and batch[key].dtype == expected[key].dtype
    assert batch["s"] == expected["s"] and batch["none"] == [None] * 5
    assert isinstance(batch["t"], tuple)
    assert torch.equal(batch["t"][0], expected["t"][0])
    assert torch.equal(batch["t"][1], expected["t"][1])


def test_byte_strings_of_several_fields_arrive_intact_through_growing_slots() -> None:
    rng = random.Random(5)
    samples = [
        {"a": rng.randbytes(rng.randrange(5000)), "b": bytearray(rng.randbytes(rng.randrange(300))),
         "t": (memoryview(rng.randbytes(rng.randrange(2000))), i)}
        for i in range(40)
    ]  # fmt: skip

    class Fixed(IterableDataset):
        def __iter__(self):
            return iter(samples)

    loader = RingLoader(Fixed(), batch_size=16, slot_bytes=4096)  # every batch outgrows it
    got = [s for batch in loader for s in zip(batch["a"], batch["b"], *batch["t"], strict=True)]
    assert len(got) == len(samples)
    for (a, b, t, i), sample in zip(got, samples, strict=True):
        assert bytes(a.numpy()) == sample["a"] and bytes(b.numpy()) == sample["b"]
        assert bytes(t.numpy()) == bytes(sample["t"][0]) and int(i) == sample["t"][1]
    assert loader.stats["buffers"] >= 2


@pytest.mark.parametrize("workers", [0, 2])
def test_empty_byte_strings_and_batches_without_bytes_arrive(tmp_path: Path, workers) -> None:
    """An empty field first (its slot had no buffer yet: "cannot modify read-only
    memory"), a batch of only empty fields, and one of only strings (a bare assert)."""
    url = f"file://{tmp_path}"
    with ShardWriter(url) as writer:
        for i in range(30):
            writer.write({"__key__": f"s{i:03d}", "txt": b"x" * i if i % 3 else b"", "cls": i})
    ds = ShardedDataset(url).to_tuple("txt", "cls")
    loader = RingLoader(ds, 8, num_workers=workers)
    got = {int(bytes(c.numpy())): bytes(t.numpy()) for b in loader for t, c in zip(*b, strict=True)}
    assert got == {i: b"x" * i if i % 3 else b"" for i in range(30)}
    empty = ShardedDataset(url).select(lambda s: s["txt"] == b"").to_tuple("txt")
    lengths = [len(t) for (b,) in RingLoader(empty, 4, num_workers=workers) for t in b]
    assert lengths == [0] * 10
    keys = [
        k
        for (b,) in RingLoader(ShardedDataset(url).to_tuple("__key__"), 8, num_workers=workers)
        for k in b
    ]
    assert sorted(keys) == [f"s{i:03d}" for i in range(30)]


def test_byte_strings_are_copied_as_each_sample_arrives() -> None:
    """A dataset that refills one buffer per sample still gets every sample's bytes; a
    single byte-string field is packed back to back, so a batch's payload is one span."""
    buffer = bytearray(64)

    class Refilled(IterableDataset):
        def __iter__(self):
            for i in range(10):
                buffer[:] = bytes([i]) * 64
                yield {"bin": memoryview(buffer)[: 8 + i], "i": i}

    batches = list(RingLoader(Refilled(), batch_size=4, slot_bytes=4096))
    views = [v for batch in batches for v in batch["bin"]]
    assert [bytes(v.numpy()) for v in views] == [bytes([i]) * (8 + i) for i in range(10)]
    for batch in batches:
        first, last = batch["bin"][0], batch["bin"][-1]
        span = last.storage_offset() + last.numel() - first.storage_offset()
        assert span == sum(v.numel() for v in batch["bin"])


def test_a_worker_writes_its_lowest_free_slot_and_never_waits_behind_a_held_one() -> None:
    flags = new_flags(1, 3)
    state = flags.numpy()[0]
    writer = SlotWriter(flags, 0, shared=False, min_bytes=1024, batch_size=2)

    def write() -> Delivery:
        for sample in (b"ab", b"cd"):
            writer.add(sample)
        return writer.finish([b"ab", b"cd"])

    assert [write().slot, write().slot] == [0, 1]  # both held by the main process now
    state[1] = FREE
    again = write()
    assert again.slot == 1 and again.buffer is None  # not slot 2: no third buffer yet
    state[:2] = (RETIRED, FREE)
    assert write().slot == 1
    renewed = write()  # slot 0 was given up while viewed: a new buffer, sent along
    assert renewed.slot == 0 and renewed.buffer is not None
    assert writer.allocations == 3 and writer.buffers[2] is None
    state[:] = FREE
    writer.add(b"left over from a pass that ended mid-batch")
    writer.discard()
    fresh = write()
    assert fresh.slot == 0 and fresh.tree == BytesLeaf(0, [2, 4]) and fresh.used == ALIGN


def test_a_first_batch_gets_one_buffer_sized_from_its_first_sample() -> None:
    writer = SlotWriter(new_flags(1, 2), 0, shared=False, min_bytes=1024, batch_size=8)
    samples = [{"bin": bytes(3000 + i)} for i in range(8)]
    for sample in samples:
        writer.add(sample)
    delivery = writer.finish(samples)
    assert writer.allocations == 1 and delivery.buffer is not None
    assert delivery.buffer.numel() >= sum(len(s["bin"]) for s in samples)


def test_a_buffer_is_sent_with_the_first_batch_handed_out_in_it() -> None:
    """Even when the batch it was made for was never finished (a pass that ended early)."""
    writer = SlotWriter(new_flags(1, 2), 0, shared=False, min_bytes=1024, batch_size=4)
    writer.add(b"x" * 5000)  # allocates the slot's buffer
    writer.discard()
    writer.add(b"y" * 10)
    delivery = writer.finish([b"y" * 10])
    assert delivery.slot == 0 and delivery.buffer is not None


class Ragged(IterableDataset):
    """Samples that cannot be stacked: images of two sizes, as tensors or arrays."""

    def __init__(self, make=torch.zeros) -> None:
        self.make = make

    def __iter__(self):
        return iter([(self.make((3, 4, 5)), 0), (self.make((3, 6, 5)), 1)])


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("make", [torch.zeros, np.zeros])
def test_unequal_samples_name_the_field_and_the_fix(workers, make) -> None:
    """Not torch's bare stack error: which field, both shapes, and what to do."""
    shapes = r"different shapes \(\[0\]: \(3, 4, 5\) and \(3, 6, 5\)\)"
    with pytest.raises(ValueError, match=rf"RingLoader: .* {shapes}; resize them .*=list"):
        list(RingLoader(Ragged(make), batch_size=2, num_workers=workers))


class Listed(IterableDataset):
    """The given samples, as they are."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


u8, i64, f16, f64 = torch.uint8, torch.int64, torch.float16, torch.float64


@pytest.mark.parametrize(
    "items",
    [
        [torch.tensor([1], dtype=u8), torch.tensor([300])],
        [np.array([1], np.int8), np.array([300], np.int64)],
        [torch.tensor([0.5], dtype=f16), torch.tensor([1e6], dtype=f64)],
        [np.array([1], np.uint8), np.array([300], np.int64)],
        [torch.tensor([1]), torch.tensor([0.5])],
        [torch.tensor([7]), torch.tensor([-3], dtype=torch.int8), torch.tensor([1 << 40])],
        [np.array([2**40]), np.array([1.5], np.float32)],
    ],
)
def test_a_column_of_mixed_dtypes_is_promoted_as_default_collate_does(items) -> None:
    """Review: the slot was typed from the first sample, so wider values were truncated
    (300 -> 44 in uint8, 1e6 -> inf in float16) or raised a bare TypeError."""
    samples = [{"v": item, "i": i} for i, item in enumerate(items)]
    (batch,) = list(RingLoader(Listed(samples), batch_size=len(samples)))
    expected = default_collate(samples)["v"]
    assert batch["v"].dtype == expected.dtype and torch.equal(batch["v"], expected)
    assert batch["i"].tolist() == list(range(len(items)))


def test_dtypes_torch_cannot_promote_name_the_field() -> None:
    """Review: uint16 beside int32 raised torch's bare RuntimeError, naming no field."""
    samples = [{"v": np.array([1], np.uint16)}, {"v": np.array([2], np.int32)}]
    with pytest.raises(RuntimeError):  # what default_collate does with the same column
        default_collate(samples)
    with pytest.raises(TypeError, match=r"RingLoader: \['v'\]: .*uint16"):
        list(RingLoader(Listed(samples), batch_size=2))


def test_a_byte_string_column_with_a_str_names_the_field() -> None:
    samples = [{"p": b"ab"}, {"p": "cd"}]
    with pytest.raises(TypeError, match=r"RingLoader: \['p'\]: sample 1 is a str, .*bytes"):
        list(RingLoader(Listed(samples), batch_size=2))


@pytest.mark.parametrize(
    "column",
    [
        [np.int64(1), np.int64(2)],
        [np.float32(0.5), np.float32(2)],
        [np.int8(1), np.int64(300)],
        [np.bool_(True), np.bool_(False)],
        [1, 2.5],
        [2.5, 1],
        [True, 2],
        [1, np.float64(2.5)],
        [np.array([1j]), np.array([2 + 0j])],
        [np.array([1j], np.complex64), np.array([2], np.int32)],
    ],
)
def test_numpy_scalars_mixed_numbers_and_complex_arrays_collate_like_default_collate(
    column,
) -> None:
    """Review: numpy scalars (labels), mixed int/float/bool numbers and complex arrays
    arrived as a plain list where default_collate gives a tensor."""
    samples = [{"v": v} for v in column]
    (batch,) = list(RingLoader(Listed(samples), batch_size=len(samples)))
    expected = default_collate(samples)["v"]
    assert isinstance(batch["v"], torch.Tensor), batch["v"]
    assert batch["v"].dtype == expected.dtype and torch.equal(batch["v"], expected)


def test_samples_without_keys_and_nested_fields_are_named_when_fields_differ() -> None:
    """Review: samples without a ``__key__`` were ``samples '?' and '?'``."""
    samples = [{"a": 1, "m": {"x": 1}}, {"a": 2, "m": {"x": 2}}, {"a": 3, "m": {"y": 3}}]
    fields = r"samples 0 and 2 of a batch have different fields in \['m'\] \(only in the first: "
    with pytest.raises(ValueError, match=rf"RingLoader: {fields}\['x'\]; only in the second: "):
        list(RingLoader(Listed(samples), batch_size=3))
    with pytest.raises(ValueError, match=r"batched\(\): samples 0 and 1 of a batch have dif"):
        list(stages.compose([{"a": 1}, {"b": 2}], [stages.batched(2)]))


class MissingField(IterableDataset):
    """webdataset-style samples where one lacks a field."""

    def __init__(self, lacking: int) -> None:
        self.lacking = lacking

    def __iter__(self):
        for i in range(4):
            sample = {"__key__": f"m{i}", "txt": b"t", "json": b"{}"}
            if i == self.lacking:
                del sample["json"]
            yield sample


@pytest.mark.parametrize("lacking", [0, 2])
def test_samples_with_different_fields_are_refused_naming_them(lacking) -> None:
    """A field the first sample lacked vanished from the whole batch; one a later
    sample lacked was a bare KeyError."""
    other = max(lacking, 1)
    fields = rf"samples 0 \('m0'\) and {other} \('m{other}'\) of a batch have different fields"
    with pytest.raises(ValueError, match=rf"RingLoader: {fields}"):
        list(RingLoader(MissingField(lacking), batch_size=4))
    with pytest.raises(ValueError, match=rf"batched\(\): {fields}.*collate_fn=list"):
        list(stages.compose(MissingField(lacking), [stages.batched(4)]))


def test_bad_arguments_are_config_errors(dataset_url) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        RingLoader(dataset(dataset_url), batch_size=0)
    with pytest.raises(ConfigError, match="persistent_workers"):
        RingLoader(dataset(dataset_url), batch_size=4, persistent_workers=True)
    with pytest.raises(ConfigError, match=r"drop \.batched\(\)"):
        RingLoader(dataset(dataset_url).batched(8), batch_size=4)


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"num_workers": "2"}, "num_workers"),
        ({"num_workers": 2.0}, "num_workers"),
        ({"num_workers": -1}, "num_workers"),
        ({"slot_bytes": "1MiB"}, "slot_bytes"),
        ({"slot_bytes": -5}, "slot_bytes"),
        ({"slot_bytes": 0}, "slot_bytes"),
        ({"hold": "2"}, "hold"),
        ({"hold": 0}, "hold"),
        ({"num_workers": 2, "prefetch_factor": 0}, "prefetch_factor"),
    ],
)
def test_bad_arguments_are_config_errors_at_construction(kw, named) -> None:
    """Review: accepted, they failed later with raw errors (or hung)."""
    with pytest.raises(ConfigError, match=rf"^{named} must be"):
        RingLoader(Listed([{"v": 1}]), batch_size=2, **kw)


def test_prefetch_factor_none_is_the_default_as_with_dataloader() -> None:
    loader = RingLoader(Listed([{"v": 1}]), batch_size=2, num_workers=2, prefetch_factor=None)
    assert loader.prefetch_factor == 4


@pytest.mark.parametrize("given", ["plain", b"plain", 5, None])
def test_a_dataset_that_is_not_an_iterable_of_samples_is_a_config_error(given) -> None:
    with pytest.raises(ConfigError, match=rf"dataset must be .*, got {type(given).__name__}"):
        RingLoader(given, 2)


@pytest.mark.parametrize(("before", "after"), [(2, 2), (2, 3), (0, 2)])
def test_resumes_after_the_last_batch_handed_out(dataset_url, before, after) -> None:
    first = RingLoader(dataset(dataset_url), batch_size=16, num_workers=before)
    seen: list[int] = []
    for n, batch in enumerate(first):
        seen += check(batch)
        if n == 9:
            state = first.state_dict()
            break
    second = RingLoader(dataset(dataset_url), batch_size=16, num_workers=after)
    second.load_state_dict(state)
    seen += [i for batch in second for i in check(batch)]
    assert sorted(seen) == list(range(N))


@pytest.mark.parametrize(("workers", "batch"), [(0, 16), (0, 7), (2, 16), (2, 7)])
def test_a_state_taken_after_the_loop_resumes_at_the_next_epoch(dataset_url, workers, batch):
    """Review: taken once the loop ended, the state had every worker at the end of its
    share and loaded as an empty pass, for every later epoch too (workers start from the
    loaded state); now it is the next epoch's start, as on the base."""
    first = RingLoader(dataset(dataset_url), batch_size=batch, num_workers=workers)
    assert sorted(i for b in first for i in check(b)) == list(range(N))
    state = first.state_dict()
    assert state["dataset"]["epoch"] == 1
    second = RingLoader(dataset(dataset_url), batch_size=batch, num_workers=workers)
    second.load_state_dict(state)
    for _ in range(2):
        assert sorted(i for b in second for i in check(b)) == list(range(N))


@pytest.mark.parametrize("device", [False, True])
def test_epochs_after_a_resumed_one_are_whole_without_set_epoch(dataset_url, device) -> None:
    """Tester: without ``set_epoch``, the dataset kept its loaded state after the resumed
    pass, so every later pass's fresh workers resumed the same rest (the consumed part
    lost each epoch). Now a pass that ended moves the dataset to the next epoch's start:
    later epochs are read whole, in the uninterrupted run's order."""

    def make() -> Any:
        ring = RingLoader(dataset(dataset_url), batch_size=16, num_workers=2)
        return DeviceLoader(ring, "cpu") if device else ring

    def epoch(loader: Any) -> list[int]:
        return [i for b in loader for i in check(b)]

    whole = make()
    expected = [epoch(whole) for _ in range(3)]
    assert expected[1] != expected[0]  # the epochs advance, as the state says
    first = make()
    for n, batch in enumerate(first):
        head = check(batch)
        if n == 0:
            state = first.state_dict()
            break
    assert first.state_dict()["dataset"]["epoch"] == 0  # a pass left early does not advance
    resumed = make()
    resumed.load_state_dict(state)
    assert sorted(head + epoch(resumed)) == list(range(N))
    assert resumed.state_dict()["dataset"]["epoch"] == 1
    assert [epoch(resumed), epoch(resumed)] == expected[1:]


def test_persistent_workers_state_after_a_later_loop_is_the_next_epoch(dataset_url) -> None:
    """Persistent workers move to the next epoch on their own (no ``set_epoch``); a state
    taken after the second loop was the end of epoch 1, which resumed as an empty pass."""
    first = RingLoader(dataset(dataset_url), 16, num_workers=2, persistent_workers=True)
    for _ in range(2):
        assert sorted(i for b in first for i in check(b)) == list(range(N))
    state = first.state_dict()
    assert state["dataset"]["epoch"] == 2
    second = RingLoader(dataset(dataset_url), 16, num_workers=2, persistent_workers=True)
    second.load_state_dict(state)
    assert sorted(i for b in second for i in check(b)) == list(range(N))


@pytest.mark.parametrize("batch", [16, 7])
def test_a_state_taken_at_the_last_batch_resumes_an_empty_rest(dataset_url, batch) -> None:
    """Review: without workers, a partial last batch is formed after the dataset's pass has
    ended; its state was taken for the next epoch's start, so the epoch was read again."""
    first = RingLoader(dataset(dataset_url), batch_size=batch, num_workers=0)
    for _ in first:
        state = first.state_dict()  # the last one: inside the loop, at its last batch
    assert state["dataset"]["epoch"] == 0
    second = RingLoader(dataset(dataset_url), batch_size=batch, num_workers=0)
    second.load_state_dict(state)
    assert [i for b in second for i in check(b)] == []
    assert sorted(i for b in second for i in check(b)) == list(range(N))


def test_persistent_workers_and_spawned_workers(dataset_url) -> None:
    persistent = RingLoader(dataset(dataset_url), 32, num_workers=2, persistent_workers=True)
    received = []
    for _ in range(3):
        assert sorted(i for b in persistent for i in check(b)) == list(range(N))
        received.append(persistent.stats["buffers"])
    # Later passes reuse the slots (no batch here outgrows the 1 MiB minimum): at most one
    # buffer per slot over all three passes, where a new writer per pass allocated ~10 each.
    assert received[0] >= 2 and sum(received) <= 2 * persistent.slots_per_worker
    dropping = RingLoader(
        dataset(dataset_url), 48, num_workers=2, persistent_workers=True, drop_last=True
    )  # each pass leaves a partial batch per worker begun in a slot, never handed out
    for _ in range(2):
        got = [check(b) for b in dropping]
        assert len(got) == len(dropping) and all(len(ids) == 48 for ids in got)
        assert len({i for ids in got for i in ids}) == 48 * len(got)
    spawned = RingLoader(dataset(dataset_url), 32, num_workers=2, multiprocessing_context="spawn")
    assert sorted(i for b in spawned for i in check(b)) == list(range(N))


def test_a_first_slot_made_before_the_workers_start_is_not_handed_over(dataset_url) -> None:
    """The main process makes each worker's slot 0 from ``mean_sample_bytes`` and the
    workers inherit it: first batches arrive with no buffer sent along."""
    ds = dataset(dataset_url)
    assert ds.mean_sample_bytes >= sum(len(payload(i)) for i in range(N)) // N
    loader = RingLoader(ds, 32, num_workers=2)
    batches = iter(loader)
    firsts = [next(batches), next(batches)]  # one from each worker
    assert loader.stats["buffers"] == 0
    seen = [i for b in firsts for i in check(b)] + [i for b in batches for i in check(b)]
    assert sorted(seen) == list(range(N))
    assert loader.stats["buffers"] >= 1  # later slots still come from the workers


class Split(IterableDataset):
    """Small tensors, split between the workers; no ``mean_sample_bytes``."""

    def __iter__(self):
        info = get_worker_info()
        return iter([torch.full((4,), i) for i in range(info.id, 40, info.num_workers)])


def test_any_dataset_gets_first_slots_of_slot_bytes() -> None:
    loader = RingLoader(Split(), 8, num_workers=2)  # batches of 8 x 4 int64: inside 1 MiB
    batches = iter(loader)
    firsts = [next(batches), next(batches)]
    assert loader.stats["buffers"] == 0
    got = sorted(int(row[0]) for b in [*firsts, *batches] for row in b)
    assert got == list(range(40))


def enlarged(sample: dict) -> dict:
    return {"i": sample["__index__"], "bin": bytes(sample["bin"]) * 8}


def test_samples_that_outgrow_the_first_slot_get_a_bigger_one_from_their_worker(
    dataset_url,
) -> None:
    """A pipeline that makes samples larger than stored outgrows slot 0 at once: its
    worker grows it and sends the new buffer, as when it made the slot itself."""
    ds = ShardedDataset(dataset_url, shuffle=True, seed=3).map(enlarged)
    loader = RingLoader(ds, 32, num_workers=2, slot_bytes=1)  # slot 0: ~1.25 x 32 samples
    batches = iter(loader)
    first = next(batches)
    assert loader.stats["buffers"] == 1  # the grown slot 0, sent with its first batch
    seen = []
    for batch in [first, *batches]:
        for i, view in zip(batch["i"].tolist(), batch["bin"], strict=True):
            assert bytes(view.numpy()) == payload(i) * 8
            seen.append(i)
    assert sorted(seen) == list(range(N))


def test_device_loader_hands_ring_batches_out_intact(dataset_url) -> None:
    feed = DeviceLoader(RingLoader(dataset(dataset_url), 32, num_workers=2), "cpu")
    assert sorted(i for b in feed for i in check(b)) == list(range(N))
    assert feed.loader.stats["retired"] == 0


def test_breaking_out_stops_the_workers(dataset_url) -> None:
    others = set(_children())  # e.g. multiprocessing's resource tracker
    loader = RingLoader(dataset(dataset_url), batch_size=8, num_workers=2)
    for n, _ in enumerate(loader):
        if n == 2:
            assert len(set(_children()) - others) == 2
            break
    deadline = time.monotonic() + 30
    while set(_children()) - others and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(_children()) - others


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(pid))
        except OSError:
            pass
    return found


# -- crashes: nothing may be left in /dev/shm or running ------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from dcstore.loaders import RingLoader, ShardedDataset

    def children():
        me = str(os.getpid())
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        yield int(pid)
            except OSError:
                pass

    ds = ShardedDataset(sys.argv[1], shuffle=True, seed=3)
    loader = RingLoader(ds, batch_size=4, num_workers=2)
    for n, batch in enumerate(loader):
        if n == 3:
            print("workers", *children(), flush=True)
        time.sleep(0.05)
    """
)


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.parametrize("how", ["kill-main", "interrupt-main", "kill-worker"])
def test_no_shared_memory_or_process_outlives_a_crash(dataset_url, tmp_path, how) -> None:
    before = _shm()
    child = subprocess.Popen([sys.executable, "-c", CHILD, dataset_url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("workers"), child.stderr.read() if child.stderr else line
    workers = [int(p) for p in line.split()[1:]]
    if how == "kill-main":
        child.kill()
    elif how == "interrupt-main":
        child.send_signal(signal.SIGINT)
    else:
        os.kill(workers[0], signal.SIGKILL)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0
    if how == "kill-worker":
        # The DataLoader names the dead worker: from its SIGCHLD handler, or from its
        # status check when the death first showed as a failed hand-off.
        named = (f"(pid {workers[0]}) is killed by signal", f"{workers[0]}) exited unexpectedly")
        assert any(text in err for text in named), err
    if how == "interrupt-main":
        assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 30  # torch's workers notice a dead parent within 5 s
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)
    assert _shm() - before == set()


def test_shared_memory_is_unlinked_while_in_use(dataset_url) -> None:
    before = _shm()
    loader = RingLoader(dataset(dataset_url), batch_size=8, num_workers=2)
    for n, batch in enumerate(loader):
        if n == 40:  # the slots in use allocated long ago (a name exists only while created)
            assert 2 <= loader.stats["buffers"] <= 2 * loader.slots_per_worker
            assert _shm() - before == set()
            check(batch)
    assert Path("/dev/shm").is_dir()


def test_random_kept_subsets_stay_intact(dataset_url) -> None:
    rng = random.Random(5)
    loader = RingLoader(dataset(dataset_url), batch_size=16, num_workers=2, hold=1)
    kept = []
    for batch in loader:
        if rng.random() < 0.3:
            kept.append(batch)
    for batch in kept:
        check(batch)


LEFT_EARLY = textwrap.dedent(
    """
    import sys
    from dcstore.loaders import DeviceLoader, RingLoader, ShardedDataset
    url, what = sys.argv[1:]
    ds = ShardedDataset(url).map(lambda s: {"i": s["__index__"], "bin": s["bin"]})
    if what == "persistent":
        loader = RingLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
        for _ in range(3):
            for n, batch in enumerate(loader):
                if n == 1:
                    break
        print(sum(len(batch["i"]) for batch in loader))
    else:
        for batch in DeviceLoader(RingLoader(ds, batch_size=4, num_workers=0), "cpu"):
            break
        print("done")
    """
)


@pytest.mark.parametrize("what", ["persistent", "device"])
def test_a_pass_left_early_neither_hangs_the_next_nor_aborts_the_exit(
    dataset_url: str, what: str
) -> None:
    """persistent_workers: breaking out of a pass left its in-flight slots held, so the
    next pass hung in the DataLoader's reset; DeviceLoader over a RingLoader: breaking
    out and exiting aborted the process ("terminate called without an active
    exception", exit 134) as its receiving thread still drove the loader."""
    for _ in range(1 if what == "persistent" else 3):
        done = subprocess.run(
            [sys.executable, "-c", LEFT_EARLY, dataset_url, what],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ([str(N)] if what == "persistent" else ["done"])


class _FailOnce:
    """``fields``, except that worker 1 raises on its ``at``-th sample (counted over the
    worker's life: a persistent worker raises once)."""

    def __init__(self, at: int) -> None:
        self.at, self.count = at, 0

    def __call__(self, sample: dict) -> dict:
        self.count += 1
        info = get_worker_info()
        if info is not None and info.id == 1 and self.count == self.at:
            raise ValueError("boom")
        return fields(sample)


@pytest.mark.parametrize("set_epoch", [True, False])
@pytest.mark.parametrize(("how", "at"), [("raise", 240), ("raise", 5), ("break", 480)])
def test_persistent_workers_after_a_pass_left_early_read_the_epoch_the_dataset_says(
    dataset_url, how, at, set_epoch
) -> None:
    """A worker error (caught by the loop) or a ``break`` late in a pass, after worker 0
    had handed out its whole share: worker 0 had moved to the next epoch, worker 1 had
    not, so later passes read halves of two epochs' shuffles (~1/4 of the samples twice,
    as many never); after a ``break`` the workers ignored ``set_epoch``. Each later pass
    now reads what fresh workers read (non-persistent ones, the same loop)."""

    def passes(persistent: bool) -> list[list[int]]:
        fail = _FailOnce(at if how == "raise" else -1)
        ds = ShardedDataset(dataset_url, shuffle=True, seed=3).map(fail)
        loader = RingLoader(ds, 10, num_workers=2, persistent_workers=persistent)
        got: list[list[int]] = []
        for epoch in range(3):
            if set_epoch:
                ds.set_epoch(epoch)
            got.append([])
            with pytest.raises(ValueError) if epoch == 0 and how == "raise" else nullcontext():
                for batch in loader:
                    got[-1] += check(batch)
                    if epoch == 0 and how == "break" and len(got[-1]) >= at:
                        break
            fail.at = -1  # fresh workers (not persistent ones: past it) fail no more
        return got[1:]

    got, expected = passes(True), passes(False)
    for ids in got:
        assert sorted(ids) == list(range(N))
    assert got == expected


def test_a_state_loaded_into_a_loader_with_persistent_workers_running_is_resumed(
    dataset_url,
) -> None:
    """The workers of an earlier pass ignored a state loaded later (they read the next
    epoch whole): they are started afresh with it."""
    first = RingLoader(dataset(dataset_url), 10, num_workers=2, persistent_workers=True)
    head: list[int] = []
    for n, batch in enumerate(first):
        head += check(batch)
        if n == 12:
            state = first.state_dict()
            break
    loader = RingLoader(dataset(dataset_url), 10, num_workers=2, persistent_workers=True)
    assert sorted(i for b in loader for i in check(b)) == list(range(N))
    loader.load_state_dict(state)
    assert sorted(head + [i for b in loader for i in check(b)]) == list(range(N))
    assert sorted(i for b in loader for i in check(b)) == list(range(N))
    assert loader.state_dict()["dataset"]["epoch"] == 2


def test_a_second_concurrent_pass_over_persistent_workers_supersedes_the_first(
    dataset_url,
) -> None:
    """Two iterators of one loader with persistent workers, alternating: the second reset
    the workers' pass under the first, which then handed out a batch twice, silently. The
    later one takes the workers over, as DataLoader's does, and the earlier one raises;
    one left unreachable but referenced (a notebook's kept traceback) blocks nothing."""
    loader = RingLoader(dataset(dataset_url), 10, num_workers=2, persistent_workers=True)
    a, b = iter(loader), iter(loader)
    check(next(a))
    assert sorted(i for batch in b for i in check(batch)) == list(range(N))
    with pytest.raises(RuntimeError, match="superseded"):
        next(a)
    kept = iter(loader)
    check(next(kept))  # abandoned mid-pass, still referenced
    assert sorted(i for batch in loader for i in check(batch)) == list(range(N))
    del kept
    plain = RingLoader(dataset(dataset_url), 10, num_workers=2)  # each its own whole pass
    a, b = iter(plain), iter(plain)
    got: list[list[int]] = [[], []]
    for x, y in zip(a, b, strict=True):
        got[0] += check(x)
        got[1] += check(y)
    assert sorted(got[0]) == sorted(got[1]) == list(range(N))


AFTER_AN_ERROR = textwrap.dedent(
    """
    import sys
    from dcstore.loaders import RingLoader, ShardedDataset

    class Fail:
        on = True

        def __call__(self, s):
            if self.on and s["__index__"] % 50 == 7:
                raise ValueError("boom")
            return {"i": s["__index__"]}

    fail = Fail()
    loader = RingLoader(ShardedDataset(sys.argv[1]).map(fail), batch_size=4, num_workers=2)
    try:
        for batch in loader:
            pass
    except ValueError:
        pass
    fail.on = False
    print(sum(len(batch["i"]) for batch in loader))
    """
)


def test_a_pass_after_a_worker_error_prints_nothing(dataset_url) -> None:
    """The failed pass's DataLoader iterator outlived it (held by its traceback's frames)
    and was destroyed in the next pass's forked workers: "Exception ignored in ...
    _MultiProcessingDataLoaderIter.__del__ ... AssertionError: can only test a child
    process", once per worker."""
    done = subprocess.run(
        [sys.executable, "-c", AFTER_AN_ERROR, dataset_url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(N)]
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]
