"""Train and test data loaders: dataset dicts → mapped model inputs in batches (``list[dict]``).

The loaders capture the dataset as a plain list of dicts, so DataLoader workers (forked or
spawned) need neither the catalog nor any registration: only the list, the mapper and the
sampler are sent to them. Both loaders are built from a config (``build_detection_train_loader(
cfg)``) or from explicit arguments (``build_detection_train_loader(dataset=dicts, mapper=...,
total_batch_size=4)``), as in Detectron2 (:func:`~d2seg.config.configurable`).
"""

import contextlib
import logging
import os
import random
import signal
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from d2seg.config import CfgNode, configurable
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.datasets import resolve_dataset
from d2seg.data.io import read_image
from d2seg.data.mapper import DatasetMapper
from d2seg.data.samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingBatchSampler,
    TrainingSampler,
)
from d2seg.errors import ConfigError, DatasetError
from d2seg.modeling.meta_arch.declarations import model_tasks
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


class _SeededMappedList(_MappedList):
    """``dataset[(index, seed)]``: dict ``index`` mapped with torch, NumPy and ``random`` seeded
    by ``seed``, so an item's augmentation depends on its seed alone (not on the worker)."""

    def __getitem__(self, key: tuple[int, int]) -> dict:  # type: ignore[override]
        index, seed = key
        with _seeded_rng(seed):
            return self.mapper(self.dataset_dicts[index])


@contextlib.contextmanager
def _seeded_rng(seed: int) -> Iterator[None]:
    # Restored afterwards: without workers the mapping runs in the main process, whose RNG
    # streams belong to the model (and are saved in checkpoints).
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def _keep_batch(batch: list[dict]) -> list[dict]:
    """Batches stay lists of dicts (images differ in size; models pad them)."""
    return batch


def _drop_unmapped(batch: list[dict | None]) -> list[dict]:
    return [item for item in batch if item is not None]


def _ignore_ctrl_c(worker_id: int) -> None:
    # Ctrl-C reaches every process of the terminal's group: the main process finishes its step
    # and saves, and a worker that died of it would fail that step; the main process ends the
    # workers itself. (SIGTERM stays fatal: DataLoader ends its workers with it at exit.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _is_tall(dataset_dict: dict) -> bool:
    """Height >= width, from the dict's size (read from the image when it has none)."""
    if "height" in dataset_dict and "width" in dataset_dict:
        height, width = dataset_dict["height"], dataset_dict["width"]
    else:
        height, width = read_image(dataset_dict["file_name"]).shape[:2]
    return height >= width


def _training_sampler(cfg: CfgNode, dataset_dicts: list[dict], seed: int | None) -> TrainingSampler:
    if cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return RepeatFactorTrainingSampler(factors, seed=seed)
    if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
        return TrainingSampler(len(dataset_dicts), seed=seed)
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
    seed: int | None = None,
) -> dict:
    """Arguments of :func:`build_detection_train_loader` from ``cfg``: ``DATASETS.TRAIN``
    (unless ``dataset``), a training :class:`DatasetMapper` (unless ``mapper``),
    ``DATALOADER.SAMPLER_TRAIN`` (unless ``sampler``) and the data seed ``SEED`` (unless
    ``seed``; random and shared by all processes when < 0)."""
    _check_batch_size(cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size())
    if dataset is None:
        # Images without instances train a semantic model (label maps of stuff classes, e.g.
        # a converted CamVid or raster set, have no COCO annotations): filter only for models
        # that learn instances.
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=(
                cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and "instances" in model_tasks(cfg)
            ),
        )
    if seed is None and cfg.SEED >= 0:
        seed = cfg.SEED
    return {
        "dataset": dataset,
        "mapper": DatasetMapper(cfg, is_train=True) if mapper is None else mapper,
        "sampler": _training_sampler(cfg, dataset, seed) if sampler is None else sampler,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "seed": seed,
        "start_iter": start_iter,
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
    sampler: TrainingSampler | None = None,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
    start_iter: int = 0,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """An infinite loader of training batches: each batch is a ``list[dict]`` of
    ``total_batch_size / world_size`` mapped inputs (see :class:`DatasetMapper`), the first
    one that of iteration ``start_iter``.

    The batches are a function of the data seed, the rank, the world size and the iteration
    alone (:class:`TrainingBatchSampler`): which images, grouped how (with
    ``aspect_ratio_grouping`` a batch holds only wide or only tall images, by the dataset
    dict's size), and every item's augmentation, seeded per item whichever of the
    ``num_workers`` worker processes maps it. So a run resumed at ``start_iter`` trains on
    exactly the batches an uninterrupted one does, with any number of workers, and the loader
    never draws from the main process's RNGs. A mapper returning None drops that item from
    its batch. Workers ignore SIGINT (a terminal's Ctrl-C): the training process handles it.

    Args:
        dataset: the dataset dicts.
        mapper: dataset dict → model input.
        total_batch_size: images per iteration over all processes (``SOLVER.IMS_PER_BATCH``).
        sampler: a :class:`TrainingSampler` over ``dataset``; default one seeded with ``seed``.
        aspect_ratio_grouping: never mix wide and tall images in a batch.
        num_workers: DataLoader worker processes (``multiprocessing_context``, e.g. "spawn",
            picks how they start).
        seed: the data seed (random and shared by all processes when None).
        start_iter: the iteration of the first batch.

    From a config: ``build_detection_train_loader(cfg, mapper=None, start_iter=0)``.
    """
    world_size = comm.get_world_size()
    _check_batch_size(total_batch_size, world_size)
    if sampler is None:
        sampler = TrainingSampler(len(dataset), seed=seed)
    tall = [_is_tall(d) for d in dataset] if aspect_ratio_grouping else None
    batches = TrainingBatchSampler(
        sampler, total_batch_size // world_size, tall=tall, start_iter=start_iter
    )
    return DataLoader(
        _SeededMappedList(dataset, mapper),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_drop_unmapped,
        worker_init_fn=_ignore_ctrl_c,
        # DataLoader draws a base seed from this generator (else from the global RNG) when
        # iterated; the items' own seeds make it irrelevant to the data.
        generator=torch.Generator().manual_seed(sampler.seed),
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
