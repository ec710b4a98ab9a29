"""Detectron2's samplers: infinite shuffled training streams, their batches, and sharded
inference order.

Training samplers yield dataset indices forever; every process of a DDP job builds one with the
same seed and takes every ``world_size``-th index from ``rank`` on, so the processes see
disjoint parts of one shared stream. Rank and world size come from ``torch.distributed`` when it
is initialised (``rank``/``world_size`` arguments override it).

:class:`TrainingBatchSampler` turns a stream into the batches of every iteration, each item with
its own augmentation seed: batch ``k`` is a function of the seed, the rank and ``k`` alone, so a
resumed run recomputes the batches an uninterrupted one trains on (indices only, no image read).
"""

import itertools
import math
from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from d2seg.utils import comm


def shared_random_seed() -> int:
    """A random seed, the same in every process of a distributed job (rank 0's)."""
    return comm.all_gather(int(np.random.randint(2**31)))[0]


class TrainingSampler(Sampler[int]):
    """An infinite stream of indices of a dataset of ``size`` items, reshuffled every epoch.

    The stream depends only on ``seed`` (a random seed shared by all processes when None);
    this process yields the items at positions ``rank, rank + world_size, ...`` of it.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self._size = size
        self._shuffle = shuffle
        self._seed = shared_random_seed() if seed is None else int(seed)
        self._rank = comm.get_rank() if rank is None else rank
        self._world_size = comm.get_world_size() if world_size is None else world_size

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def rank(self) -> int:
        return self._rank

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        while True:
            indices = self._epoch_indices(generator)
            if self._shuffle:
                indices = indices[torch.randperm(len(indices), generator=generator)]
            yield from indices.tolist()

    def _epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """The indices of one pass over the dataset, before shuffling."""
        return torch.arange(self._size)


class RepeatFactorTrainingSampler(TrainingSampler):
    """LVIS-style repeat-factor sampling: images of rare classes appear more often.

    Image ``i`` appears ``repeat_factors[i]`` times per epoch on average: the integer part every
    epoch, plus one more with probability equal to the fractional part (stochastic rounding,
    redrawn each epoch).
    """

    def __init__(
        self,
        repeat_factors: torch.Tensor,
        shuffle: bool = True,
        seed: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(len(repeat_factors), shuffle, seed, rank=rank, world_size=world_size)
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part

    @staticmethod
    def repeat_factors_from_category_frequency(
        dataset_dicts: list[dict], repeat_thresh: float
    ) -> torch.Tensor:
        """Per-image repeat factors (float32, one per dict) from LVIS's rule.

        With ``f(c)`` the fraction of images containing class ``c``, class ``c`` gets
        ``r(c) = max(1, sqrt(repeat_thresh / f(c)))`` and an image the largest ``r(c)`` of the
        classes in its annotations (1 for an image without annotations).
        """
        image_classes = [
            {a["category_id"] for a in d.get("annotations", [])} for d in dataset_dicts
        ]
        images_with_class: dict[int, int] = defaultdict(int)
        for classes in image_classes:
            for c in classes:
                images_with_class[c] += 1
        num_images = len(dataset_dicts)
        class_repeat = {
            c: max(1.0, math.sqrt(repeat_thresh / (n / num_images)))
            for c, n in images_with_class.items()
        }
        return torch.tensor(
            [max((class_repeat[c] for c in classes), default=1.0) for classes in image_classes],
            dtype=torch.float32,
        )

    def _epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        draws = torch.rand(len(self._frac_part), generator=generator)
        repeats = (self._int_part + (draws < self._frac_part).float()).long()
        return torch.repeat_interleave(torch.arange(len(repeats)), repeats)


def item_seed(seed: int, rank: int, iteration: int, position: int) -> int:
    """The augmentation seed (63 bits) of the ``position``-th item of ``rank``'s batch of
    ``iteration``: independent of which DataLoader worker maps the item and of what it mapped
    before."""
    words = np.random.SeedSequence([seed, rank, iteration, position]).generate_state(2, np.uint64)
    return int(words[0] >> np.uint64(1))


class TrainingBatchSampler(Sampler[list[tuple[int, int]]]):
    """The training batches of iterations ``start_iter, start_iter + 1, ...`` (forever): lists of
    ``batch_size`` ``(dataset index, augmentation seed)`` pairs taken in ``sampler``'s order.

    With ``tall`` given (one bool per dataset index: height >= width), an index waits in the
    bucket of its orientation and a batch is emitted when a bucket is full, so a batch never
    mixes wide and tall images. Batches before ``start_iter`` are replayed from the index stream
    (pending buckets included) and skipped, which makes batch ``k`` the same whether the run
    started at 0 or resumed at ``start_iter``; seeds come from :func:`item_seed`.
    """

    def __init__(
        self,
        sampler: TrainingSampler,
        batch_size: int,
        *,
        tall: Sequence[bool] | None = None,
        start_iter: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"TrainingBatchSampler needs a positive batch size, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.tall = tall
        self.start_iter = start_iter

    def _index_batches(self) -> Iterator[list[int]]:
        buckets: tuple[list[int], list[int]] = ([], [])
        for index in self.sampler:
            bucket = buckets[int(self.tall is not None and self.tall[index])]
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed, rank = self.sampler.seed, self.sampler.rank
        batches = itertools.islice(self._index_batches(), self.start_iter, None)
        for iteration, batch in enumerate(batches, start=self.start_iter):
            yield [(index, item_seed(seed, rank, iteration, j)) for j, index in enumerate(batch)]


class InferenceSampler(Sampler[int]):
    """Each index of a dataset of ``size`` items exactly once over all processes, in order.

    Process ``rank`` gets one contiguous shard; shard sizes differ by at most one.
    """

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None):
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        shard, left = divmod(size, world_size)
        begin = rank * shard + min(rank, left)
        self._local_indices = range(begin, begin + shard + (rank < left))

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)
