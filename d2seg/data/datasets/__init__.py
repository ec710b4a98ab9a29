"""The standard dataset loaders and their ``register_*`` helpers (Detectron2's
``data/datasets``): COCO instances, COCO panoptic, semantic label folders, converted splits,
and :func:`resolve_dataset` for names or json paths.

Registered functions are ``functools.partial`` objects of these module-level loaders, so they
pickle; a spawned worker process that needs a dataset calls :func:`resolve_dataset` (or the
``register_*`` call) again and gets the same name.
"""

from d2seg.data.datasets.coco import load_coco_json, register_coco_instances
from d2seg.data.datasets.coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from d2seg.data.datasets.converted import (
    load_converted_panoptic,
    load_converted_split,
    register_converted_panoptic,
    register_converted_split,
)
from d2seg.data.datasets.resolve import resolve_dataset
from d2seg.data.datasets.sem_seg import load_sem_seg, register_sem_seg

__all__ = [
    "load_coco_json",
    "load_coco_panoptic_json",
    "load_converted_panoptic",
    "load_converted_split",
    "load_sem_seg",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_converted_panoptic",
    "register_converted_split",
    "register_sem_seg",
    "resolve_dataset",
]
