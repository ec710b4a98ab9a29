"""Training and inference samplers: seeded infinite streams, DDP shards, repeat factors."""

import itertools
import math
from collections import Counter

import pytest
import torch

from d2seg.data.samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingBatchSampler,
    TrainingSampler,
)


def _take(sampler, n: int) -> list[int]:
    return list(itertools.islice(iter(sampler), n))


def test_same_seed_same_order_and_other_seed_other_order():
    assert _take(TrainingSampler(50, seed=3), 120) == _take(TrainingSampler(50, seed=3), 120)
    assert _take(TrainingSampler(50, seed=3), 50) != _take(TrainingSampler(50, seed=4), 50)


def test_every_epoch_is_a_fresh_permutation():
    stream = _take(TrainingSampler(20, seed=0), 60)
    epochs = [stream[i : i + 20] for i in range(0, 60, 20)]
    assert all(sorted(epoch) == list(range(20)) for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert _take(TrainingSampler(5, shuffle=False, seed=0), 7) == [0, 1, 2, 3, 4, 0, 1]


def test_ranks_get_disjoint_shards_of_one_shared_stream():
    size, world = 12, 2
    shards = [_take(TrainingSampler(size, seed=9, rank=r, world_size=world), size // world)
              for r in range(world)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(size))
    single = _take(TrainingSampler(size, seed=9), size)
    assert single[0::2] == shards[0] and single[1::2] == shards[1]


def test_unseeded_samplers_still_yield_permutations():
    assert sorted(_take(TrainingSampler(10), 10)) == list(range(10))


def _dicts(*image_classes) -> list[dict]:
    return [{"annotations": [{"category_id": c} for c in classes]} for classes in image_classes]


def test_repeat_factors_match_the_lvis_rule_by_hand():
    # Class 0 is in 3 of 4 images (f = 0.75), class 1 in 1 of 4 (f = 0.25); threshold 0.5:
    # r(0) = max(1, sqrt(0.5 / 0.75)) = 1, r(1) = sqrt(0.5 / 0.25) = sqrt(2).
    dataset = _dicts([0], [0, 0], [0, 1], [])
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dataset, 0.5)
    assert factors.dtype == torch.float32
    assert torch.allclose(factors, torch.tensor([1.0, 1.0, math.sqrt(2), 1.0]))


def test_rare_class_images_are_sampled_more_often_by_their_repeat_factor():
    factors = torch.tensor([1.0, 1.0, 2.5, 1.0])
    counts = Counter(_take(RepeatFactorTrainingSampler(factors, seed=0), 5500))
    # 5500 draws are ~1000 epochs of 5.5 expected images: image 2 appears 2 or 3 times each.
    assert counts[2] / counts[0] == pytest.approx(2.5, rel=0.05)
    assert counts[0] == pytest.approx(counts[1], rel=0.05)


def test_repeat_factor_sampler_is_seeded_and_sharded():
    factors = torch.tensor([1.0, 1.7, 3.2])
    assert _take(RepeatFactorTrainingSampler(factors, seed=1), 50) == _take(
        RepeatFactorTrainingSampler(factors, seed=1), 50
    )
    single = _take(RepeatFactorTrainingSampler(factors, seed=1), 40)
    rank1 = _take(RepeatFactorTrainingSampler(factors, seed=1, rank=1, world_size=2), 20)
    assert single[1::2] == rank1


@pytest.mark.parametrize("size, world", [(10, 3), (2, 4), (7, 1), (0, 2)])
def test_inference_shards_are_contiguous_and_cover_everything_once(size, world):
    shards = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
    assert list(itertools.chain(*shards)) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)] == [
        len(s) for s in shards
    ]


def _sample_in_process_group(rank: int, world_size: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world_size)
    try:
        training = _take(TrainingSampler(12), 6)  # no seed: rank 0's random seed is shared
        inference = list(InferenceSampler(7))
    finally:
        dist.destroy_process_group()
    torch.save({"training": training, "inference": inference}, f"{folder}/rank{rank}.pt")


def test_samplers_read_rank_and_world_size_from_torch_distributed(tmp_path):
    torch.multiprocessing.start_processes(
        _sample_in_process_group, args=(2, str(tmp_path)), nprocs=2, start_method="fork"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    training = [r["training"] for r in ranks]
    assert sorted(training[0] + training[1]) == list(range(12))  # one shared permutation
    assert ranks[0]["inference"] + ranks[1]["inference"] == list(range(7))


def test_batches_resumed_at_k_equal_the_batches_from_k_of_a_full_run():
    # Alternating orientations with batch 3: buckets hold indices across every batch boundary.
    tall = [i % 2 == 0 for i in range(7)]
    sampler = TrainingSampler(7, seed=3, rank=1, world_size=2)
    full = _take(TrainingBatchSampler(sampler, 3, tall=tall), 12)
    resumed = _take(TrainingBatchSampler(sampler, 3, tall=tall, start_iter=5), 7)
    assert resumed == full[5:]
    assert all(len({tall[i] for i, _ in batch}) == 1 for batch in full)
    assert {tall[batch[0][0]] for batch in full} == {True, False}


def test_batch_items_get_distinct_seeds_that_depend_on_seed_rank_and_iteration():
    def seeds(seed, rank):
        sampler = TrainingSampler(6, seed=seed, rank=rank, world_size=2)
        return [s for batch in _take(TrainingBatchSampler(sampler, 2), 4) for _, s in batch]

    one = seeds(0, 0)
    assert len(set(one)) == len(one) and all(0 <= s < 2**63 for s in one)
    assert one == seeds(0, 0)
    assert not set(one) & set(seeds(1, 0)) and not set(one) & set(seeds(0, 1))


def test_without_grouping_batches_follow_the_stream():
    sampler = TrainingSampler(5, seed=2)
    indices = [i for batch in _take(TrainingBatchSampler(sampler, 2), 6) for i, _ in batch]
    assert indices == _take(sampler, 12)
