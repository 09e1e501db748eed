"""Invariants of the pure epoch plan (exactly-once, equal ranks, determinism, resume)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dcstore.loaders.plan import Block, BlockTable, plan_epoch, shuffle_buffer_order

counts_st = st.lists(st.integers(0, 40), min_size=1, max_size=12)


def everything(counts, world, workers, **kw) -> dict[tuple[int, int], list[int]]:
    return {
        (r, w): plan_epoch(counts, rank=r, world=world, worker=w, workers=workers, **kw)
        .indices()
        .tolist()
        for r in range(world)
        for w in range(workers)
    }


@settings(max_examples=200, deadline=None)
@given(
    counts_st,
    st.integers(1, 5),
    st.integers(1, 4),
    st.booleans(),
    st.integers(0, 50),
    st.integers(0, 3),
    st.sampled_from([0, 2, 7]),
)
def test_exactly_once_and_equal_ranks(
    counts, world, workers, shuffle, window, seed, buffer
) -> None:
    total = sum(counts)
    kw = {"seed": seed, "epoch": 1, "shuffle": shuffle, "window": window, "buffer": buffer}
    plans = everything(counts, world, workers, **kw)
    seen = Counter(i for ids in plans.values() for i in ids)
    per_rank = -(-total // world)
    assert set(seen) == set(range(total))
    assert sum(seen.values()) == per_rank * world  # padding: < world repeats in all
    for w in range(workers):  # worker w gets the same count on every rank: equal steps
        assert len({len(plans[r, w]) for r in range(world)}) == 1
    if total % world == 0:
        assert all(c == 1 for c in seen.values())


@settings(max_examples=100, deadline=None)
@given(counts_st, st.integers(1, 5), st.integers(1, 3))
def test_drop_last_reads_each_at_most_once(counts, world, workers) -> None:
    plans = everything(counts, world, workers, seed=3, drop_last=True)
    seen = Counter(i for ids in plans.values() for i in ids)
    assert all(c == 1 for c in seen.values())
    assert sum(seen.values()) == (sum(counts) // world) * world


def test_deterministic_and_changes_with_epoch() -> None:
    counts = [100] * 20
    a = plan_epoch(counts, seed=7, epoch=0, workers=2, worker=1).indices()
    b = plan_epoch(counts, seed=7, epoch=0, workers=2, worker=1).indices()
    c = plan_epoch(counts, seed=7, epoch=1, workers=2, worker=1).indices()
    d = plan_epoch(counts, seed=8, epoch=0, workers=2, worker=1).indices()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    unshuffled = plan_epoch(counts, shuffle=False, epoch=5).indices()
    assert unshuffled.tolist() == list(range(2000))


def test_uneven_shards_still_balance_ranks() -> None:
    counts = [1000, 1, 1, 1, 3, 500]
    plans = everything(counts, 4, 3, seed=0)
    for r in range(4):
        assert sum(len(plans[r, w]) for w in range(3)) == -(-sum(counts) // 4)


@settings(max_examples=150, deadline=None)
@given(
    counts_st,
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from([0, 5]),
    st.data(),
)
def test_resume_with_other_worker_counts_is_exactly_once(
    counts, world, w1, w2, buffer, data
) -> None:
    kw = {"seed": 5, "epoch": 2, "world": world, "window": 10, "buffer": buffer}
    for rank in range(world):
        first = [
            plan_epoch(counts, rank=rank, worker=w, workers=w1, **kw).indices() for w in range(w1)
        ]
        pos1 = tuple(data.draw(st.integers(0, len(p))) for p in first)
        consumed = [int(i) for p, n in zip(first, pos1, strict=True) for i in p[:n]]
        second = [
            plan_epoch(counts, rank=rank, worker=w, workers=w2, resume=[(w1, pos1)], **kw)
            for w in range(w2)
        ]
        pos2 = tuple(data.draw(st.integers(0, len(p))) for p in second)
        consumed += [int(i) for p, n in zip(second, pos2, strict=True) for i in p.indices()[:n]]
        third = [
            plan_epoch(
                counts,
                rank=rank,
                worker=w,
                workers=1 + w2 % 3,
                resume=[(w1, pos1), (w2, pos2)],
                **kw,
            )
            for w in range(1 + w2 % 3)
        ]
        consumed += [int(i) for p in third for i in p.indices()]
        whole = [
            int(i)
            for w in range(w1)
            for i in plan_epoch(counts, rank=rank, worker=w, workers=w1, **kw).indices()
        ]
        assert Counter(consumed) == Counter(whole)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 300), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_shuffle_buffer_order_is_a_bounded_delay_permutation(n, size, seed) -> None:
    ids = np.arange(1000, 1000 + n)
    out = shuffle_buffer_order(ids, size, np.random.default_rng(seed))
    assert sorted(out.tolist()) == ids.tolist()
    assert np.array_equal(out, shuffle_buffer_order(ids, size, np.random.default_rng(seed)))
    read_at = out - 1000  # the k-th sample handed out is among the first k + size read
    assert all(int(r) < k + max(size, 1) for k, r in enumerate(read_at))
    if size <= 1:
        assert np.array_equal(out, ids)


def test_shuffle_buffer_plan_changes_order_and_resumes_where_it_stopped() -> None:
    counts = [50] * 8
    plain = plan_epoch(counts, seed=1, shuffle=False)
    buffered = plan_epoch(counts, seed=1, shuffle=False, buffer=64)
    assert sorted(buffered.indices().tolist()) == plain.indices().tolist()
    assert not np.array_equal(buffered.indices(), plain.indices())
    # blocks keep the read order; skipping continues the hand-out order exactly
    assert np.array_equal(np.concatenate(buffered.blocks), plain.indices())
    rest = buffered.skip(123)
    assert np.array_equal(rest.indices(), buffered.indices()[123:])
    assert sorted(np.concatenate(rest.blocks).tolist()) == sorted(rest.indices().tolist())


def test_plan_is_lazy_and_materialises_a_block_on_access() -> None:
    counts = [1000] * 100_000  # 100M samples: an eager plan would hold 100 MB per worker
    plan = plan_epoch(counts, seed=1, window=4096, workers=8, worker=3)
    assert len(plan) == 12_500_000
    assert isinstance(plan.parts, BlockTable)
    first = plan.blocks[0]
    assert len(first) >= 4096 and len(np.unique(first)) == len(first)
    rest = plan.skip(4321)  # cuts the first (permuted) block, still lazily
    assert all(isinstance(p, Block) for p in rest.parts) and len(rest) == len(plan) - 4321
    assert np.array_equal(rest.blocks[0], first[4321:])
    assert np.array_equal(rest.blocks[1], plan.blocks[1])
