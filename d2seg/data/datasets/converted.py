"""A split written by ``tools/convert_labelme.py`` as one dataset: instances, semantic and
panoptic labels together (:func:`load_converted_split`, :func:`register_converted_split`).

Where the converter's files are is :class:`~d2seg.data.convert.layout.ConvertedLayout`'s business;
:meth:`ConvertedLayout.of_split <d2seg.data.convert.layout.ConvertedLayout.of_split>` tells a
converted split's json from any other COCO json.
"""

import functools
import os
from pathlib import Path
from typing import Any

from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.convert.layout import IGNORE_VALUE, ConvertedLayout
from d2seg.data.datasets.coco import load_coco_json
from d2seg.data.datasets.coco_panoptic import load_coco_panoptic_json
from d2seg.errors import DatasetError


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
    metadata: dict[str, Any] = {
        "json_file": str(json_file),
        "image_root": str(layout.images_dir),
        "ignore_label": IGNORE_VALUE,
    }
    if layout.sem_seg_dir(split).is_dir():
        metadata["sem_seg_root"] = str(layout.sem_seg_dir(split))
    panoptic_json, panoptic_root = layout.panoptic_json(split), layout.panoptic_dir(split)
    if panoptic_json.is_file() and panoptic_root.is_dir():
        metadata.update(panoptic_root=str(panoptic_root), panoptic_json=str(panoptic_json))
    return metadata


def load_converted_split(json_file: str | os.PathLike, dataset_name: str) -> list[dict]:
    """Dataset dicts of a split written by ``tools/convert_labelme.py``.

    ``json_file`` is the absolute path of the split's instances json. Returns
    :func:`load_coco_json`'s dicts (images in the layout's images folder) with, where the
    converter wrote them:

    - ``sem_seg_file_name``: the split's semantic PNG of the image, uint8 H×W: 0 background,
      k = ``thing_classes[k - 1]``, 255 ignore;
    - ``pan_seg_file_name`` and ``segments_info`` (contiguous category ids, as
      :func:`load_coco_panoptic_json`) from the split's panoptic json.

    Sets the metadata ``stuff_classes = ["background", *thing_classes]``: semantic class k is
    the PNG value k, so a semantic model trained on it needs ``MODEL.SEM_SEG_HEAD.NUM_CLASSES =
    len(thing_classes) + 1``. Every converted category is a thing: the panoptic view has no
    stuff categories (no ``stuff_dataset_id_to_contiguous_id``), so PanopticUNet's semantic
    labels there are only 0 (things) and 1 (background), and ``stuff_classes`` names the
    semantic PNG's classes, not stuff categories as ``register_coco_panoptic``'s does.
    Also ``ignore_label`` 255 and ``json_file``, ``image_root``, ``sem_seg_root``,
    ``panoptic_root``, ``panoptic_json`` (those that exist).
    """
    files = _converted_split_metadata(Path(json_file))
    image_root = files["image_root"]
    dataset_dicts = load_coco_json(json_file, image_root, dataset_name)
    metadata = MetadataCatalog.get(dataset_name).set(**files)
    metadata.set(stuff_classes=["background", *metadata.thing_classes])
    if "sem_seg_root" in files:
        for record in dataset_dicts:
            file_name = Path(os.path.relpath(record["file_name"], image_root)).as_posix()
            label_file = Path(files["sem_seg_root"], ConvertedLayout.label_map_name(file_name))
            if label_file.is_file():
                record["sem_seg_file_name"] = str(label_file)
    if "panoptic_json" in files:
        panoptic = load_coco_panoptic_json(
            files["panoptic_json"],
            image_root,
            files["panoptic_root"],
            metadata.thing_dataset_id_to_contiguous_id,
            {},
        )
        by_image = {(p["image_id"], p["file_name"]): p for p in panoptic}
        for record in dataset_dicts:
            match = by_image.get((record["image_id"], record["file_name"]))
            if match is not None:
                record["pan_seg_file_name"] = match["pan_seg_file_name"]
                record["segments_info"] = match["segments_info"]
    return dataset_dicts


def register_converted_split(name: str, json_file: str | os.PathLike) -> None:
    """Register the converted split whose instances json is ``json_file`` (an absolute path)
    as ``name``; its files are in the metadata now, its class names once it is loaded."""
    json_file = Path(json_file)
    metadata = _converted_split_metadata(json_file)
    DatasetCatalog.register(name, functools.partial(load_converted_split, str(json_file), name))
    MetadataCatalog.get(name).set(**metadata)
