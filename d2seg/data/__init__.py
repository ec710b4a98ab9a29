"""Datasets: Labelme/VIA/mask conversion, COCO loading, catalogs, mappers and loaders.

The catalogs and the ``register_*``/``load_*`` functions are imported here as in Detectron2's
``detectron2.data``. The mapper and the loaders need torch and torchvision, which the converter
and its worker processes never use, so they are imported on first access.
"""

import importlib
from typing import Any

from d2seg.data.catalog import DatasetCatalog, Metadata, MetadataCatalog
from d2seg.data.datasets import (
    load_coco_json,
    load_sem_seg,
    register_coco_instances,
    register_coco_panoptic,
    register_sem_seg,
    resolve_dataset,
)

_LAZY = {
    "DatasetMapper": "d2seg.data.mapper",
    "build_detection_test_loader": "d2seg.data.build",
    "build_detection_train_loader": "d2seg.data.build",
    "get_detection_dataset_dicts": "d2seg.data.build",
}

__all__ = [
    "DatasetCatalog",
    "Metadata",
    "MetadataCatalog",
    "load_coco_json",
    "load_sem_seg",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_sem_seg",
    "resolve_dataset",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'd2seg.data' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
