"""Model outputs → the input's resolution, and panoptic fusion (Detectron2's rules).

* :func:`detector_postprocess`: torchvision-style detections on the (resized, padded) image
  tensor → d2seg instances at the original ``height``×``width``: boxes scaled, masks pasted into
  the image (:func:`paste_masks`) and thresholded, labels made 0-based.
* :func:`sem_seg_postprocess`: per-pixel logits of one padded image → the input's
  ``height``×``width`` (the one place every semantic head's output is resized, as Detectron2).
* :func:`sem_seg_labels`: those logits → class ids (argmax; ``logit > 0`` for a binary model).
* :func:`combine_semantic_and_instance_outputs`: Detectron2's PanopticFPN fusion. Semantic
  class 0 is "things" (every pixel of any thing class); classes 1..K are stuff and keep their
  semantic index as ``category_id``.
"""

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from d2seg.utils.cropped_masks import CroppedMasks


def paste_masks(
    masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float | None = None,
    cropped: bool = False,
) -> Tensor | CroppedMasks:
    """Paste box-relative masks R×M×M (probabilities) into R×height×width images.

    Pixel (x, y) of the image gets the mask's bilinear value at its centre (x + 0.5, y + 0.5)
    mapped into the box (XYXY, continuous pixel coordinates); pixels whose centre is outside
    the box are 0. (torchvision's ``paste_masks_in_image`` keeps the legacy "+1" box convention,
    which grows every mask by about one pixel per side.) With ``threshold`` the result is bool,
    value ≥ threshold, thresholded box by box: no R×height×width float buffer is filled.
    With ``cropped`` (and a ``threshold``) each mask is kept as the crop of its box
    (:class:`CroppedMasks`): not even an R×height×width bool buffer.
    """
    if cropped and threshold is None:
        raise ValueError("paste_masks(cropped=True) keeps bool crops: give a threshold")
    dtype = masks.dtype if threshold is None else torch.bool
    pasted = None if cropped else torch.zeros(len(masks), height, width, dtype=dtype,
                                              device=masks.device)
    crops, origins = [], []
    for k, (mask, box) in enumerate(zip(masks, boxes.tolist())):
        x0, y0 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
        x1, y1 = min(math.ceil(box[2]), width), min(math.ceil(box[3]), height)
        if x1 <= x0 or y1 <= y0:
            if cropped:
                crops.append(np.zeros((0, 0), bool))
                origins.append((0, 0))
            continue
        xs = torch.arange(x0, x1, device=masks.device, dtype=masks.dtype) + 0.5
        ys = torch.arange(y0, y1, device=masks.device, dtype=masks.dtype) + 0.5
        xs = (xs - box[0]) / (box[2] - box[0]) * 2 - 1
        ys = (ys - box[1]) / (box[3] - box[1]) * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        values = F.grid_sample(mask[None, None], grid[None], align_corners=False)[0, 0]
        values = values if threshold is None else values >= threshold
        if cropped:
            crops.append(values.cpu().numpy())
            origins.append((y0, x0))
        else:
            pasted[k, y0:y1, x0:x1] = values
    return CroppedMasks(crops, origins, (height, width)) if cropped else pasted


def detector_postprocess(
    result: dict[str, Tensor],
    image_size: tuple[int, int],
    output_height: int,
    output_width: int,
    mask_threshold: float = 0.5,
    cropped_masks: bool = False,
) -> dict[str, Tensor]:
    """Detections on an image of ``image_size`` (h, w pixels, padding excluded) → instances.

    ``result``: ``{"boxes": R×4 XYXY, "scores": R, "labels": R (1..K), "masks"?: R×1×M×M
    probabilities in box coordinates}``. Returns ``{"boxes": R×4 XYXY in output pixels, clipped,
    "scores": R, "classes": R long (0..K-1), "masks"?: R×output_height×output_width bool}``
    (with ``cropped_masks`` the masks as :class:`CroppedMasks` of their boxes).
    """
    scale = result["boxes"].new_tensor(
        [output_width / image_size[1], output_height / image_size[0]] * 2
    )
    boxes = result["boxes"] * scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, output_width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, output_height)
    instances = {"boxes": boxes, "scores": result["scores"], "classes": result["labels"] - 1}
    if "masks" in result:
        instances["masks"] = paste_masks(
            result["masks"][:, 0], boxes, output_height, output_width, threshold=mask_threshold,
            cropped=cropped_masks,
        )
    return instances


