"""ShardedDataset end to end over a real local store: DataLoader, ranks, resume, errors."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from dcstore.errors import ConfigError, IntegrityError, KeyAccessError, NotFoundError
from dcstore.loaders import RingLoader, ShardedDataset, ShardedMapDataset, ShardWriter
from dcstore.store import open_store

N = 600


@pytest.fixture(scope="module")
def dataset_url(tmp_path_factory) -> str:
    url = f"file://{tmp_path_factory.mktemp('ds')}"
    rng = random.Random(0)
    with ShardWriter(url, shard_size=40_000) as writer:  # uneven shards, ~20 samples each
        for i in range(N):
            writer.write({"__key__": f"k/{i:05d}", "bin": bytes(rng.randrange(3000)), "cls": i})
    return url


def index_of(sample) -> int:
    assert int(bytes(sample["cls"])) == sample["__index__"]
    return sample["__index__"]


def indices(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch]


@pytest.mark.parametrize("window_bytes", [4 << 20, 5000, 512])
def test_every_sample_once_with_workers(dataset_url, window_bytes) -> None:
    for workers in (0, 1, 3):
        ds = ShardedDataset(dataset_url, shuffle=True, seed=1, window=50, window_bytes=window_bytes)
        ds = ds.map(index_of)
        got = indices(DataLoader(ds, batch_size=32, num_workers=workers))
        assert sorted(got) == list(range(N))


def count_items(batch) -> int:
    return len(batch)


def test_a_batched_pipeline_counts_batches_not_samples(dataset_url) -> None:
    """len() of a .batched() pipeline was its sample count: a schedule sized from
    len(loader) ran batch_size times too long."""
    for size, partial in ((16, True), (16, False), (7, True)):
        ds = ShardedDataset(dataset_url, shuffle=True, rank=1, world_size=2)
        ds = ds.batched(size, count_items, partial=partial)
        with pytest.raises(TypeError, match=r"ds.batch_count\(num_workers\)"):
            len(DataLoader(ds, batch_size=None, num_workers=2))
        for workers in (0, 1, 3):
            got = list(DataLoader(ds, batch_size=None, num_workers=workers))
            assert ds.batch_count(workers) == len(got), (size, partial, workers)
            assert sum(got) == (N // 2 if partial else sum(got))
    assert len(ShardedDataset(dataset_url, rank=1, world_size=2)) == N // 2
    with pytest.raises(ConfigError, match="needs a batched"):
        ShardedDataset(dataset_url).batch_count(2)


def test_ranks_partition_the_epoch_evenly(dataset_url) -> None:
    world = 7  # 600 = 7 * 85 + 5: two samples repeated
    seen: Counter[int] = Counter()
    steps = set()
    for rank in range(world):
        ds = ShardedDataset(dataset_url, shuffle=True, seed=2, rank=rank, world_size=world)
        ds = ds.map(index_of)
        batches = list(DataLoader(ds, batch_size=10, num_workers=2))
        steps.add(len(batches))
        seen.update(int(i) for b in batches for i in b)
    assert len(steps) == 1
    assert set(seen) == set(range(N)) and sum(seen.values()) == 86 * world


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"rank": 2, "world_size": 2}, "rank 2 is outside world_size 2: ranks are 0 .. "),
        ({"rank": -1}, "rank must be >= 0, got -1"),
        ({"world_size": 0}, "world_size must be >= 1, got 0"),
    ],
)
def test_an_impossible_rank_is_refused_when_made(dataset_url, given, message) -> None:
    """Not at the first batch, in a worker, where it used to surface."""
    with pytest.raises(ConfigError, match=message):
        ShardedDataset(dataset_url, **given)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"seed": -1}, r"seed must be >= 0, got -1"),
        ({"seed": 1.5}, r"seed must be a whole number >= 0, got 1\.5"),
        ({"seed": "3"}, r"seed must be a whole number >= 0, got '3'"),
        ({"seed": True}, r"seed must be a whole number >= 0, got True"),
        ({"window": -1}, r"window must be >= 0"),
        ({"window_bytes": 0}, r"window_bytes must be >= 1, got 0"),
        ({"read_ahead": -1}, r"read_ahead must be >= 0, got -1"),
    ],
)
def test_impossible_settings_are_refused_when_made(dataset_url, given, message) -> None:
    """A negative seed failed at the first batch with numpy's "expected non-negative
    integer", 1.5 silently meant 1, window_bytes=0 divided by zero."""
    with pytest.raises(ConfigError, match=message):
        ShardedDataset(dataset_url, **given)


