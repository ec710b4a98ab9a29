"""COCO panoptic files (PNGs + json) as datasets, with separate thing and stuff class ids."""

import functools
import os
from pathlib import Path
from typing import Any

from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.coco import is_thing
from d2seg.data.io import read_json
from d2seg.errors import DatasetError


def panoptic_category_maps(categories: list[dict]) -> dict[str, Any]:
    """Detectron2's panoptic class maps with SEPARATE contiguous ids for things and stuff.

    Categories sorted by dataset id; ``isthing`` (default 1) splits them. Returns
    ``thing_classes`` (the T thing names), ``stuff_classes`` (the S stuff names, no
    "background": PanopticUNet's semantic label 2 + k is ``stuff_classes[k]``, label 0 the
    things and label 1 the unlabelled pixels, which are no dataset category),
    ``thing_dataset_id_to_contiguous_id`` (→ 0..T-1, the instance classes) and
    ``stuff_dataset_id_to_contiguous_id`` (→ 0..S-1).
    """
    categories = sorted(categories, key=lambda c: c["id"])
    things = [c for c in categories if is_thing(c)]
    stuff = [c for c in categories if not is_thing(c)]
    return {
        "thing_classes": [c["name"] for c in things],
        "stuff_classes": [c["name"] for c in stuff],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(stuff)},
    }


def _check_panoptic_maps(name: str, metadata: dict) -> None:
    """Each class map must number its own kind 0..n-1, with one name per id where names are given.

    Detectron2's "coco_panoptic_standard" metadata (one id space over things and stuff) would
    otherwise give instance classes ≥ T and stuff labels past the semantic head's classes.
    """
    for kind in ("thing", "stuff"):
        ids = sorted(metadata.get(f"{kind}_dataset_id_to_contiguous_id", {}).values())
        if ids != list(range(len(ids))):
            raise DatasetError(
                f"register_coco_panoptic('{name}'): metadata {kind}_dataset_id_to_contiguous_id "
                f"maps to {ids[:8]}{'...' if len(ids) > 8 else ''}, not 0..{len(ids) - 1}; fix: "
                f"number {kind} categories on their own (0..n-1 over the {kind} categories), or "
                f"leave the maps out to read them from the json's categories"
            )
        names = metadata.get(f"{kind}_classes")
        if names is not None and len(names) != len(ids):
            raise DatasetError(
                f"register_coco_panoptic('{name}'): metadata {kind}_classes has {len(names)} "
                f"names for {len(ids)} {kind} categories; fix: give one name per {kind} category "
                f"in contiguous order ({kind} categories only, no 'background'/'things' entry)"
            )


def load_coco_panoptic_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    thing_dataset_id_to_contiguous_id: dict[int, int],
    stuff_dataset_id_to_contiguous_id: dict[int, int],
) -> list[dict]:
    """Load a COCO panoptic file as dataset dicts.

    Returns one dict per annotated image: ``file_name`` (absolute image path), ``height``,
    ``width``, ``image_id``, ``pan_seg_file_name`` (absolute PNG path; segment id = R + 256·G +
    256²·B, 0 = void) and ``segments_info`` = ``[{id, category_id (contiguous), iscrowd, area,
    bbox (XYWH pixels), isthing}]``.
    """
    coco = read_json(json_file, "COCO panoptic file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key) if isinstance(coco, dict) else None, list):
            raise DatasetError(
                f"{json_file}: no '{key}' list; fix: give a COCO panoptic json (images, "
                f"annotations with segments_info, categories)"
            )
    images = {image["id"]: image for image in coco["images"]}
    thing_map, stuff_map = thing_dataset_id_to_contiguous_id, stuff_dataset_id_to_contiguous_id
    image_root, panoptic_root = Path(image_root).resolve(), Path(panoptic_root).resolve()
    dataset_dicts = []
    for i, ann in enumerate(coco["annotations"]):
        image = images.get(ann.get("image_id"))
        if image is None or "file_name" not in ann or "segments_info" not in ann:
            raise DatasetError(
                f"{json_file}: annotations[{i}] needs 'image_id' of an entry in 'images', "
                f"'file_name' (its PNG) and 'segments_info'; fix: correct that entry"
            )
        if not {"file_name", "height", "width"} <= image.keys():
            raise DatasetError(
                f"{json_file}: the image of annotations[{i}] lacks file_name/height/width; fix: "
                f"add them to its entry in 'images'"
            )
        segments = []
        for segment in ann["segments_info"]:
            category = segment["category_id"]
            isthing = category in thing_map
            if not isthing and category not in stuff_map:
                raise DatasetError(
                    f"{json_file}: annotations[{i}] has a segment of category_id {category}, "
                    f"which is not in 'categories'; fix: add the category or correct the id"
                )
            segments.append(
                {
                    **segment,
                    "category_id": thing_map[category] if isthing else stuff_map[category],
                    "isthing": isthing,
                }
            )
        dataset_dicts.append(
            {
                "file_name": str(image_root / image["file_name"]),
                "height": image["height"],
                "width": image["width"],
                "image_id": ann["image_id"],
                "pan_seg_file_name": str(panoptic_root / ann["file_name"]),
                "segments_info": segments,
            }
        )
    return dataset_dicts


def register_coco_panoptic(
    name: str,
    metadata: dict,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    panoptic_json: str | os.PathLike,
) -> None:
    """Register a COCO panoptic dataset (PNGs in ``panoptic_root`` + ``panoptic_json``).

    When ``metadata`` has no ``thing_dataset_id_to_contiguous_id``, the class maps and names are
    read from the json's categories now (see :func:`panoptic_category_maps`); given maps must
    number things 0..T-1 and stuff 0..S-1 separately. The dataset dicts' ``segments_info`` then
    carry those contiguous ids and ``isthing``, which is what
    :func:`~d2seg.data.detection_utils.panoptic_to_targets` and
    :class:`~d2seg.evaluation.PanopticEvaluator` read.

    Metadata: the three paths from the arguments (a different value in ``metadata`` is an
    error), ``ignore_label`` 255 unless ``metadata`` says otherwise, and ``metadata``.
    """
    if "thing_dataset_id_to_contiguous_id" not in metadata:
        categories = read_json(panoptic_json, "COCO panoptic file").get("categories", [])
        metadata = {**panoptic_category_maps(categories), **metadata}
    _check_panoptic_maps(name, metadata)
    DatasetCatalog.register(
        name,
        functools.partial(
            load_coco_panoptic_json,
            str(panoptic_json),
            str(image_root),
            str(panoptic_root),
            metadata["thing_dataset_id_to_contiguous_id"],
            metadata.get("stuff_dataset_id_to_contiguous_id", {}),
        ),
    )
    MetadataCatalog.get(name).set(
        image_root=str(image_root),
        panoptic_root=str(panoptic_root),
        panoptic_json=str(panoptic_json),
    ).set(**{"ignore_label": 255, **metadata})
