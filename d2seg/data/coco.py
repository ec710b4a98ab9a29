"""The COCO instances format: validation, and conversion into Detectron2's dataset dicts.

:func:`validate` checks the structure of a COCO instances file before anything uses it, so a
broken file fails with the entry and the rule (``train.json: annotations[3]: segmentation is a
flat list of numbers; fix: ...``) instead of a KeyError deep inside training;
:func:`check_segmentation` is its check of one segmentation (also used on COCO results).
:func:`coco_dataset_dicts` turns a validated file's content into the list of dicts every d2seg
loader reads. Reading files and registering datasets is :mod:`d2seg.data.datasets`' job.
"""

import difflib
import logging
import os
from collections import defaultdict
from enum import IntEnum
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_util

from d2seg.errors import DatasetError

logger = logging.getLogger(__name__)
_NUMBER_TYPES = frozenset({int, float})
_REQUIRED_LISTS = ("images", "annotations", "categories")


class BoxMode(IntEnum):
    """How a box's 4 numbers are read; the values are Detectron2's ``BoxMode`` values."""

    XYXY_ABS = 0  # x0, y0, x1, y1 in pixels
    XYWH_ABS = 1  # x0, y0, width, height in pixels (COCO's bbox)


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check_top_level(coco: Any, source: str) -> None:
    if not isinstance(coco, dict):
        raise DatasetError(
            f"{source}: the top level is a {type(coco).__name__}, not an object; fix: a COCO "
            f"file is an object with 'images', 'annotations' and 'categories' lists"
        )
    for key in _REQUIRED_LISTS:
        if key not in coco:
            near = difflib.get_close_matches(key, [str(k) for k in coco], n=1, cutoff=0.7)
            hint = f"rename '{near[0]}' to '{key}'" if near else f"add a '{key}' list"
            raise DatasetError(f"{source}: missing top-level key '{key}'; fix: {hint}")
        if not isinstance(coco[key], list):
            raise DatasetError(
                f"{source}: '{key}' is a {type(coco[key]).__name__}, not a list; fix: wrap the "
                f"entries in a list: \"{key}\": [{{...}}, {{...}}]"
            )