@pytest.mark.parametrize("epoch", [-1, "1", 1.7])
def test_an_impossible_epoch_is_refused_when_set(dataset_url, epoch) -> None:
    with pytest.raises(ConfigError, match="epoch must be"):
        ShardedDataset(dataset_url, shuffle=True).set_epoch(epoch)


def test_a_rank_beyond_torch_distributeds_world_is_refused(dataset_url) -> None:
    """rank without world_size takes the world from torch.distributed: 1 without it."""
    assert len(list(ShardedDataset(dataset_url, rank=0))) == N
    with pytest.raises(ConfigError, match=r"rank 1 is outside torch\.distributed's world of 1"):
        list(ShardedDataset(dataset_url, rank=1))


def test_a_world_size_without_rank_outside_torch_distributed_is_refused(dataset_url) -> None:
    """world_size=2 alone made every process rank 0: half the data read twice, half never."""
    assert len(list(ShardedDataset(dataset_url, world_size=1))) == N
    with pytest.raises(ConfigError, match=r"world_size=2 without rank=.* world is 1"):
        list(ShardedDataset(dataset_url, world_size=2))


def test_order_is_deterministic_and_changes_per_epoch(dataset_url) -> None:
    def order(epoch: int, seed: int = 3) -> list[int]:
        ds = ShardedDataset(dataset_url, shuffle=True, seed=seed).map(index_of)
        ds.set_epoch(epoch)
        return indices(DataLoader(ds, batch_size=50, num_workers=2))

    assert order(0) == order(0)
    assert order(0) != order(1) and order(0) != order(0, seed=4)


def test_persistent_workers_advance_the_epoch(dataset_url) -> None:
    ds = ShardedDataset(dataset_url, shuffle=True, seed=3).map(index_of)
    loader = DataLoader(ds, batch_size=50, num_workers=2, persistent_workers=True)
    first, second = indices(loader), indices(loader)
    assert sorted(first) == sorted(second) == list(range(N)) and first != second


@pytest.mark.parametrize("stop", [3, 56, 57])  # of 60 batches: early, near the end
def test_persistent_workers_follow_set_epoch_after_a_loop_left_early(dataset_url, stop) -> None:
    """Persistent workers move on only when they hand out their whole share: a loop left
    near its end had one worker at the next epoch and the other not, and every later epoch
    repeated ~a quarter of the samples and lost as many, silently (1000 samples: 750
    distinct); one left early read epoch 0 again under ``set_epoch(1)``. ``set_epoch`` in
    the main process now reaches them."""

    def fresh(epoch: int) -> list[int]:
        ds = ShardedDataset(dataset_url, shuffle=True, seed=3).map(index_of)
        ds.set_epoch(epoch)
        return indices(DataLoader(ds, batch_size=10, num_workers=2))

    ds = ShardedDataset(dataset_url, shuffle=True, seed=3).map(index_of)
    loader = DataLoader(ds, batch_size=10, num_workers=2, persistent_workers=True)
    ds.set_epoch(0)
    for step, _ in enumerate(loader):
        if step == stop:
            break
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        assert indices(loader) == fresh(epoch), epoch


def in_epoch(ds: ShardedDataset, epoch: int) -> ShardedDataset:
    ds.set_epoch(epoch)
    return ds


