"""Train and test data loaders: dataset dicts → mapped model inputs in batches (``list[dict]``).

The loaders capture the dataset as a plain list of dicts, so DataLoader workers (forked or
spawned) need neither the catalog nor any registration: only the list, the mapper and the
sampler are sent to them. Both loaders are built from a config (``build_detection_train_loader(
cfg)``) or from explicit arguments (``build_detection_train_loader(dataset=dicts, mapper=...,
total_batch_size=4)``), as in Detectron2 (:func:`~d2seg.config.configurable`).
"""

import itertools
import logging
import os
import random
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from d2seg.config import CfgNode, configurable
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.datasets import resolve_dataset
from d2seg.data.mapper import DatasetMapper
from d2seg.data.samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler
from d2seg.errors import ConfigError, DatasetError
from d2seg.utils import comm

logger = logging.getLogger(__name__)

Mapper = Callable[[dict], dict]


def _has_instances(dataset_dict: dict) -> bool:
    return any(not a.get("iscrowd", 0) for a in dataset_dict.get("annotations", []))


def _check_same_classes(names: list[str]) -> None:
    """Datasets trained or evaluated together must agree on their ``thing_classes``."""
    named = [(n, MetadataCatalog.get(n).get("thing_classes")) for n in names]
    named = [(n, classes) for n, classes in named if classes is not None]
    for name, classes in named[1:]:
        if list(classes) != list(named[0][1]):
            raise DatasetError(
                f"datasets '{named[0][0]}' and '{name}' have different classes "
                f"({list(named[0][1])} vs {list(classes)}); fix: convert them with the same "
                f"labels.txt (tools/convert_labelme.py --labels) so class ids agree"
            )


def _check_images_exist(dataset_dicts: list[dict], names: list[str]) -> None:
    """Fail before training starts, in the main process, when images are missing (a worker's
    error would arrive wrapped in a DataLoader traceback)."""
    missing = [d["file_name"] for d in dataset_dicts if not os.path.isfile(d["file_name"])]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(
            f"{len(missing)} of {len(dataset_dicts)} images of {names} do not exist ({shown}); "
            f"fix: check the image root (images of a COCO json path are looked up in "
            f"OUT/images beside OUT/annotations, else beside the json), or remove those entries"
        )