def _check_entry(entry: Any, where: str, required: dict[str, tuple[type, str]]) -> None:
    """``required`` maps a key to (python type, what it is) for the error message."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} is a {type(entry).__name__}, not an object; fix: use {{...}}")
    for key, (kind, what) in required.items():
        value = entry.get(key)
        if value is None:
            raise DatasetError(f"{where} has no '{key}'; fix: add '{key}' with {what}")
        if kind is int and not _is_int(value) or kind is str and not isinstance(value, str):
            raise DatasetError(
                f"{where}: '{key}' is {value!r}, expected {what}; fix: correct the value"
            )


def _check_unique_ids(entries: list[dict], key: str, source: str) -> set[int]:
    ids: set[int] = set()
    for i, entry in enumerate(entries):
        if "id" not in entry:
            continue
        if entry["id"] in ids:
            raise DatasetError(
                f"{source}: {key}[{i}]: duplicate id {entry['id']}; fix: give every entry of "
                f"'{key}' its own id"
            )
        ids.add(entry["id"])
    return ids


def _check_polygons(segm: list, where: str) -> None:
    if not segm:
        raise DatasetError(f"{where}: segmentation is empty; fix: give a polygon or remove it")
    if all(_is_number(v) for v in segm):
        raise DatasetError(
            f"{where}: segmentation is a flat list of numbers; fix: COCO polygons are a list of "
            f"lists, wrap it: [[x1, y1, x2, y2, ...]]"
        )
    for j, poly in enumerate(segm):
        if not isinstance(poly, list) or not set(map(type, poly)) <= _NUMBER_TYPES:
            raise DatasetError(
                f"{where}: segmentation[{j}] is not a list of numbers; fix: each polygon is "
                f"[x1, y1, x2, y2, ...]"
            )
        if len(poly) < 6 or len(poly) % 2:
            raise DatasetError(
                f"{where}: segmentation[{j}] has {len(poly)} numbers; fix: a polygon needs an "
                f"even count of at least 6 (3 points x, y)"
            )


def _check_rle(segm: dict, where: str) -> None:
    size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(s) and s >= 0 for s in size)):
        raise DatasetError(
            f"{where}: RLE segmentation needs 'size': [height, width]; fix: add the image size"
        )
    if isinstance(counts, str):
        return
    runs_ok = isinstance(counts, list) and set(map(type, counts)) <= {int}
    if not (runs_ok and min(counts, default=0) >= 0):
        raise DatasetError(
            f"{where}: RLE 'counts' must be a compressed string or a list of run lengths; fix: "
            f"write it with pycocotools.mask.encode"
        )
    if sum(counts) != size[0] * size[1]:
        raise DatasetError(
            f"{where}: uncompressed RLE runs sum to {sum(counts)}, not height*width = "
            f"{size[0] * size[1]}; fix: re-encode the mask at its 'size'"
        )


def _rle_string_run_lengths(counts: str) -> list[int] | None:
    """Run lengths of a compressed RLE string (pycocotools' ``rleFrString`` encoding).

    ``None`` when the string is not a valid encoding. pycocotools decodes without bounds checks,
    so a corrupt string must be caught here rather than crash the process.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return None
            char = ord(counts[position]) - 48
            if not 0 <= char < 64:
                return None
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            position += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
    return runs


def _check_rle_size(segm: dict, where: str, height: int, width: int) -> None:
    if segm["size"] != [height, width]:
        raise DatasetError(
            f"{where}: RLE size {segm['size']} is not the image's [height, width] = "
            f"[{height}, {width}]; fix: encode the mask at the image size"
        )
    if isinstance(segm["counts"], str):
        runs = _rle_string_run_lengths(segm["counts"])
        if runs is None or sum(runs) != height * width:
            raise DatasetError(
                f"{where}: RLE 'counts' string is corrupt (its runs do not cover "
                f"{height}x{width} pixels); fix: re-encode the mask with "
                f"pycocotools.mask.encode"
            )


def check_segmentation(
    segm: Any, where: str, height: int | None = None, width: int | None = None
) -> None:
    """Check one COCO ``segmentation``; raise :class:`DatasetError` naming ``where`` and the fix.

    Accepted: polygons ``[[x1, y1, x2, y2, ...], ...]`` (each an even count >= 6 of numbers) or
    an RLE ``{"size": [height, width], "counts": str | list[int]}`` (uncompressed runs summing to
    height·width). Given the image's ``height`` and ``width`` (pixels), an RLE must have that
    size and a compressed ``counts`` string must decode to exactly that many pixels.
    """
    if isinstance(segm, list):
        _check_polygons(segm, where)
    elif isinstance(segm, dict):
        _check_rle(segm, where)
        if height is not None and width is not None:
            _check_rle_size(segm, where, height, width)
    else:
        raise DatasetError(
            f"{where}: segmentation is a {type(segm).__name__}; fix: use polygons "
            f"[[x1, y1, ...]] or an RLE {{'size': [h, w], 'counts': ...}}"
        )


def _check_annotation(
    ann: Any, where: str, image_ids: set[int], category_ids: set[int]
) -> None:
    _check_entry(
        ann,
        where,
        {
            "image_id": (int, "the integer id of its image"),
            "category_id": (int, "the integer id of its category"),
        },
    )
    if ann["image_id"] not in image_ids:
        raise DatasetError(
            f"{where}: image_id {ann['image_id']} is not the id of any entry in 'images'; fix: "
            f"add the image or correct the id"
        )
    if ann["category_id"] not in category_ids:
        raise DatasetError(
            f"{where}: category_id {ann['category_id']} is not the id of any entry in "
            f"'categories'; fix: add the category or correct the id"
        )
    bbox = ann.get("bbox")
    if bbox is not None and not (
        isinstance(bbox, list) and len(bbox) == 4 and set(map(type, bbox)) <= _NUMBER_TYPES
    ):
        raise DatasetError(f"{where}: bbox {bbox!r} is not 4 numbers; fix: [x, y, width, height]")
    if ann.get("iscrowd", 0) not in (0, 1):
        raise DatasetError(f"{where}: iscrowd is {ann['iscrowd']!r}; fix: use 0 or 1")
    segm = ann.get("segmentation")
    if segm is None:
        raise DatasetError(
            f"{where} has no 'segmentation'; fix: add its polygons [[x1, y1, ...]] or RLE "
            f"{{'size': [h, w], 'counts': ...}} (d2seg trains segmentation models)"
        )
    check_segmentation(segm, where)


def validate(coco: dict, source: str) -> None:
    """Check a COCO instances dict; raise :class:`DatasetError` at the first broken rule.

    The message names ``source`` (the file), the entry (``annotations[3]``) and the fix.
    Required: ``images`` (``id``, ``file_name``), ``categories`` (``id``, ``name``) and
    ``annotations`` (``image_id``/``category_id`` referring to existing entries, a
    ``segmentation`` that is a list of polygons of >= 3 points or an RLE with ``size`` and
    ``counts``); ``bbox`` when present is 4 numbers; ids are unique. Annotation ids, ``bbox``,
    ``area`` and image sizes are optional, as in the COCO format itself.
    """
    _check_top_level(coco, source)
    for i, image in enumerate(coco["images"]):
        _check_entry(
            image,
            f"{source}: images[{i}]",
            {"id": (int, "an integer id"), "file_name": (str, "the image path (a string)")},
        )
    for i, category in enumerate(coco["categories"]):
        _check_entry(
            category,
            f"{source}: categories[{i}]",
            {"id": (int, "an integer id"), "name": (str, "the class name (a string)")},
        )
    image_ids = _check_unique_ids(coco["images"], "images", source)
    category_ids = _check_unique_ids(coco["categories"], "categories", source)
    stuff_ids = {c["id"] for c in coco["categories"] if not is_thing(c)}
    for i, ann in enumerate(coco["annotations"]):
        _check_annotation(ann, f"{source}: annotations[{i}]", image_ids, category_ids)
        if ann["category_id"] in stuff_ids:
            raise DatasetError(
                f"{source}: annotations[{i}] has category_id {ann['category_id']}, a stuff "
                f"category (isthing 0), which has no instances; fix: set that category's "
                f"isthing to 1 or remove the annotation"
            )
    _check_unique_ids(coco["annotations"], "annotations", source)


# An annotation's bbox further than this (pixels, any side) from its segmentation's is wrong.
BBOX_TOLERANCE = 1.0


def _edge_distance(a: list[float], b: list[float]) -> float:
    """The largest distance in pixels between corresponding edges of two XYWH boxes (edges, not
    widths: a box one pixel larger on each side is 1 px off, not 2)."""
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]),
               abs(a[0] + a[2] - b[0] - b[2]), abs(a[1] + a[3] - b[1] - b[3]))


