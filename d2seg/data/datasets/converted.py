"""A split written by ``tools/convert_labelme.py`` as one dataset: instances, semantic and
panoptic labels together (:func:`load_converted_split`, :func:`register_converted_split`), and
its panoptic json as the panoptic dataset of a split with stuff classes
(:func:`load_converted_panoptic`, :func:`register_converted_panoptic`).

Where the converter's files are is :class:`~d2seg.data.convert.layout.ConvertedLayout`'s business;
:meth:`ConvertedLayout.of_split <d2seg.data.convert.layout.ConvertedLayout.of_split>` tells a
converted split's json from any other COCO json.
"""

import functools
import logging
import os
from pathlib import Path
from typing import Any

from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.convert.layout import IGNORE_VALUE, ConvertedLayout
from d2seg.data.coco import contiguous_categories
from d2seg.data.datasets.coco import read_coco_instances
from d2seg.data.datasets.coco_panoptic import load_coco_panoptic_json, panoptic_category_maps
from d2seg.data.io import read_json
from d2seg.errors import DatasetError

logger = logging.getLogger(__name__)


def _image_and_semantic_files(layout: ConvertedLayout, split: str) -> dict[str, Any]:
    """The metadata both views of a split share: ``image_root``, ``ignore_label`` and, where
    the converter wrote them, ``sem_seg_root``."""
    files: dict[str, Any] = {"image_root": str(layout.images_dir), "ignore_label": IGNORE_VALUE}
    if layout.sem_seg_dir(split).is_dir():
        files["sem_seg_root"] = str(layout.sem_seg_dir(split))
    return files


def _split_of(json_file: Path) -> tuple[ConvertedLayout, str]:
    found = ConvertedLayout.of_split(json_file)
    if found is None:
        raise DatasetError(
            f"{json_file} is not a split written by tools/convert_labelme.py (OUT/annotations/"
            f"<split>.json beside OUT/images); fix: register it with register_coco_instances"
        )
    return found


def _converted_split_metadata(json_file: Path) -> dict[str, Any]:
    """Metadata of a converted split: its files (the label parts only where they exist)."""
    layout, split = _split_of(json_file)
    metadata = {"json_file": str(json_file), **_image_and_semantic_files(layout, split)}
    panoptic_json, panoptic_root = layout.panoptic_json(split), layout.panoptic_dir(split)
    if panoptic_json.is_file() and panoptic_root.is_dir():
        metadata.update(panoptic_root=str(panoptic_root), panoptic_json=str(panoptic_json))
    return metadata


def load_converted_split(json_file: str | os.PathLike, dataset_name: str) -> list[dict]:
    """Dataset dicts of a split written by ``tools/convert_labelme.py``.

    ``json_file`` is the absolute path of the split's instances json. Returns
    :func:`~d2seg.data.datasets.coco.read_coco_instances`'s dicts (images in the layout's images
    folder) with, where the converter wrote them:

    - ``sem_seg_file_name``: the split's semantic PNG of the image, uint8 H×W: 0 background,
      k = the category of id k, 255 ignore;
    - ``pan_seg_file_name`` and ``segments_info`` (contiguous category ids, as
      :func:`load_coco_panoptic_json`) from the split's panoptic json, when every category is a
      thing. A split with stuff categories (label-map classes, ``isthing: 0``) is panoptic
      through its own json instead: ``DATASETS.TRAIN: ("OUT/panoptic/<split>.json",)``
      (:func:`register_converted_panoptic`).

    Sets the metadata ``thing_classes`` (the thing categories, the instance classes) and
    ``stuff_classes = ["background", *every category in id order]``: semantic class k is the
    PNG value k, so a semantic model trained on it needs ``MODEL.SEM_SEG_HEAD.NUM_CLASSES =
    len(categories) + 1``. Also ``ignore_label`` 255 and ``json_file``, ``image_root``,
    ``sem_seg_root``, ``panoptic_root``, ``panoptic_json`` (those that exist).
    """
    files = _converted_split_metadata(Path(json_file))
    image_root = files["image_root"]
    coco, dataset_dicts = read_coco_instances(json_file, image_root)
    thing_classes, thing_map = contiguous_categories(coco)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    MetadataCatalog.get(dataset_name).set(**files).set(
        thing_classes=thing_classes, thing_dataset_id_to_contiguous_id=thing_map,
        stuff_classes=["background", *(c["name"] for c in categories)],
    )
    _attach_sem_seg(dataset_dicts, image_root, files.get("sem_seg_root"))
    if "panoptic_json" in files and len(thing_classes) == len(categories):
        panoptic = load_coco_panoptic_json(
            files["panoptic_json"], image_root, files["panoptic_root"], thing_map, {}
        )
        by_image = {(p["image_id"], p["file_name"]): p for p in panoptic}
        for record in dataset_dicts:
            match = by_image.get((record["image_id"], record["file_name"]))
            if match is not None:
                record["pan_seg_file_name"] = match["pan_seg_file_name"]
                record["segments_info"] = match["segments_info"]
    logger.info("Loaded %d images of converted split %s (%d thing classes of %d categories)",
                len(dataset_dicts), json_file, len(thing_classes), len(categories))
    return dataset_dicts