@pytest.mark.parametrize("buffer", [0, 64])
@pytest.mark.parametrize("workers,new_workers", [(0, 0), (2, 2), (2, 3), (3, 1), (0, 2)])
def test_resume_mid_epoch_exactly_once(dataset_url, workers, new_workers, buffer) -> None:
    rng = random.Random(workers * 10 + new_workers)
    kw = {"shuffle": True, "seed": 9, "window": 30, "shuffle_buffer": buffer}
    whole = indices(
        DataLoader(in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 4), batch_size=8,
                   num_workers=workers)
    )  # fmt: skip
    for _ in range(3):
        ds = in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 4)
        loader = StatefulDataLoader(ds, batch_size=8, num_workers=workers)
        stop = rng.randrange(1, N // 8)
        got: list[int] = []
        for step, batch in enumerate(loader):
            got.extend(int(i) for i in batch)
            if step + 1 == stop:
                state = loader.state_dict()
                break
        ds2 = ShardedDataset(dataset_url, **kw).map(index_of)
        if new_workers == workers:
            loader2 = StatefulDataLoader(ds2, batch_size=8, num_workers=new_workers)
            loader2.load_state_dict(state)
        else:
            ds2.load_state_dict(ShardedDataset.state_from_loader(state))
            loader2 = StatefulDataLoader(ds2, batch_size=8, num_workers=new_workers)
        rest = indices(loader2)
        assert sorted(got + rest) == list(range(N)), (stop, len(got), len(rest))
        if new_workers == workers:  # the same run, continued: the same order
            assert got + rest == whole


def checkpoint_at(loader, batches: int) -> tuple[list[int], dict]:
    """The indices of ``loader``'s first ``batches`` batches and its state after them."""
    got: list[int] = []
    for step, batch in enumerate(loader):
        got.extend(int(i) for i in batch)
        if step + 1 == batches:
            return got, loader.state_dict()
    raise AssertionError(f"the loader has fewer than {batches} batches")


@pytest.mark.parametrize("left", [2, 1, 0])
def test_a_checkpoint_in_the_last_batches_resumes_exactly(dataset_url, left) -> None:
    """A worker done with its share ends its pass while the others still read theirs: its
    state was the next epoch's start, so a checkpoint in an epoch's last ``num_workers - 1``
    batches (or after its last) read that worker's share of the next epoch again on resume
    and, merged, lost the others' rest."""
    kw = {"shuffle": True, "seed": 9, "window": 30, "rank": 1, "world_size": 2}
    ds = in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 4)
    plans = [ds.plan(w, 3) for w in range(3)]
    rank_part = sorted(int(i) for p in plans for i in p.indices())
    batches = sum(-(-len(p) // 7) for p in plans)
    got, state = checkpoint_at(StatefulDataLoader(ds, batch_size=7, num_workers=3), batches - left)
    for new_workers in (None, 0, 1, 2, 5):  # None: the same loader's state, loaded as such
        ds2 = in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 4)
        if new_workers is None:
            loader = StatefulDataLoader(ds2, batch_size=7, num_workers=3)
            loader.load_state_dict(state)
        else:
            ds2.load_state_dict(ShardedDataset.state_from_loader(state))
            loader = StatefulDataLoader(ds2, batch_size=7, num_workers=new_workers)
        assert sorted(got + indices(loader)) == rank_part, new_workers


@pytest.mark.parametrize("workers", [0, 2])
def test_a_checkpoint_after_the_loop_resumes_into_the_epoch_set(dataset_url, workers) -> None:
    """Taken once the loop over the loader ended, a checkpoint starts the next pass afresh:
    the next epoch without workers, the dataset's epoch (``set_epoch``) with them."""
    kw = {"shuffle": True, "seed": 9}
    loader = StatefulDataLoader(in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 4),
                                batch_size=8, num_workers=workers)  # fmt: skip
    assert sorted(indices(loader)) == list(range(N))
    state = loader.state_dict()
    ds = in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 5)
    loader = StatefulDataLoader(ds, batch_size=8, num_workers=workers)
    loader.load_state_dict(state)
    epoch5 = in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 5)
    assert indices(loader) == indices(DataLoader(epoch5, batch_size=8, num_workers=workers))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_state_of_an_epoch_read_whole_loads_as_the_next_epoch(dataset_url, workers) -> None:
    """Review: a state taken once the loop over the loader ended (every worker at the end
    of its share) loaded as an empty pass; DataLoader workers start from the loaded state
    every epoch (it is never used up in the main process), so every epoch was empty. It
    loads as the next epoch's start (RingLoader's too: tests/test_ringloader.py)."""
    kw = {"shuffle": True, "seed": 9}
    loader = StatefulDataLoader(in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), 4),
                                batch_size=8, num_workers=workers)  # fmt: skip
    indices(loader)
    ds = ShardedDataset(dataset_url, **kw).map(index_of)
    ds.load_state_dict(ShardedDataset.state_from_loader(loader.state_dict()))
    assert ds.epoch == 5
    resumed = DataLoader(ds, batch_size=8, num_workers=2)
    epochs = [in_epoch(ShardedDataset(dataset_url, **kw).map(index_of), e) for e in (5, 6)]
    expected = [indices(DataLoader(e, batch_size=8, num_workers=2)) for e in epochs]
    assert indices(resumed) == expected[0]  # no set_epoch: non-persistent workers repeat it
    ds.set_epoch(6)
    assert indices(resumed) == expected[1]


