"""Static arena planning: greedy-by-size placement respects lifetimes and bounds."""

import itertools

import numpy as np

from d2seg.export.edge.planner import Buffer, plan_arena


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