def _annotation_to_dict(
    ann: dict, height: int, width: int, category_map: dict
) -> tuple[dict, bool]:
    """The dataset-dict annotation, and whether its ``bbox`` was recomputed from the
    segmentation because it was missing or disagreed (exports from other tools)."""
    segm = ann["segmentation"]
    if isinstance(segm, dict) and isinstance(segm["counts"], list):
        # Uncompressed RLE (COCO crowd regions) → compressed, as Detectron2 does.
        segm = mask_util.frPyObjects(segm, *segm["size"])
        segm = {"size": segm["size"], "counts": segm["counts"].decode("ascii")}
    rles = mask_util.frPyObjects(segm, height, width) if isinstance(segm, list) else [segm]
    mask_bbox = mask_util.toBbox(mask_util.merge(rles)).tolist()
    bbox = ann.get("bbox")
    fixed = bbox is not None and _edge_distance(bbox, mask_bbox) > BBOX_TOLERANCE
    if bbox is None or fixed:
        bbox = mask_bbox
    return {
        "bbox": [float(v) for v in bbox],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": category_map[ann["category_id"]],
        "segmentation": segm,
        "iscrowd": ann.get("iscrowd", 0),
    }, fixed


def is_thing(category: dict) -> bool:
    """Whether a COCO category is a thing: its ``isthing`` (COCO panoptic's field), 1 when
    absent as in plain COCO instances files."""
    return bool(category.get("isthing", 1))


def contiguous_categories(coco: dict) -> tuple[list[str], dict[int, int]]:
    """``(thing_classes, thing_dataset_id_to_contiguous_id)`` of a validated COCO dict: the
    thing category names in the order of their sorted ids, and each id's index in that order.
    Categories marked ``isthing: 0`` (stuff, as the converter writes for label-map classes)
    are no instance classes and are left out."""
    categories = sorted(filter(is_thing, coco["categories"]), key=lambda c: c["id"])
    return [c["name"] for c in categories], {c["id"]: i for i, c in enumerate(categories)}


def coco_dataset_dicts(
    coco: dict, json_file: str | os.PathLike, image_root: str | os.PathLike
) -> list[dict]:
    """The dataset dicts of a validated COCO instances dict read from ``json_file``.

    Returns one dict per image: ``file_name`` (absolute, under ``image_root``), ``height``,
    ``width`` (pixels), ``image_id`` and ``annotations`` = ``[{bbox (XYWH pixels), bbox_mode
    (BoxMode.XYWH_ABS), category_id (contiguous 0..C-1, see :func:`contiguous_categories`),
    segmentation (polygons or compressed RLE), iscrowd}]``. A ``bbox`` that disagrees with its
    segmentation by more than 1 px (CVAT and Roboflow exports) is replaced by the segmentation's,
    with one warning that counts them (``tools/convert.py --format coco`` rewrites such a file
    with every fix listed).
    """
    category_map = contiguous_categories(coco)[1]
    annotations_by_image = defaultdict(list)
    for ann in coco["annotations"]:
        annotations_by_image[ann["image_id"]].append(ann)
    image_root = Path(image_root).resolve()
    dataset_dicts = []
    fixed = 0
    for i, image in enumerate(coco["images"]):
        height, width = image.get("height"), image.get("width")
        if not (_is_int(height) and _is_int(width)):
            raise DatasetError(
                f"{json_file}: images[{i}] has no integer height/width; fix: add the image size "
                f"in pixels (tools/convert_labelme.py writes it)"
            )
        annotations = []
        for ann in annotations_by_image[image["id"]]:
            annotation, bbox_fixed = _annotation_to_dict(ann, height, width, category_map)
            annotations.append(annotation)
            fixed += bbox_fixed
        dataset_dicts.append(
            {
                "file_name": str(image_root / image["file_name"]),
                "height": height,
                "width": width,
                "image_id": image["id"],
                "annotations": annotations,
            }
        )
    if fixed:
        logger.warning(
            "%s: %d of %d annotation bbox(es) disagree with their segmentation by more than "
            "%g px and were recomputed from it; fix: convert the file with tools/convert.py "
            "--format coco, which rewrites bbox and area and lists each fix in report.json",
            json_file, fixed, len(coco["annotations"]), BBOX_TOLERANCE,
        )
    return dataset_dicts