def test_shuffle_buffer_reorders_and_holds_copies(dataset_url) -> None:
    def first_pass(**kw):
        ds = ShardedDataset(dataset_url, shuffle=False, seed=2, zero_copy=True, **kw)
        return list(ds)

    plain, buffered = first_pass(), first_pass(shuffle_buffer=100)
    order = [s["__index__"] for s in buffered]
    assert order != list(range(N)) and sorted(order) == list(range(N))
    assert order == [s["__index__"] for s in first_pass(shuffle_buffer=100)]
    assert [bytes(s["bin"]) for s in sorted(buffered, key=index_of)] == [
        bytes(s["bin"]) for s in plain
    ]
    # zero-copy samples that wait in the buffer are copies: they do not pin their fetch windows
    viewing_a_window = [s for s in buffered if len(s["bin"].obj) != len(s["bin"])]
    assert len(viewing_a_window) < N // 10  # only those handed out as soon as parsed
    ds = ShardedDataset(dataset_url, shuffle=False, seed=2, shuffle_buffer=100)
    state = ds.state_dict()
    with pytest.raises(ConfigError, match=r"made with shuffle_buffer=100 \(here 0\): pass the"):
        ShardedDataset(dataset_url, shuffle=False, seed=2).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"made with seed=2 \(here 3\), shuffle=False \(here"):
        ShardedDataset(dataset_url, shuffle=True, seed=3, shuffle_buffer=100).load_state_dict(state)


def test_a_state_made_with_another_window_or_drop_last_is_refused(dataset_url) -> None:
    """Tester: a state of ``window=0``/``drop_last=False`` loaded into a dataset with other
    values, and the resumed epoch lost and repeated samples. States that lack them (made
    before they were recorded) still load; without shuffle the window changes no order."""
    ds = ShardedDataset(dataset_url, shuffle=True, seed=2, rank=0, world_size=7)
    read = iter(ds)
    for _ in range(5):
        next(read)
    state = ds.state_dict()
    for kw, differ in (
        ({"window": 50}, "window=0 \\(here 50\\)"),
        ({"drop_last": True}, "drop_last=False \\(here True\\)"),
    ):
        other = ShardedDataset(dataset_url, shuffle=True, seed=2, rank=0, world_size=7, **kw)
        with pytest.raises(ConfigError, match=f"made with {differ}: pass the same settings"):
            other.load_state_dict(state)
    older = {
        **state,
        "made_with": {
            k: v for k, v in state["made_with"].items() if k not in ("window", "drop_last")
        },
    }
    ShardedDataset(dataset_url, shuffle=True, seed=2, rank=0, world_size=7).load_state_dict(older)
    unshuffled = ShardedDataset(dataset_url, shuffle=False, rank=0, world_size=7)
    state = unshuffled.state_dict()
    ShardedDataset(dataset_url, shuffle=False, window=50, rank=0, world_size=7).load_state_dict(
        state
    )


