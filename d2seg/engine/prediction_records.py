"""The records of one image's predictions, as ``tools/predict.py`` writes them to files and
``tools/serve.py`` returns them over HTTP.

Every function takes the predictor's outputs at the image's size (torch tensors or numpy
arrays) and returns plain JSON-ready data:

- :func:`instance_records`: COCO results (``category_id``, ``category_name``, ``bbox`` XYWH,
  ``score``, RLE ``segmentation``, ``polygons`` on request);
- :func:`semantic_record`: the classes present with their area and RLE mask;
- :func:`panoptic_segments`: COCO panoptic ``segments_info`` with names, areas and boxes;
- :func:`labelme_shapes` / :func:`labelme_document`: a Labelme 5.x file of the objects.
"""

import base64
import io
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.detection_utils import PANOPTIC_BACKGROUND_LABEL, PANOPTIC_FIRST_STUFF_LABEL
from d2seg.data.labelme import LabelmeShape, rasterize_shape
from d2seg.data.synthetic import LABELME_VERSION
from d2seg.evaluation.coco_evaluation import instances_to_coco_results
from d2seg.modeling.postprocess import sem_seg_labels
from d2seg.utils.cropped_masks import CroppedMasks
from d2seg.utils.polygons import outer_polygons

# Polygons must give a Labelme file's objects back at least this well, else a mask shape is
# written: tools/convert_labelme.py on the files then reproduces the predicted masks.
ROUND_TRIP_IOU = 0.97
_BACKGROUND_NAMES = ("background", "_background_")


def as_numpy(value: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def class_name(names: list[str], index: int) -> str:
    """``names[index]``, or ``"class <index>"`` for a class the metadata does not name."""
    return names[index] if 0 <= index < len(names) else f"class {index}"


def semantic_labels(logits: torch.Tensor) -> np.ndarray:
    """H×W uint8 class ids of K×H×W logits: argmax, or for one sigmoid logit 1 where it is > 0
    (the binary model's foreground, ``stuff_classes[1]``) and 0 elsewhere."""
    return sem_seg_labels(logits.detach().float().cpu()).numpy().astype(np.uint8)


def mask_outlines(mask: np.ndarray, y0: int = 0, x0: int = 0) -> list[list[float]]:
    """Outer contours of a bool mask as flat ``[x0, y0, x1, y1, ...]`` pixel polygons that
    pycocotools and Labelme fill back to the mask (holes are not kept, see
    :func:`d2seg.utils.polygons.outer_polygons`). ``mask`` may be a crop whose top-left pixel is
    (``y0``, ``x0``) of the image: the polygons are in image pixels, the same as those of the
    pasted mask."""
    return outer_polygons(mask, y0, x0)[0]


def mask_rle(mask: np.ndarray) -> dict:
    """An H×W bool mask as COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def instance_records(instances: dict, image_id: int, class_names: list[str],
                     category_ids: list[int], polygons: bool) -> list[dict]:
    """COCO results of one image's instances: ``image_id``, ``category_id``
    (``category_ids[c]`` for contiguous class c), ``bbox`` XYWH pixels, ``score``, RLE
    ``segmentation`` (when the model predicts masks), ``category_name``; with ``polygons``
    also ``polygons`` (outer contours, :func:`mask_outlines`)."""
    with_masks = "masks" in instances
    results = instances_to_coco_results(instances, image_id, category_ids, with_masks)
    for result, c in zip(results, as_numpy(instances["classes"]).tolist()):
        result["category_name"] = class_name(class_names, c)
    if with_masks and polygons:
        for result, crop in zip(results, CroppedMasks.of(instances["masks"]).items()):
            result["polygons"] = mask_outlines(*crop)
    return results


def semantic_record(logits: torch.Tensor, stuff_classes: list[str]) -> dict:
    """The semantic map of K×H×W logits (:func:`semantic_labels`) as ``{"classes": [{"id",
    "name", "area" (pixels), "segmentation" (COCO RLE)}]}``, one entry per class present, by id;
    the areas add up to H·W."""
    labels = semantic_labels(logits)
    values, counts = np.unique(labels, return_counts=True)
    return {"classes": [{"id": v, "name": class_name(stuff_classes, v), "area": n,
                         "segmentation": mask_rle(labels == v)}
                        for v, n in zip(values.tolist(), counts.tolist())]}


def stuff_name(label: int, stuff_classes: list[str]) -> str:
    """The name of PanopticUNet's stuff semantic label (1 = background, 2 + k =
    ``stuff_classes[k]``)."""
    if label == PANOPTIC_BACKGROUND_LABEL:
        return "background"
    k = label - PANOPTIC_FIRST_STUFF_LABEL
    return stuff_classes[k] if 0 <= k < len(stuff_classes) else f"stuff {label}"


def panoptic_segments(ids: Any, segments: list[dict], thing_classes: list[str],
                      stuff_classes: list[str], with_masks: bool = False) -> list[dict]:
    """COCO panoptic ``segments_info`` of one H×W map of segment ids: ``{"id", "category_id",
    "category_name", "isthing", "area", "bbox" XYWH, "score"?}`` per non-empty segment; with
    ``with_masks`` also its RLE ``segmentation``. Thing class c is category ``c + 1``; stuff
    label L is category ``len(thing_classes) + L``."""
    ids = as_numpy(ids).astype(np.int64)
    info = []
    for segment in segments:
        mask = ids == segment["id"]
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        label = int(segment["category_id"])
        isthing = bool(segment.get("isthing", True))
        if isthing:
            category, name = label + 1, class_name(thing_classes, label)
        else:
            category, name = len(thing_classes) + label, stuff_name(label, stuff_classes)
        entry = {"id": int(segment["id"]), "category_id": category, "category_name": name,
                 "isthing": int(isthing), "area": len(ys),
                 "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                          int(ys.max() - ys.min() + 1)]}
        if "score" in segment:
            entry["score"] = float(segment["score"])
        if with_masks:
            entry["segmentation"] = mask_rle(mask)
        info.append(entry)
    return info


def _reproduces(outlines: list[list[float]], crop: np.ndarray, y0: int, x0: int) -> bool:
    """Whether polygons (image pixels) rasterised as Labelme (and the converter) do give the
    mask back with IoU ≥ :data:`ROUND_TRIP_IOU`; the mask is ``crop`` at (``y0``, ``x0``), and
    the polygons are drawn in its frame, one pixel wider on each side (they lie inside the
    mask's pixels, so nothing outside it is drawn)."""
    mask = np.pad(crop, 1)
    drawn = np.zeros_like(mask)
    for points in outlines:
        local = np.reshape(points, (-1, 2)) - [x0 - 1, y0 - 1]
        drawn |= rasterize_shape(LabelmeShape(0, "", "polygon", local, None), *mask.shape)
    return (mask & drawn).sum() >= ROUND_TRIP_IOU * (mask | drawn).sum()


def _mask_shape(label: str, crop: np.ndarray, y0: int, x0: int, description: str) -> dict:
    ys, xs = np.nonzero(crop)
    crop = crop[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    ys, xs = ys + y0, xs + x0
    buffer = io.BytesIO()
    Image.fromarray(crop.astype(np.uint8) * 255).save(buffer, format="PNG")
    return {"label": label, "points": [[float(xs.min()), float(ys.min())],
                                       [float(xs.max()), float(ys.max())]],
            "group_id": None, "description": description, "shape_type": "mask",
            "flags": {}, "mask": base64.b64encode(buffer.getvalue()).decode("ascii")}


def _object_shapes(label: str, crop: np.ndarray, y0: int, x0: int, description: str,
                   group_id: int) -> list[dict]:
    """The Labelme shapes of one object: its mask ``crop`` with top-left pixel (y0, x0)."""
    if not crop.any():
        return []
    outlines, has_hole = outer_polygons(crop, y0, x0)
    # Outer polygons fill a mask without holes exactly (tests/utils/test_polygons.py): only a
    # mask with holes needs the round trip drawn to see whether polygons are close enough.
    if has_hole and not _reproduces(outlines, crop, y0, x0):
        return [_mask_shape(label, crop, y0, x0, description)]
    return [{"label": label, "points": np.reshape(p, (-1, 2)).tolist(),
             "group_id": group_id if len(outlines) > 1 else None,
             "description": description, "shape_type": "polygon", "flags": {}}
            for p in outlines]


def _labelme_objects(outputs: dict, thing_classes: list[str], stuff_classes: list[str]
                     ) -> list[tuple[str, tuple[np.ndarray, int, int], str]]:
    """(label, (mask crop, y0, x0), description) of every object to write."""
    if "instances" in outputs and "masks" in outputs["instances"]:
        instances = outputs["instances"]
        return [(class_name(thing_classes, c), crop, f"score {s:.3f}")
                for crop, c, s in zip(CroppedMasks.of(instances["masks"]).items(),
                                      as_numpy(instances["classes"]).tolist(),
                                      as_numpy(instances["scores"]).tolist())]
    if "sem_seg" not in outputs:
        return []
    labels = semantic_labels(outputs["sem_seg"])
    objects = []
    for label in np.unique(labels).tolist():
        name = class_name(stuff_classes, label)
        if name.lower() in _BACKGROUND_NAMES:
            continue
        count, components, boxes, _ = cv2.connectedComponentsWithStats(
            (labels == label).astype(np.uint8))
        objects += [(name, (components[y:y + h, x:x + w] == k, int(y), int(x)), "")
                    for k, (x, y, w, h) in enumerate(boxes[1:, :4].tolist(), start=1)]
    return objects


def labelme_shapes(outputs: dict, thing_classes: list[str], stuff_classes: list[str]) -> list[dict]:
    """Labelme shapes of one image's predictions.

    Every predicted instance (or every connected region of a semantic class other than
    background) becomes ``polygon`` shapes labelled with its class name, one per outer contour,
    sharing a ``group_id`` when there are several; an object those polygons would not give
    back (a hole, a thin or tiny object: mask IoU below :data:`ROUND_TRIP_IOU` when Labelme
    rasterises them) becomes one ``mask`` shape, which is exact. ``description`` holds the
    score.
    """
    shapes = []
    objects = _labelme_objects(outputs, thing_classes, stuff_classes)
    for group_id, (label, crop, description) in enumerate(objects, start=1):
        shapes += _object_shapes(label, *crop, description, group_id)
    return shapes


def labelme_document(shapes: list[dict], image_path: str, image_data: bytes | None,
                     height: int, width: int) -> dict:
    """A Labelme 5.x file: ``shapes``, ``imagePath`` (relative to the file), the image's bytes
    embedded as ``imageData`` when given, and its size in pixels."""
    return {
        "version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path,
        "imageData": None if image_data is None else base64.b64encode(image_data).decode("ascii"),
        "imageHeight": height, "imageWidth": width,
    }
