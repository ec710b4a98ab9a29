"""COCO instances files as datasets: :func:`load_coco_json` and :func:`register_coco_instances`."""

import functools
import logging
import os

from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.coco import coco_dataset_dicts, contiguous_categories, validate
from d2seg.data.io import read_json

logger = logging.getLogger(__name__)


def read_coco_instances(
    json_file: str | os.PathLike, image_root: str | os.PathLike
) -> tuple[dict, list[dict]]:
    """The validated COCO dict of ``json_file`` and its dataset dicts
    (:func:`~d2seg.data.coco.coco_dataset_dicts`); no metadata is set."""
    coco = read_json(json_file, "COCO annotation file")
    validate(coco, str(json_file))
    return coco, coco_dataset_dicts(coco, json_file, image_root)


def load_coco_json(
    json_file: str | os.PathLike, image_root: str | os.PathLike, dataset_name: str | None = None
) -> list[dict]:
    """Load a COCO instances file as Detectron2 dataset dicts (validated first).

    Returns :func:`~d2seg.data.coco.coco_dataset_dicts` (one dict per image, images under
    ``image_root``). With ``dataset_name`` it sets ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id`` in that dataset's metadata.
    """
    coco, dataset_dicts = read_coco_instances(json_file, image_root)
    thing_classes, category_map = contiguous_categories(coco)
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=thing_classes, thing_dataset_id_to_contiguous_id=category_map
        )
    logger.info(
        "Loaded %d images with %d annotations in %d categories from %s",
        len(dataset_dicts),
        len(coco["annotations"]),
        len(thing_classes),
        json_file,
    )
    return dataset_dicts


def register_coco_instances(
    name: str, metadata: dict, json_file: str | os.PathLike, image_root: str | os.PathLike
) -> None:
    """Register a COCO instances file; the json is read only when the dataset is loaded.

    ``metadata`` (e.g. ``thing_colors``) is added to the dataset's; ``json_file`` and
    ``image_root`` are set from the arguments (a different value in ``metadata`` is an error).
    """
    DatasetCatalog.register(
        name, functools.partial(load_coco_json, str(json_file), str(image_root), name)
    )
    MetadataCatalog.get(name).set(json_file=str(json_file), image_root=str(image_root)).set(
        **metadata
    )
