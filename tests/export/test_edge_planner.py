"""Static arena planning: greedy-by-size placement respects lifetimes and bounds."""

import itertools

import numpy as np

from d2seg.export.edge.planner import Buffer, plan_arena, plan_regions


def _check_no_conflicts(buffers, plan):
    for a, b in itertools.combinations(buffers, 2):
        if a.overlaps_in_time(b):
            a0, b0 = plan.offsets[a.name], plan.offsets[b.name]
            assert a0 + a.size <= b0 or b0 + b.size <= a0, (a, b)


def test_chain_reuses_memory_down_to_the_lower_bound():
    """A chain x0 → x1 → x2 → x3: only neighbours are live together, so two slots suffice."""
    buffers = [Buffer(f"x{i}", 1000 - 100 * i, i, i + 1) for i in range(4)]
    plan = plan_arena(buffers)
    _check_no_conflicts(buffers, plan)
    assert plan.size == plan.lower_bound == 1008 + 912
    assert plan.naive == sum((b.size + 15) // 16 * 16 for b in buffers)
    assert all(offset % 16 == 0 for offset in plan.offsets.values())


def test_random_lifetimes_never_overlap_and_beat_naive():
    rng = np.random.default_rng(0)
    buffers = []
    for i in range(60):
        first = int(rng.integers(0, 40))
        buffers.append(Buffer(f"t{i}", int(rng.integers(1, 5000)), first,
                              first + int(rng.integers(0, 6))))
    plan = plan_arena(buffers)
    _check_no_conflicts(buffers, plan)
    assert plan.lower_bound <= plan.size < plan.naive


def test_regions_split_the_arena_hot_buffers_first_and_respect_capacities():
    """Three live-together buffers of 60, 50 and 30 KiB and a hot 8 KiB scratch over regions of
    64, 64 and 128 KiB: nothing fits in one region, the scratch lands in the fastest one."""
    kib = 1024
    buffers = [Buffer("a", 60 * kib, 0, 2), Buffer("b", 50 * kib, 0, 2),
               Buffer("c", 30 * kib, 1, 2), Buffer("s", 8 * kib, 1, 1, hot=True)]
    capacities = {"fast": 64 * kib, "mid": 64 * kib, "slow": 128 * kib}
    plan = plan_regions(buffers, capacities)
    assert not plan.unplaced and plan.region["s"] == "fast"
    for name, capacity in capacities.items():
        assert plan.sizes[name] <= capacity
        inside = [b for b in buffers if plan.region[b.name] == name]
        for a, b in itertools.combinations(inside, 2):
            if a.overlaps_in_time(b):
                a0, b0 = plan.offsets[a.name], plan.offsets[b.name]
                assert a0 + a.size <= b0 or b0 + b.size <= a0
    assert len({plan.region[b.name] for b in buffers}) == 3
    too_small = plan_regions(buffers, {"fast": 64 * kib})
    assert too_small.unplaced and plan.lower_bound == too_small.lower_bound == 148 * kib