def test_misplaced_or_damaged_states_are_config_errors_saying_what_is_expected(
    dataset_url,
) -> None:
    """Tester: a loader's state given to the dataset, a dataset's to a RingLoader, a state
    lacking a field or holding a wrong type raised a bare KeyError/TypeError/ValueError,
    "unsupported state version None", or loaded (a negative position re-read samples)."""
    ds = ShardedDataset(dataset_url, shuffle=True, seed=2)
    read = iter(ds)
    next(read)
    state = ds.state_dict()
    sdl = StatefulDataLoader(ShardedDataset(dataset_url, shuffle=True, seed=2), batch_size=4)
    next(iter(sdl))
    loader_state = sdl.state_dict()
    ring = RingLoader(ShardedDataset(dataset_url, shuffle=True, seed=2), batch_size=4)
    ring_state = ring.state_dict()
    fresh = ShardedDataset(dataset_url, shuffle=True, seed=2)
    for bad, message in [
        ({}, r"expected a ShardedDataset.state_dict\(\), got keys \[\]"),
        (None, r"expected a ShardedDataset.state_dict\(\), got None"),
        (loader_state, r"StatefulDataLoader state: .*ShardedDataset.state_from_loader\(state\)"),
        (ring_state, r"got a RingLoader state: .*ds.load_state_dict\(state\['dataset'\]\)"),
        (dict(state, epoch="1"), r"epoch must be a whole number >= 0, got '1'"),
        (dict(state, positions={"0": -5}), r"position.* must be >= 0, got -5"),
        (dict(state, positions=[3]), r"positions must map workers to counts"),
        (dict(state, layers=[["x"]]), r"layers must be \[workers, positions\] pairs"),
        (dict(state, layers=[[2, [1]]]), r"layer \[2, \[1\]\] needs a position per worker"),
        (dict(state, workers=0), r"workers must be >= 1, got 0"),
    ] + [({k: v for k, v in state.items() if k != key}, f"lacks {key}") for key in (
        "positions", "layers", "manifest_version", "epoch", "shuffle"
    )]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            fresh.load_state_dict(bad)
    for bad, message in [
        ({}, r"expected a RingLoader.state_dict\(\), got keys \[\]"),
        (state, r"got a dataset state: load it into the dataset"),
        (loader_state, r"got a StatefulDataLoader state: load it with StatefulDataLoader"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ring.load_state_dict(bad)
    for bad, message in [
        (None, r"expected a StatefulDataLoader.state_dict\(\), got None"),
        (state, r"got a dataset state: load it into the dataset"),
        (ring_state, r"got a RingLoader state"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ShardedDataset.state_from_loader(bad)
    ring.load_state_dict(ring_state)
    fresh.load_state_dict(ShardedDataset.state_from_loader(loader_state))
    fresh.load_state_dict(state)
    assert len(list(fresh)) == N - 1


@pytest.mark.parametrize("option", ["prefetch_threads", "prefetch_bytes"])
def test_prefetch_options_below_one_name_themselves(dataset_url, option) -> None:
    with pytest.raises(ConfigError, match=f"{option} must be at least 1, got 0"):
        ShardedDataset(dataset_url, **{option: 0})


def test_resume_twice_with_changing_workers(dataset_url) -> None:
    got: list[int] = []
    state = None
    for workers, steps in ((2, 7), (3, 5), (1, None)):
        ds = ShardedDataset(dataset_url, shuffle=True, seed=1).map(index_of)
        if state is not None:
            ds.load_state_dict(ShardedDataset.state_from_loader(state))
        loader = StatefulDataLoader(ds, batch_size=8, num_workers=workers)
        for step, batch in enumerate(loader):
            got.extend(int(i) for i in batch)
            if steps is not None and step + 1 == steps:
                state = loader.state_dict()
                break
    assert sorted(got) == list(range(N))


def test_random_access_by_range(dataset_url) -> None:
    ds = ShardedDataset(dataset_url)
    for i in (0, 17, N - 1):
        sample = ds.read(i)
        assert sample["__key__"] == f"k/{i:05d}" and int(bytes(sample["cls"])) == i
    with pytest.raises(IndexError):
        ds.read(N)


def test_stages_batched_in_worker(dataset_url) -> None:
    ds = (
        ShardedDataset(dataset_url)
        .decode()
        .to_tuple("cls", "bin")
        .map(lambda t: (t[0], len(t[1])))
        .batched(64)
    )
    batches = list(DataLoader(ds, batch_size=None, num_workers=2))
    labels = torch.cat([b[0] for b in batches])
    assert sorted(labels.tolist()) == list(range(N))


def test_a_stage_makes_a_new_dataset_and_leaves_its_base_as_it_was(dataset_url) -> None:
    """As webdataset's: two pipelines from one base, and a notebook cell run twice
    (``loader = DataLoader(base.batched(50))``) batches once, not batches of batches."""
    base = ShardedDataset(dataset_url)
    labels = base.decode().to_tuple("cls")
    sizes = base.map(lambda s: len(s["bin"]))
    assert base.stages == [] and labels is not base and sizes is not base
    assert "stages" not in repr(base) and repr(labels).endswith(", stages=2)")
    assert {k for k in next(iter(base)) if not k.startswith("__")} == {"bin", "cls"}
    assert sorted(c for (c,) in labels) == list(range(N))
    assert all(isinstance(n, int) for n in sizes)
    for _ in range(2):  # the cell again
        batches = list(DataLoader(base.map(index_of).batched(50), batch_size=None))
        assert [b.shape for b in batches] == [torch.Size([50])] * (N // 50)


def test_a_staged_dataset_shares_the_epoch_and_resume_state_of_its_base(dataset_url) -> None:
    base = ShardedDataset(dataset_url, shuffle=True, seed=5)
    staged = base.map(index_of)
    base.set_epoch(3)  # set on the base, as a loop over the staged one's loader would
    assert staged.epoch == 3
    epoch3 = indices(DataLoader(staged, batch_size=50, num_workers=2))
    fresh = in_epoch(ShardedDataset(dataset_url, shuffle=True, seed=5).map(index_of), 3)
    assert epoch3 == indices(DataLoader(fresh, batch_size=50, num_workers=2))
    loader = StatefulDataLoader(staged, batch_size=50, num_workers=2)
    it = iter(loader)
    got = indices([next(it) for _ in range(3)])
    state = ShardedDataset.state_from_loader(loader.state_dict())
    del it
    base2 = ShardedDataset(dataset_url, shuffle=True, seed=5)
    staged2 = base2.map(index_of)
    base2.load_state_dict(state)  # loaded into the base: the staged one resumes
    rest = indices(DataLoader(staged2, batch_size=50, num_workers=2))
    assert len(rest) == N - 150 and sorted(got + rest) == list(range(N))


def label_and_size(item: tuple) -> tuple:
    return item[0], len(item[1])


def test_stages_pickle_for_spawned_workers(dataset_url) -> None:
    """Workers started with spawn/forkserver (needed by HDFS) receive the pickled pipeline."""
    ds = ShardedDataset(dataset_url).decode().to_tuple("cls", "bin").map(label_and_size).batched(50)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    labels = torch.cat([labels for labels, _ in loader])
    assert sorted(labels.tolist()) == list(range(N))


def corrupt_copy(src_url: str, dst, how: str) -> tuple[str, str]:
    src, dst_store = open_store(src_url), open_store(f"file://{dst}")
    victim = None
    for meta in src.list_objects():
        data = src.get(meta.key)
        if victim is None and meta.key.endswith("00003.tar"):
            victim = meta.key
            if how == "missing":
                continue
            data = bytearray(data)
            header = int(ShardedDataset(src_url).manifest.shards[3].offsets[5])
            data[header + 10] ^= 0xFF  # a member name byte: the header checksum fails
        dst_store.put(meta.key, bytes(data))
    return f"file://{dst}", victim


@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_bad_shard_raises_naming_it(dataset_url, tmp_path, how) -> None:
    url, victim = corrupt_copy(dataset_url, tmp_path, how)
    ds = ShardedDataset(url)
    with pytest.raises(IntegrityError if how == "corrupt" else NotFoundError, match=victim):
        list(ds)


@pytest.mark.parametrize("buffer", [0, 50])
def test_skip_policy_counts_and_resumes_skipping(dataset_url, tmp_path, caplog, buffer) -> None:
    url, victim = corrupt_copy(dataset_url, tmp_path, "missing")
    ds = ShardedDataset(url, on_error="skip", shuffle_buffer=buffer).map(index_of)
    got = list(ds)
    lost = N - len(got)
    assert lost > 0 and ds._skip.skipped_samples == lost and len(set(got)) == len(got)
    assert victim in caplog.text
    state_ds = ShardedDataset(url, on_error="skip", shuffle_buffer=buffer).map(index_of)
    it = iter(state_ds)
    first = [next(it) for _ in range(150)]
    state = state_ds.state_dict()
    assert state["skipped_shards"] == [3]
    resumed = ShardedDataset(url, on_error="skip", shuffle_buffer=buffer).map(index_of)
    resumed.load_state_dict(state)
    assert sorted(first + list(resumed)) == sorted(got)


def test_failed_pack_never_becomes_visible(tmp_path) -> None:
    url = f"file://{tmp_path}"
    with pytest.raises(RuntimeError), ShardWriter(url, shard_size=1000) as writer:
        for i in range(50):
            writer.write({"__key__": f"s{i}", "bin": bytes(300)})
        raise RuntimeError("interrupted")
    with pytest.raises(NotFoundError):
        ShardedDataset(url)


def test_encrypted_dataset_round_trip(tmp_path) -> None:
    from dcstore.crypto import Keyring, write_key_file

    keyring = Keyring.generate()
    write_key_file(tmp_path / "kek.json", keyring)
    keys = f"file://{tmp_path / 'kek.json'}"
    url = f"file://{tmp_path / 'data'}"
    with ShardWriter(url, keys=keys, shard_size=20_000) as writer:
        for i in range(200):
            writer.write({"__key__": f"s{i:04d}", "bin": b"secret" * 200, "cls": i})
    raw = open_store(url)
    shard = next(m.key for m in raw.list_objects("shards/"))
    assert b"ustar" not in raw.get(shard) and b"secret" not in raw.get(shard)
    ds = ShardedDataset(url, keys=keys, shuffle=True).map(index_of)
    assert {s.key_id for s in ds.manifest.shards} == {keyring.primary}
    assert sorted(indices(DataLoader(ds, batch_size=16, num_workers=2))) == list(range(200))
    assert bytes(ShardedDataset(url, keys=keys).read(150)["cls"]) == b"150"
    with pytest.raises(KeyAccessError, match=r"manifest.parquet is encrypted: pass keys="):
        ShardedDataset(url)  # opened without keys: says so, not "corrupt"
    with pytest.raises(KeyAccessError, match="is encrypted"):
        ShardedMapDataset(url)


def test_a_plaintext_dataset_opened_with_keys_says_how_to_read_it(dataset_url, tmp_path) -> None:
    from dcstore.crypto import Keyring, write_key_file

    write_key_file(tmp_path / "kek.json", Keyring.generate())
    with pytest.raises(IntegrityError, match=r"manifest.parquet.*open the store without keys"):
        ShardedDataset(dataset_url, keys=f"file://{tmp_path / 'kek.json'}")


def test_windows_are_aligned_and_cover_each_sample_once(dataset_url) -> None:
    import numpy as np

    from dcstore.loaders.reader import windows_for

    manifest = ShardedDataset(dataset_url).manifest
    block = np.arange(manifest.num_samples)
    for limit in (512, 5000, 30_000, 1 << 30):
        windows = windows_for(manifest, block, limit)
        assert sum(max(0, w.last - w.first + 1) for w in windows) == manifest.num_samples
        for w in windows:
            assert w.end - w.start <= limit
            assert w.group_start or w.start % limit == 0


def test_sorted_unique_is_numpys_unique() -> None:
    import numpy as np

    from dcstore.loaders.reader import sorted_unique

    rng = np.random.default_rng(0)
    for values in (
        np.array([], dtype=np.int64), np.array([7]), rng.permutation(20_000),
        rng.integers(0, 50, 1_000), np.concatenate([rng.permutation(640), [3, 3]]),
    ):  # fmt: skip
        got = sorted_unique(values)
        assert got.dtype == values.dtype and np.array_equal(got, np.unique(values))


def test_map_style_with_a_random_sampler(dataset_url) -> None:
    from dcstore.loaders import ShardedMapDataset

    ds = ShardedMapDataset(dataset_url, transform=index_of)
    assert len(ds) == N and ds[-1] == N - 1 and ds[-N] == 0 and ds[torch.tensor(3)] == 3
    with pytest.raises(IndexError, match=rf"sample {-N - 1} out of range \(dataset has {N}\)"):
        ds[-N - 1]
    with pytest.raises(TypeError):
        ds["3"]
    loader = DataLoader(ds, batch_size=50, shuffle=True, num_workers=2)
    assert sorted(indices(loader)) == list(range(N))


def test_a_shuffled_block_hands_out_a_sample_as_soon_as_its_window_arrives(
    dataset_url, monkeypatch
) -> None:
    from dcstore.loaders import reader

    parsed: list[int] = []
    sample = reader.WindowSamples.sample

    def counting(self, k: int, zero_copy: bool):
        parsed.append(self.index0 + k)
        return sample(self, k, zero_copy)

    monkeypatch.setattr(reader.WindowSamples, "sample", counting)
    ds = ShardedDataset(dataset_url, shuffle=True, seed=5, window=N)  # one block: every shard
    first = next(iter(ds))
    assert parsed == [first["__index__"]]  # not the block's other samples (was: all N)
    assert sorted(index_of(s) for s in ds) == list(range(N))


def test_a_malformed_sample_is_skipped_alone_or_with_its_shard(
    dataset_url, tmp_path, caplog
) -> None:
    """With the manifest's checksums a damaged tar header is that sample's damage; without
    them (verify_checksums=False) the shard is skipped from there."""
    url, victim = corrupt_copy(dataset_url, tmp_path, "corrupt")
    ds = ShardedDataset(url, on_error="skip", shuffle=True, seed=1).map(index_of)
    assert len(set(ds)) == N - 1 and ds._skip.skipped_samples == 1
    assert victim in caplog.text and ds.state_dict()["skipped_shards"] == []
    ds = ShardedDataset(url, on_error="skip", shuffle=True, seed=1, verify_checksums=False)
    got = list(ds.map(index_of))
    lost = N - len(got)
    assert 0 < lost < N and ds._skip.skipped_samples == lost and len(set(got)) == len(got)
    assert ds.state_dict()["skipped_shards"] == [3]  # the samples not parsed yet go with it


@pytest.mark.parametrize("read_ahead", [0, 256])
def test_worker_state_counts_what_was_handed_out_not_read_ahead(dataset_url, read_ahead) -> None:
    ds = ShardedDataset(dataset_url, shuffle=True, seed=9, read_ahead=read_ahead).map(index_of)
    loader = StatefulDataLoader(ds, batch_size=8, num_workers=1)
    it = iter(loader)
    time.sleep(0.5)  # the worker reads ahead meanwhile
    first = [int(i) for i in next(it)]
    state = ShardedDataset.state_from_loader(loader.state_dict())
    assert state["positions"] == {"0": 8}
    ds2 = ShardedDataset(dataset_url, shuffle=True, seed=9).map(index_of)
    ds2.load_state_dict(state)
    assert sorted(first + list(ds2)) == list(range(N))


@pytest.mark.parametrize("window_bytes", [512, 5000, 4 << 20])
def test_a_store_that_does_not_map_reads_shuffled_blocks_exactly_once(
    dataset_url, window_bytes
) -> None:
    from dcstore.backends.local import LocalBackend

    class Unmapped(LocalBackend):
        def map_range(self, key, start, end, *, version=None):
            return None

    root = dataset_url.removeprefix("file://")
    ds = ShardedDataset(
        Unmapped(root), shuffle=True, seed=6, window=200, window_bytes=window_bytes
    ).map(index_of)
    got = list(ds)
    assert sorted(got) == list(range(N))
    again = ShardedDataset(
        Unmapped(root), shuffle=True, seed=6, window=200, window_bytes=4 << 20
    ).map(index_of)
    assert list(again) == got  # the order does not depend on how windows are fetched


def test_prefetch_threads_follow_the_spare_cores(monkeypatch) -> None:
    """Unless told: a local plaintext store fetches on one thread; a local encrypted one
    on two while the process has a core to spare beyond its workers, else one; a store
    across a network on two."""
    import types

    from dcstore.backends.memory import MemoryBackend
    from dcstore.loaders import dataset as module

    plain = types.SimpleNamespace(url="file:///data/ds", authenticates_reads=False)
    encrypted = types.SimpleNamespace(url="file:///data/ds", authenticates_reads=True)
    remote = MemoryBackend("memory://threads")
    monkeypatch.setattr(module.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    for workers, spare in ((None, True), (1, True), (2, False), (4, False)):
        info = None if workers is None else types.SimpleNamespace(num_workers=workers)
        monkeypatch.setattr(module, "get_worker_info", lambda info=info: info)
        assert module.auto_prefetch_threads(plain) == 1
        assert module.auto_prefetch_threads(encrypted) == (2 if spare else 1)
        assert module.auto_prefetch_threads(remote) == 2


def test_a_stage_that_cannot_be_pickled_is_named(dataset_url) -> None:
    """Workers started with spawn/forkserver got pickle's bare "Can't pickle <lambda>"."""
    import pickle

    ds = ShardedDataset(dataset_url).map(index_of).map(lambda s: s)
    with pytest.raises(pickle.PicklingError, match=r"stage 2 of 2 of this ShardedDataset .*lambda"):
        pickle.dumps(ds)
    assert pickle.loads(pickle.dumps(ShardedDataset(dataset_url).map(index_of))).stages


def test_skipping_with_several_ranks_warns_that_steps_may_differ(dataset_url, caplog) -> None:
    ShardedDataset(dataset_url, on_error="skip")
    assert "fewer steps" not in caplog.text
    ShardedDataset(dataset_url, on_error="skip", rank=1, world_size=2)
    assert "on_error='skip' with 2 ranks: a rank that skips takes fewer steps" in caplog.text


def test_a_state_of_some_workers_says_how_to_resume_with_fewer(dataset_url) -> None:
    """Newcomer: "to resume with 1 workers"."""
    ds = ShardedDataset(dataset_url)
    ds.load_state_dict(ShardedDataset(dataset_url).worker_state(0, 2))
    with pytest.raises(ConfigError) as info:
        next(iter(ds))
    assert str(info.value) == (
        "resume state holds 1 of 2 worker positions; to resume with 1 worker load "
        "ShardedDataset.state_from_loader(...)"
    )