def sem_seg_postprocess(
    result: Tensor, image_size: tuple[int, int], height: int, width: int
) -> Tensor:
    """Crop the padding off a per-image prediction and resize it to the input's height/width.

    Args:
        result: K×H'×W' scores (logits) of one padded image.
        image_size: (height, width) of the image inside the padded batch.
        height, width: the size to return, usually the original image's (``"height"`` and
            ``"width"`` of the model input), which may differ from ``image_size`` when the
            mapper resized the image.
    Returns:
        K×height×width, bilinearly resampled (``align_corners=False``).
    """
    cropped = result[:, : image_size[0], : image_size[1]]
    if tuple(cropped.shape[1:]) == (height, width):
        return cropped
    return F.interpolate(
        cropped[None], size=(height, width), mode="bilinear", align_corners=False
    )[0]


def sem_seg_labels(logits: Tensor) -> Tensor:
    """K×H×W semantic logits → H×W long class ids: the argmax over K, or for one sigmoid logit
    (a binary model) 1 where it is > 0 and 0 elsewhere."""
    return (logits[0] > 0).long() if logits.shape[0] == 1 else logits.argmax(dim=0)


def _mask_region(masks: Any, index: int, device: torch.device) -> tuple[Tensor, int, int]:
    """Instance ``index``'s mask (h×w bool on ``device``) and its top-left pixel (y0, x0): the
    whole H×W mask at (0, 0) for a dense tensor, the crop for :class:`CroppedMasks`."""
    if isinstance(masks, CroppedMasks):
        (y0, x0), crop = masks.origins[index], masks.crops[index]
        return torch.from_numpy(crop).to(device), y0, x0
    return masks[index].bool(), 0, 0


def combine_semantic_and_instance_outputs(
    instances: dict[str, Tensor],
    semantic: Tensor,
    *,
    overlap_threshold: float,
    stuff_area_thresh: int,
    instances_score_thresh: float,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Fuse instances and a semantic label map into a panoptic map (Detectron2's algorithm).

    Instances, by decreasing score, until one scores below ``instances_score_thresh``: a mask
    whose pixels are already taken by more than ``overlap_threshold`` of its area is dropped,
    otherwise it takes its free pixels. Then each stuff class (semantic label ≥ 1) takes its
    free pixels if there are at least ``stuff_area_thresh`` of them. Unclaimed pixels are 0.

    Args:
        instances: ``{"scores": R, "classes": R, "masks": R×H×W bool}`` at the output size
            (or the masks as :class:`~d2seg.utils.cropped_masks.CroppedMasks`).
        semantic: H×W long, argmax of the semantic logits (0 = things).

    Returns:
        (H×W int32 segment ids, 0 = void; ``segments_info``: one dict per segment, ``{"id",
        "isthing": True, "category_id", "score", "instance_id"}`` for things, ``{"id",
        "isthing": False, "category_id", "area"}`` for stuff).
    """
    panoptic = torch.zeros_like(semantic, dtype=torch.int32)
    segments: list[dict[str, Any]] = []
    for index in torch.argsort(instances["scores"], descending=True).tolist():
        score = float(instances["scores"][index])
        if score < instances_score_thresh:
            break
        mask, y0, x0 = _mask_region(instances["masks"], index, panoptic.device)
        area = int(mask.sum())
        if area == 0:
            continue
        # The part of the panoptic map under the mask (a view: written in place).
        region = panoptic[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        taken = int((mask & (region > 0)).sum())
        if taken / area > overlap_threshold:
            continue
        segment_id = len(segments) + 1
        region[mask & (region == 0)] = segment_id
        segments.append(
            {
                "id": segment_id,
                "isthing": True,
                "category_id": int(instances["classes"][index]),
                "score": score,
                "instance_id": index,
            }
        )
    for label in torch.unique(semantic).tolist():
        if label == 0:
            continue
        mask = (semantic == label) & (panoptic == 0)
        area = int(mask.sum())
        if area < stuff_area_thresh:
            continue
        segment_id = len(segments) + 1
        panoptic[mask] = segment_id
        segments.append({"id": segment_id, "isthing": False, "category_id": label, "area": area})
    return panoptic, segments