def get_detection_dataset_dicts(
    names: str | Sequence[str], filter_empty: bool = True
) -> list[dict]:
    """Load and concatenate the dataset dicts of ``names`` (registered names or COCO json paths).

    With ``filter_empty``, images without any non-crowd annotation are dropped (Detectron2's
    ``FILTER_EMPTY_ANNOTATIONS``); datasets without ``annotations`` (semantic) are kept whole.
    A missing image file is a :class:`DatasetError` here, before any loader starts.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ConfigError(
            "no dataset given; fix: set DATASETS.TRAIN / DATASETS.TEST to registered names or "
            "COCO json paths, e.g. DATASETS.TRAIN \"('out/annotations/train.json',)\""
        )
    resolved = [resolve_dataset(name) for name in names]
    dataset_dicts = []
    for name in resolved:
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise DatasetError(
                f"dataset '{name}' has no images; fix: check its annotation file and image root"
            )
        dataset_dicts.extend(dicts)
    _check_same_classes(resolved)
    _check_images_exist(dataset_dicts, names)
    if filter_empty and "annotations" in dataset_dicts[0]:
        before = len(dataset_dicts)
        dataset_dicts = [d for d in dataset_dicts if _has_instances(d)]
        kept = len(dataset_dicts)
        logger.info("Removed %d images without annotations; %d left", before - kept, kept)
        if not dataset_dicts:
            raise DatasetError(
                f"no image of {names} has a (non-crowd) annotation; fix: annotate some images, "
                f"or set DATALOADER.FILTER_EMPTY_ANNOTATIONS False"
            )
    return dataset_dicts


class _MappedList(Dataset):
    """A list of dataset dicts mapped on access."""

    def __init__(self, dataset_dicts: list[dict], mapper: Mapper) -> None:
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.dataset_dicts)

    def __getitem__(self, index: int) -> dict:
        return self.mapper(self.dataset_dicts[index])


class _TrainingBatches(IterableDataset):
    """Mapped items in the sampler's order, batched; each DataLoader worker takes every
    ``num_workers``-th index of the sampler's stream, so workers never repeat each other.

    With ``group_by_aspect`` an image goes to the "wide" (W > H) or "tall" bucket by its mapped
    image size and a batch is emitted when a bucket is full, so a batch never mixes the two.
    A mapper returning None skips the item.
    """

    def __init__(
        self,
        dataset_dicts: list[dict],
        mapper: Mapper,
        sampler: Sampler[int],
        batch_size: int,
        group_by_aspect: bool,
    ) -> None:
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper
        self.sampler = sampler
        self.batch_size = batch_size
        self.group_by_aspect = group_by_aspect

    def _mapped(self) -> Iterator[dict]:
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for index in itertools.islice(iter(self.sampler), worker_id, None, num_workers):
            mapped = self.mapper(self.dataset_dicts[index])
            if mapped is not None:
                yield mapped

    def __iter__(self) -> Iterator[list[dict]]:
        buckets: tuple[list[dict], list[dict]] = ([], [])
        for item in self._mapped():
            height, width = item["image"].shape[-2:]
            bucket = buckets[int(self.group_by_aspect and height >= width)]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()


def _keep_batch(batch: list[dict]) -> list[dict]:
    """Batches stay lists of dicts (images differ in size; models pad them)."""
    return batch


def _seed_worker(worker_id: int) -> None:
    # DataLoader has seeded this worker's torch RNG (loader seed + worker id); numpy and random
    # follow it so that mappers using them are reproducible too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _training_sampler(
    cfg: CfgNode, dataset_dicts: list[dict], seed: int | None, start: int
) -> TrainingSampler:
    if cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return RepeatFactorTrainingSampler(factors, seed=seed, start=start)
    if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
        return TrainingSampler(len(dataset_dicts), seed=seed, start=start)
    raise ConfigError(
        f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r}; fix: use "
        f"'TrainingSampler' or 'RepeatFactorTrainingSampler'"
    )


def _train_loader_from_config(
    cfg: CfgNode,
    mapper: Mapper | None = None,
    *,
    dataset: list[dict] | None = None,
    sampler: Sampler[int] | None = None,
    start_iter: int = 0,
) -> dict:
    """Arguments of :func:`build_detection_train_loader` from ``cfg``: ``DATASETS.TRAIN``
    (unless ``dataset``), a training :class:`DatasetMapper` (unless ``mapper``) and
    ``DATALOADER.SAMPLER_TRAIN`` seeded with ``SEED`` (random when < 0), started past the items
    of the first ``start_iter`` batches (unless ``sampler``)."""
    world_size = comm.get_world_size()
    _check_batch_size(cfg.SOLVER.IMS_PER_BATCH, world_size)
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
    seed = cfg.SEED if cfg.SEED >= 0 else None
    if sampler is None:
        start = start_iter * (cfg.SOLVER.IMS_PER_BATCH // world_size)
        sampler = _training_sampler(cfg, dataset, seed, start=start)
    return {
        "dataset": dataset,
        "mapper": DatasetMapper(cfg, is_train=True) if mapper is None else mapper,
        "sampler": sampler,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "seed": seed,
    }


def _check_batch_size(total_batch_size: int, world_size: int) -> None:
    if total_batch_size <= 0 or total_batch_size % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH = {total_batch_size} (the total batch size) cannot be split "
            f"evenly over {world_size} process(es); fix: make it a positive multiple of "
            f"{world_size}"
        )


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(
    dataset: list[dict],
    *,
    mapper: Mapper,
    total_batch_size: int,
    sampler: Sampler[int] | None = None,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """An infinite loader of training batches: each batch is a ``list[dict]`` of
    ``total_batch_size / world_size`` mapped inputs (see :class:`DatasetMapper`).

    Args:
        dataset: the dataset dicts.
        mapper: dataset dict → model input (None from it skips the item).
        total_batch_size: images per iteration over all processes (``SOLVER.IMS_PER_BATCH``).
        sampler: an infinite stream of indices into ``dataset``; default
            :class:`TrainingSampler` seeded with ``seed``.
        aspect_ratio_grouping: a batch never mixes wide (W > H) and tall mapped images.
        num_workers: DataLoader worker processes (``multiprocessing_context``, e.g. "spawn",
            picks how they start), seeded from ``seed`` and the rank (random when None).

    From a config: ``build_detection_train_loader(cfg, mapper=None, start_iter=0)``, where
    ``start_iter`` skips the sampler items of the first ``start_iter`` batches, so a resumed run
    sees the images an uninterrupted one would (exactly so without aspect-ratio grouping and
    worker processes, whose augmentation RNG restarts).
    """
    rank, world_size = comm.get_rank(), comm.get_world_size()
    _check_batch_size(total_batch_size, world_size)
    if sampler is None:
        sampler = TrainingSampler(len(dataset), seed=seed)
    batches = _TrainingBatches(
        dataset,
        mapper,
        sampler,
        batch_size=total_batch_size // world_size,
        group_by_aspect=aspect_ratio_grouping,
    )
    # Worker seeds come from this generator (random when seed is None); each rank gets its own.
    generator = torch.Generator().manual_seed(seed + rank) if seed is not None else None
    return DataLoader(
        batches,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_keep_batch,
        worker_init_fn=_seed_worker,
        generator=generator,
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )


def _test_loader_from_config(
    cfg: CfgNode, dataset_name: str | Sequence[str], mapper: Mapper | None = None
) -> dict:
    """Arguments of :func:`build_detection_test_loader` from ``cfg``: the dicts of
    ``dataset_name`` (name(s) or COCO json path(s), nothing filtered) and an inference
    :class:`DatasetMapper` (unless ``mapper``)."""
    return {
        "dataset": get_detection_dataset_dicts(dataset_name, filter_empty=False),
        "mapper": DatasetMapper(cfg, is_train=False) if mapper is None else mapper,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(
    dataset: list[dict],
    *,
    mapper: Mapper,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """A loader over ``dataset`` (dataset dicts) for inference: every image once, in order,
    batches of one (``list[dict]`` of length 1); by default (``sampler`` None) each process of
    a DDP job gets one contiguous shard (:class:`InferenceSampler`).

    From a config: ``build_detection_test_loader(cfg, dataset_name, mapper=None)``.
    """
    return DataLoader(
        _MappedList(dataset, mapper),
        batch_size=1,
        sampler=InferenceSampler(len(dataset)) if sampler is None else sampler,
        num_workers=num_workers,
        collate_fn=_keep_batch,
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )
