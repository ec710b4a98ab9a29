"""Writers from :class:`ImageRecord` to COCO instances, semantic PNGs and COCO panoptic.

Per image (run in ``--workers`` processes): :func:`write_image`, :func:`instance_annotations`,
:func:`label_maps` (semantic and panoptic) and :func:`write_png`. Per split (main process):
:func:`coco_json` assembles the light per-image entries into the
json files.

Conventions:

- COCO ``area`` is the pixel count of the rasterised mask and ``bbox`` is pycocotools' ``toBbox``
  of its RLE, as in Labelme's own COCO converter; polygons are written where the record has them,
  else the mask as compressed RLE (never a 2- or 4-number polygon, which pycocotools reads as a
  box).
- Semantic maps: uint8 H×W, 0 background, category id 1..N, 255 ignore; later instances are drawn
  over earlier ones, then the ignore region on top.
- Panoptic maps: RGB with segment id = R + 256·G + 256²·B, 0 = void (background and ignore);
  segment ids are 1..K per image in annotation order; ``segments_info`` area/bbox are those of the
  visible part. A stuff region (a label-map class that is not a thing) is one segment of its
  category; stuff categories are ``isthing: 0``, in the panoptic json and (so that loaders
  leave them out of the instance classes) in the instances json.
"""

import os
import shutil
from collections.abc import Collection
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

from d2seg.data.convert.layout import IGNORE_VALUE
from d2seg.data.convert.record import ImageRecord
from d2seg.errors import DatasetError

MAX_SEMANTIC_CATEGORIES = 254  # uint8 maps: 0 background, 255 ignore
# Label maps are long runs of equal values: zlib's RLE strategy is fast and small for them.
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def encode_mask(mask: np.ndarray) -> tuple[dict, float, list[float]]:
    """COCO RLE (``counts`` as str, json-ready), area (pixels) and XYWH bbox of a bool H×W mask."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    area, bbox = float(mask_util.area(rle)), mask_util.toBbox(rle).tolist()
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area, bbox


def mask_area_bbox(mask: np.ndarray) -> tuple[float, list[float]]:
    """:func:`encode_mask`'s area and bbox without the RLE (for instances written as
    polygons): the pixel count and the tight XYWH box, as pycocotools' ``area``/``toBbox``."""
    area = np.count_nonzero(mask)
    if not area:
        return 0.0, [0.0, 0.0, 0.0, 0.0]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x, y = int(cols[0]), int(rows[0])
    return float(area), [float(x), float(y), float(cols[-1] + 1 - x), float(rows[-1] + 1 - y)]


def encoded_rle(rle: dict) -> tuple[dict, float, list[float]]:
    """:func:`encode_mask`'s triple for a compressed pycocotools RLE (never decoded)."""
    area, bbox = float(mask_util.area(rle)), mask_util.toBbox(rle).tolist()
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(
        counts, bytes) else counts}, area, bbox