def _attach_sem_seg(dataset_dicts: list[dict], image_root: str, sem_seg_root: str | None) -> None:
    """Set ``sem_seg_file_name`` on the dicts whose semantic PNG exists under
    ``sem_seg_root`` (none when it is None)."""
    if sem_seg_root is None:
        return
    for record in dataset_dicts:
        file_name = Path(os.path.relpath(record["file_name"], image_root)).as_posix()
        label_file = Path(sem_seg_root, ConvertedLayout.label_map_name(file_name))
        if label_file.is_file():
            record["sem_seg_file_name"] = str(label_file)


def register_converted_split(name: str, json_file: str | os.PathLike) -> None:
    """Register the converted split whose instances json is ``json_file`` (an absolute path)
    as ``name``; its files are in the metadata now, its class names once it is loaded."""
    json_file = Path(json_file)
    metadata = _converted_split_metadata(json_file)
    DatasetCatalog.register(name, functools.partial(load_converted_split, str(json_file), name))
    MetadataCatalog.get(name).set(**metadata)


def _converted_panoptic_metadata(json_file: Path) -> dict[str, Any]:
    found = ConvertedLayout.of_panoptic_split(json_file)
    if found is None:
        raise DatasetError(
            f"{json_file} is not a panoptic split written by tools/convert_labelme.py "
            f"(OUT/panoptic/<split>.json beside OUT/panoptic/<split>/ and OUT/images); fix: "
            f"register it with register_coco_panoptic"
        )
    layout, split = found
    categories = read_json(json_file, "COCO panoptic file").get("categories", [])
    metadata: dict[str, Any] = {
        **panoptic_category_maps(categories),
        **_image_and_semantic_files(layout, split),
        "panoptic_root": str(layout.panoptic_dir(split)),
        "panoptic_json": str(json_file),
    }
    if layout.annotations_json(split).is_file():  # the COCO evaluator's ground truth
        metadata["json_file"] = str(layout.annotations_json(split))
    return metadata


def load_converted_panoptic(json_file: str | os.PathLike, dataset_name: str) -> list[dict]:
    """Dataset dicts of a converted split's panoptic json (``OUT/panoptic/<split>.json``):
    :func:`load_coco_panoptic_json`'s, things and stuff numbered apart as its categories'
    ``isthing`` say, plus ``sem_seg_file_name`` where the semantic PNG exists (it tells the
    ignore region from the panoptic PNG's void)."""
    metadata = MetadataCatalog.get(dataset_name)
    dataset_dicts = load_coco_panoptic_json(
        json_file, metadata.image_root, metadata.panoptic_root,
        metadata.thing_dataset_id_to_contiguous_id, metadata.stuff_dataset_id_to_contiguous_id,
    )
    _attach_sem_seg(dataset_dicts, metadata.image_root, metadata.get("sem_seg_root"))
    return dataset_dicts


def register_converted_panoptic(name: str, json_file: str | os.PathLike) -> None:
    """Register a converted split's panoptic json (an absolute path) as ``name``, the dataset a
    panoptic model trains on when the split has stuff categories. Metadata: Detectron2's
    separate thing/stuff maps and names (``stuff_classes`` = the stuff categories, no
    "background"), its folders, the split's instances json as ``json_file`` (for
    COCO evaluation) and ``ignore_label`` 255."""
    json_file = Path(json_file)
    metadata = _converted_panoptic_metadata(json_file)
    DatasetCatalog.register(name, functools.partial(load_converted_panoptic, str(json_file), name))
    MetadataCatalog.get(name).set(**metadata)
