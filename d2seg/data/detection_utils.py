"""Turning dataset-dict annotations into training targets (instances, semantic labels).

The files themselves (images, label PNGs, panoptic PNGs) are read by :mod:`d2seg.data.io`.
"""

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_util

from d2seg.data.coco import BoxMode
from d2seg.errors import DatasetError


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Check the dict's ``height``/``width`` against the loaded H×W×C ``image``."""
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    got = image.shape[:2]
    if None in expected or tuple(expected) == got:
        return
    hint = " (the image has an EXIF rotation)" if tuple(expected) == got[::-1] else ""
    raise DatasetError(
        f"image {dataset_dict.get('file_name')} is {got[0]}×{got[1]} (H×W) but the dataset says "
        f"{expected[0]}×{expected[1]}{hint}; fix: correct height/width in the annotation file, or "
        f"reconvert it with tools/convert_labelme.py (it measures images after EXIF rotation)"
    )


def segmentation_to_mask(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """One annotation's ``segmentation`` → uint8 H×W mask (1 inside).

    Accepts COCO polygons ``[[x1, y1, ...], ...]``, an RLE ``{"size": [h, w], "counts"}`` with
    compressed (str/bytes) or uncompressed (list) counts, or an H×W array.
    """
    if isinstance(segmentation, np.ndarray):
        mask = segmentation
    elif isinstance(segmentation, list):
        mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(segmentation, height, width)))
    elif isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_util.frPyObjects(rle, *rle["size"])
        mask = mask_util.decode(rle)
    else:
        raise DatasetError(
            f"{where}: segmentation is a {type(segmentation).__name__}; fix: use polygons "
            f"[[x1, y1, ...]] or an RLE {{'size': [h, w], 'counts': ...}}"
        )
    if mask.shape != (height, width):
        raise DatasetError(
            f"{where}: segmentation is {mask.shape[0]}×{mask.shape[1]} (H×W) but its image is "
            f"{height}×{width}; fix: encode the mask at the image's size"
        )
    return mask.astype(np.uint8)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight float32 N×4 XYXY boxes of N×H×W masks, in pixels (x1 = last column + 1, as COCO's
    mask-derived ``bbox``); an empty mask gives a zero box."""
    boxes = torch.zeros((len(masks), 4), dtype=torch.float32)
    if not len(masks):
        return boxes
    masks = masks.bool()
    for axis, (lo, hi) in ((1, (0, 2)), (2, (1, 3))):  # columns → x, rows → y
        occupied = masks.any(dim=axis)
        first = occupied.int().argmax(dim=1)
        last = occupied.shape[1] - occupied.flip(1).int().argmax(dim=1)
        boxes[:, lo], boxes[:, hi] = first.float(), last.float()
    boxes[~masks.flatten(1).any(dim=1)] = 0
    return boxes


def _xyxy(annotation: dict, where: str) -> list[float]:
    x0, y0, a, b = annotation["bbox"]
    mode = annotation.get("bbox_mode", BoxMode.XYWH_ABS)
    if mode == BoxMode.XYXY_ABS:
        return [x0, y0, a, b]
    if mode == BoxMode.XYWH_ABS:
        return [x0, y0, x0 + a, y0 + b]
    raise DatasetError(
        f"{where}: bbox_mode {mode!r} is not supported; fix: use BoxMode.XYXY_ABS (0) or "
        f"BoxMode.XYWH_ABS (1)"
    )


def annotations_to_instances(
    annotations: list[dict], height: int, width: int, file_name: str = "image"
) -> dict[str, torch.Tensor]:
    """Dataset-dict annotations of one H×W image → instance targets at that size.

    Crowd annotations (``iscrowd`` 1) are dropped, as in Detectron2's training targets.
    Returns ``{"boxes": float32 N×4 XYXY pixels clipped to the image, "classes": int64 N,
    "masks": uint8 N×H×W}``; ``masks`` only when every kept annotation has a ``segmentation``.
    """
    kept = [(f"{file_name}: annotation {i}", a) for i, a in enumerate(annotations)]
    kept = [(where, a) for where, a in kept if not a.get("iscrowd", 0)]
    boxes = torch.tensor([_xyxy(a, where) for where, a in kept], dtype=torch.float32)
    limits = torch.tensor([width, height, width, height], dtype=torch.float32)
    instances = {
        "boxes": boxes.reshape(-1, 4).clamp(min=torch.zeros(4), max=limits),
        "classes": torch.tensor([a["category_id"] for _, a in kept], dtype=torch.int64),
    }
    if all("segmentation" in a for _, a in kept):
        masks = [segmentation_to_mask(a["segmentation"], height, width, w) for w, a in kept]
        instances["masks"] = torch.from_numpy(
            np.stack(masks) if masks else np.zeros((0, height, width), dtype=np.uint8)
        )
    return instances


# PanopticFPN's semantic labels, as PanopticUNet's U-Net head predicts them (see
# d2seg/modeling/meta_arch/panoptic.py): 0 = any thing, 1 = "background" (pixels no segment covers:
# void in the panoptic PNG), 2 + k = stuff category k (contiguous stuff id).
PANOPTIC_THINGS_LABEL = 0
PANOPTIC_BACKGROUND_LABEL = 1
PANOPTIC_FIRST_STUFF_LABEL = 2


def panoptic_to_targets(
    segment_ids: np.ndarray, segments_info: list[dict]
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """A panoptic H×W segment-id map → (thing instances, PanopticFPN semantic labels).

    ``segments_info`` category ids are contiguous within things (0..T-1) and within stuff
    (0..S-1), told apart by ``isthing``, as :func:`~d2seg.data.datasets.load_coco_panoptic_json`
    writes them (names: metadata ``thing_classes[t]``, ``stuff_classes[k]``). The uint8 H×W
    semantic map holds :data:`PANOPTIC_THINGS_LABEL` (0) on every thing segment (crowd included),
    :data:`PANOPTIC_BACKGROUND_LABEL` (1) where no segment is (id 0: the converter's background)
    and ``PANOPTIC_FIRST_STUFF_LABEL + k`` (2 + k) on stuff category k, so a model needs
    ``SEM_SEG_HEAD.NUM_CLASSES = 2 + S``. Non-crowd thing segments become instances
    ``{"boxes": float32 N×4 XYXY (tight around the mask), "classes": int64 N (0..T-1),
    "masks": uint8 N×H×W}``.
    """
    sem_seg = np.full(segment_ids.shape, PANOPTIC_BACKGROUND_LABEL, dtype=np.uint8)
    masks, classes = [], []
    for segment in segments_info:
        mask = segment_ids == segment["id"]
        if segment.get("isthing", True):
            sem_seg[mask] = PANOPTIC_THINGS_LABEL
            if not segment.get("iscrowd", 0):
                masks.append(mask)
                classes.append(segment["category_id"])
        else:
            sem_seg[mask] = PANOPTIC_FIRST_STUFF_LABEL + segment["category_id"]
    masks_tensor = torch.from_numpy(
        np.stack(masks).astype(np.uint8) if masks else np.zeros((0, *segment_ids.shape), np.uint8)
    )
    instances = {
        "boxes": boxes_from_masks(masks_tensor),
        "classes": torch.tensor(classes, dtype=torch.int64),
        "masks": masks_tensor,
    }
    return instances, sem_seg