def instance_annotations(record: ImageRecord, category_ids: dict[str, int]) -> list[dict]:
    """COCO annotation entries (without ``id``/``image_id``) of the record's instances, stuff
    regions included (the caller keeps only things in the COCO json, see
    :func:`label_maps`).

    Every instance label must be in ``category_ids``.
    """
    annotations = []
    for instance in record.instances:
        if instance.mask is None:
            rle, area, bbox = encoded_rle(instance.rle)
        elif instance.polygons is not None:
            rle, (area, bbox) = None, mask_area_bbox(instance.mask)
        else:
            rle, area, bbox = encode_mask(instance.mask)
        annotations.append(
            {
                "category_id": category_ids[instance.label],
                "segmentation": instance.polygons if instance.polygons is not None else rle,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    return annotations


def label_maps(
    record: ImageRecord, annotations: list[dict]
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The semantic map, the panoptic PNG content and its ``segments_info``.

    ``annotations`` are :func:`instance_annotations` of ``record`` (same order). Returns
    (uint8 H×W semantic map, uint8 H×W×3 panoptic RGB, segments). Instances hidden entirely by
    later ones (or by the ignore region) get no segment; a stuff region (``isthing`` False)
    is a segment like an instance.
    """
    # One painting pass: segment k = instance k-1; the semantic map is a lookup of it.
    segment_ids = np.zeros((record.height, record.width), dtype=np.int32)
    for segment_id, instance in enumerate(record.instances, start=1):
        segment_ids[instance.pixels()] = segment_id
    lookup = np.array([0] + [a["category_id"] for a in annotations], dtype=np.uint8)
    semantic = lookup[segment_ids]
    if record.ignore_mask is not None:
        semantic[record.ignore_mask] = IGNORE_VALUE
        segment_ids[record.ignore_mask] = 0
    visible_areas = np.bincount(segment_ids.ravel(), minlength=len(annotations) + 1)
    segments = []
    for segment_id, annotation in enumerate(annotations, start=1):
        area = int(visible_areas[segment_id])
        if area == 0:
            continue
        bbox = annotation["bbox"]
        if area != annotation["area"]:  # partly hidden: the box of the visible part
            bbox = encode_mask(segment_ids == segment_id)[2]
        segments.append(
            {
                "id": segment_id,
                "category_id": annotation["category_id"],
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    rgb = np.zeros((record.height, record.width, 3), dtype=np.uint8)
    rgb[..., 0] = segment_ids % 256
    if len(annotations) >= 256:
        rgb[..., 1] = segment_ids // 256 % 256
        rgb[..., 2] = segment_ids // 65536
    return semantic, rgb, segments


def _imwrite(path: Path, array: np.ndarray, params: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # OpenCV wants BGR; cvtColor is ~10x faster than a contiguous copy of array[..., ::-1].
    pixels = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), pixels, params):
        raise DatasetError(
            f"{path}: cannot write the image; fix: check free space and permissions (and that "
            f"the name ends in .png or .jpg)"
        )


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 H×W or RGB H×W×3 label map as PNG, creating folders."""
    _imwrite(path, array, _PNG_FAST)


def write_image(record: ImageRecord, images_dir: Path, *, copy: bool = False) -> None:
    """Put the record's image at ``images_dir/file_name``: its pixels encoded (``numpy.save``
    for a ``.npy`` name), or its file hard-linked (copied with ``copy``, or when the link fails,
    e.g. across file systems)."""
    dest = images_dir / record.file_name
    if record.image is not None:
        if dest.suffix.lower() == ".npy":
            dest.parent.mkdir(parents=True, exist_ok=True)
            np.save(dest, record.image, allow_pickle=False)
        else:
            _imwrite(dest, record.image, [])
        return
    assert record.image_path is not None, "an ImageRecord needs image or image_path"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(record.image_path, dest)
            return
        except OSError:  # another file system, or links not allowed: copy instead
            pass
    shutil.copyfile(record.image_path, dest)


def coco_json(
    images: list[dict],
    annotations: list[dict],
    categories: list[str],
    *,
    stuff: Collection[str] = (),
    panoptic: bool = False,
) -> dict:
    """A COCO instances (or, with ``panoptic``, COCO panoptic) json.

    ``images`` and ``annotations`` carry their ids already; panoptic ``annotations`` are per
    image ``{image_id, file_name, segments_info}``. Category ids are 1..N in ``categories`` order.
    Categories named in ``stuff`` get ``isthing: 0``; in a panoptic json every other one gets
    ``isthing: 1`` (an instances json of things only stays plain COCO).
    """

    def kind(name: str) -> dict:
        if name in stuff:
            return {"isthing": 0}
        return {"isthing": 1} if panoptic else {}

    return {
        "info": {"description": "converted by d2seg (tools/convert_labelme.py)"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": name, "supercategory": "", **kind(name)}
            for i, name in enumerate(categories, start=1)
        ],
    }
