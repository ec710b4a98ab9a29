"""The files ``tools/predict.py`` writes for each image's predictions.

Each writer takes ``write(item, image_rgb, outputs)`` per image (``outputs`` the predictor's
dict at the image's size, ``image_rgb`` H×W×3 uint8 for display) and ``close()`` at the end:

- :class:`OverlayWriter`: ``overlays/<name>.png``, the Visualizer's picture;
- :class:`CocoResultsWriter`: ``predictions.json``, COCO results (+ ``file_name``,
  ``category_name``; RLE masks; polygons on request);
- :class:`SemSegWriter`: ``sem_seg/<name>.png`` uint8 class ids (+ probabilities ``.npy``);
- :class:`PanopticWriter`: ``panoptic/<name>.png`` (COCO panoptic RGB ids) + ``panoptic.json``;
- :class:`LabelmeWriter`: ``labelme/<name>.json``, Labelme 5.x pre-annotations.
"""

import abc
import base64
import io
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from d2seg.data.detection_utils import PANOPTIC_BACKGROUND_LABEL, PANOPTIC_FIRST_STUFF_LABEL
from d2seg.data.labelme import LabelmeShape, rasterize_shape
from d2seg.data.synthetic import LABELME_VERSION
from d2seg.engine.prediction_sources import PredictionInput
from d2seg.evaluation.coco_evaluation import instances_to_coco_results
from d2seg.modeling.postprocess import sem_seg_labels
from d2seg.utils.io import atomic_open, atomic_write_json
from d2seg.utils.visualizer import Visualizer

# Polygons must give a Labelme file's objects back at least this well, else a mask shape is
# written: tools/convert_labelme.py on the files then reproduces the predicted masks.
ROUND_TRIP_IOU = 0.97


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")


def draw_outputs(image_rgb: np.ndarray, outputs: dict[str, Any], metadata: Any) -> np.ndarray:
    """The overlay of one image's outputs (H×W×3 uint8 RGB): the panoptic map when there is
    one, else the semantic map, then the instances."""
    vis = Visualizer(image_rgb, metadata)
    if "panoptic_seg" in outputs:
        ids, segments = outputs["panoptic_seg"]
        return vis.draw_panoptic_seg(ids, segments).get_image()
    if "sem_seg" in outputs:
        vis.draw_sem_seg(outputs["sem_seg"])
    if "instances" in outputs:
        vis.draw_instance_predictions(outputs["instances"])
    return vis.output.get_image()


def semantic_labels(logits: torch.Tensor) -> np.ndarray:
    """H×W uint8 class ids of K×H×W logits: argmax, or for one sigmoid logit 1 where it is > 0
    (the binary model's foreground, ``stuff_classes[1]``) and 0 elsewhere."""
    return sem_seg_labels(logits.detach().float().cpu()).numpy().astype(np.uint8)


def semantic_probabilities(logits: torch.Tensor) -> np.ndarray:
    """K×H×W float16 class probabilities (softmax), or 1×H×W foreground probability (sigmoid)
    of a binary model."""
    logits = logits.detach().float().cpu()
    probs = torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, dim=0)
    return probs.numpy().astype(np.float16)


def mask_outlines(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a bool mask as flat ``[x0, y0, x1, y1, ...]`` pixel polygons (holes
    are not kept; contours with fewer than 3 points are dropped)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


class PredictionWriter(abc.ABC):
    """One output of ``tools/predict.py``: :meth:`write` per image, :meth:`close` at the end."""

    @abc.abstractmethod
    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        """Record one image's predictions (``outputs`` at the image's size)."""

    def close(self) -> None:
        """Finish the output; writers that write each image's file at once have nothing left."""

    def shard_state(self) -> Any:
        """What this process holds for the shared output file (None for per-image files);
        under torchrun the main process merges every rank's with :meth:`merge_shards`."""
        return None

    def merge_shards(self, states: list[Any]) -> None:
        """Take the :meth:`shard_state` of every rank, in rank order (this one's included)."""


class OverlayWriter(PredictionWriter):
    """``overlays/<name>.png``: the Visualizer's drawing of each image's predictions."""

    def __init__(self, output_dir: Path, metadata: Any):
        self.folder = output_dir / "overlays"
        self.metadata = metadata

    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        _save_png(self.folder / f"{item.name}.png", draw_outputs(image_rgb, outputs, self.metadata))


class CocoResultsWriter(PredictionWriter):
    """``predictions.json``: COCO results of every image's instances, each with
    ``image_id``, ``file_name`` (the input path), ``category_id`` (``category_ids[c]`` for
    contiguous class c), ``category_name``, ``score``, ``bbox`` XYWH and RLE ``segmentation``;
    with ``polygons`` also ``polygons`` (outer contours, :func:`mask_outlines`)."""

    def __init__(self, output_dir: Path, class_names: list[str], category_ids: list[int],
                 polygons: bool):
        self.path = output_dir / "predictions.json"
        self.class_names, self.category_ids = class_names, category_ids
        self.polygons = polygons
        self.results: list[dict] = []

    def image_results(self, item: PredictionInput, instances: dict) -> list[dict]:
        """The results of one image (also used per video frame)."""
        with_masks = "masks" in instances
        results = instances_to_coco_results(instances, item.image_id, self.category_ids,
                                            with_masks)
        classes = _numpy(instances["classes"]).tolist()
        masks = _numpy(instances["masks"]).astype(bool) if with_masks and self.polygons else None
        for k, (result, c) in enumerate(zip(results, classes)):
            result["file_name"] = str(item.path)
            result["category_name"] = self.class_names[c] if c < len(self.class_names) \
                else f"class {c}"
            if masks is not None:
                result["polygons"] = mask_outlines(masks[k])
        return results

    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        if "instances" in outputs:
            self.results.extend(self.image_results(item, outputs["instances"]))

    def close(self) -> None:
        atomic_write_json(self.path, self.results)

    def shard_state(self) -> list[dict]:
        return self.results

    def merge_shards(self, states: list[list[dict]]) -> None:
        self.results = [result for state in states for result in state]


class SemSegWriter(PredictionWriter):
    """``sem_seg/<name>.png``: uint8 class ids (:func:`semantic_labels`); with
    ``save_probs`` also ``sem_seg/<name>.npy`` (:func:`semantic_probabilities`)."""

    def __init__(self, output_dir: Path, save_probs: bool):
        self.folder = output_dir / "sem_seg"
        self.save_probs = save_probs

    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        if "sem_seg" not in outputs:
            return
        _save_png(self.folder / f"{item.name}.png", semantic_labels(outputs["sem_seg"]))
        if self.save_probs:
            with atomic_open(self.folder / f"{item.name}.npy", "wb") as f:
                np.save(f, semantic_probabilities(outputs["sem_seg"]))


class PanopticWriter(PredictionWriter):
    """COCO panoptic output: ``panoptic/<name>.png`` (segment id = R + 256·G + 256²·B, 0 =
    void) and ``panoptic.json`` ``{"annotations": [{"image_id", "file_name", "segments_info":
    [{"id", "category_id", "category_name", "isthing", "area", "bbox", "score"?}]}],
    "categories": [{"id", "name", "isthing"}]}``. Thing class c is category ``c + 1``; stuff
    semantic label L (1 = background, 2 + k = ``stuff_classes[k]``) is category
    ``len(thing_classes) + L``."""

    def __init__(self, output_dir: Path, thing_classes: list[str], stuff_classes: list[str]):
        self.folder = output_dir / "panoptic"
        self.path = output_dir / "panoptic.json"
        self.things, self.stuff = thing_classes, stuff_classes
        self.annotations: list[dict] = []
        self.used_stuff: set[int] = set()

    def _stuff_name(self, label: int) -> str:
        if label == PANOPTIC_BACKGROUND_LABEL:
            return "background"
        k = label - PANOPTIC_FIRST_STUFF_LABEL
        return self.stuff[k] if 0 <= k < len(self.stuff) else f"stuff {label}"

    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        if "panoptic_seg" not in outputs:
            return
        ids, segments = outputs["panoptic_seg"]
        ids = _numpy(ids).astype(np.int64)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=2).astype(np.uint8)
        _save_png(self.folder / f"{item.name}.png", rgb)
        info = []
        for segment in segments:
            ys, xs = np.nonzero(ids == segment["id"])
            if len(ys) == 0:
                continue
            label = int(segment["category_id"])
            if segment.get("isthing", True):
                category, name = label + 1, self.things[label] if label < len(self.things) \
                    else f"class {label}"
            else:
                category, name = len(self.things) + label, self._stuff_name(label)
                self.used_stuff.add(label)
            entry = {"id": int(segment["id"]), "category_id": category, "category_name": name,
                     "isthing": int(bool(segment.get("isthing", True))), "area": len(ys),
                     "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                              int(ys.max() - ys.min() + 1)]}
            if "score" in segment:
                entry["score"] = float(segment["score"])
            info.append(entry)
        self.annotations.append({"image_id": item.image_id, "file_name": f"{item.name}.png",
                                 "segments_info": info})

    def close(self) -> None:
        categories = [{"id": c + 1, "name": n, "isthing": 1} for c, n in enumerate(self.things)]
        categories += [{"id": len(self.things) + label, "name": self._stuff_name(label),
                        "isthing": 0} for label in sorted(self.used_stuff)]
        atomic_write_json(self.path, {"annotations": self.annotations, "categories": categories})

    def shard_state(self) -> tuple[list[dict], set[int]]:
        return self.annotations, self.used_stuff

    def merge_shards(self, states: list[tuple[list[dict], set[int]]]) -> None:
        self.annotations = [a for annotations, _ in states for a in annotations]
        self.used_stuff = set().union(*(used for _, used in states))


class LabelmeWriter(PredictionWriter):
    """``labelme/<name>.json``: a Labelme 5.x file per image to correct in Labelme.

    Every predicted instance (or every connected region of a semantic class other than
    background) becomes ``polygon`` shapes labelled with its class name, one per outer contour,
    sharing a ``group_id`` when there are several; an object those polygons would not give
    back (a hole, a thin or tiny object: mask IoU below :data:`ROUND_TRIP_IOU` when Labelme
    rasterises them) becomes one ``mask`` shape, which is exact. ``description`` holds the score.
    ``imagePath`` is the image relative to the JSON file; ``imageData`` is embedded only with
    ``embed`` (the image's file bytes).
    """

    def __init__(self, output_dir: Path, thing_classes: list[str], stuff_classes: list[str],
                 embed: bool):
        self.folder = output_dir / "labelme"
        self.things, self.stuff = thing_classes, stuff_classes
        self.embed = embed

    @staticmethod
    def _reproduces(outlines: list[list[float]], mask: np.ndarray) -> bool:
        """Whether polygons rasterised as Labelme (and the converter) do give ``mask`` back
        with IoU ≥ :data:`ROUND_TRIP_IOU`."""
        if not outlines:
            return False
        drawn = np.zeros_like(mask)
        for points in outlines:
            shape = LabelmeShape(0, "", "polygon", np.reshape(points, (-1, 2)), None)
            drawn |= rasterize_shape(shape, *mask.shape)
        return (mask & drawn).sum() >= ROUND_TRIP_IOU * (mask | drawn).sum()

    @staticmethod
    def _mask_shape(label: str, mask: np.ndarray, description: str) -> dict:
        ys, xs = np.nonzero(mask)
        crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        buffer = io.BytesIO()
        Image.fromarray(crop.astype(np.uint8) * 255).save(buffer, format="PNG")
        return {"label": label, "points": [[float(xs.min()), float(ys.min())],
                                           [float(xs.max()), float(ys.max())]],
                "group_id": None, "description": description, "shape_type": "mask",
                "flags": {}, "mask": base64.b64encode(buffer.getvalue()).decode("ascii")}

    def _object_shapes(self, label: str, mask: np.ndarray, description: str,
                       group_id: int) -> list[dict]:
        if not mask.any():
            return []
        outlines = mask_outlines(mask)
        if not self._reproduces(outlines, mask):  # holes, thin or tiny objects
            return [self._mask_shape(label, mask, description)]
        return [{"label": label, "points": np.reshape(p, (-1, 2)).tolist(),
                 "group_id": group_id if len(outlines) > 1 else None,
                 "description": description, "shape_type": "polygon", "flags": {}}
                for p in outlines]

    def _objects(self, outputs: dict) -> list[tuple[str, np.ndarray, str]]:
        """(label, H×W bool mask, description) of every object to write."""
        if "instances" in outputs and "masks" in outputs["instances"]:
            instances = outputs["instances"]
            masks = _numpy(instances["masks"]).astype(bool)
            return [(self.things[c] if c < len(self.things) else f"class {c}", masks[k],
                     f"score {s:.3f}")
                    for k, (c, s) in enumerate(zip(_numpy(instances["classes"]).tolist(),
                                                   _numpy(instances["scores"]).tolist()))]
        if "sem_seg" not in outputs:
            return []
        labels = semantic_labels(outputs["sem_seg"])
        objects = []
        for label in np.unique(labels).tolist():
            name = self.stuff[label] if label < len(self.stuff) else f"class {label}"
            if name.lower() in ("background", "_background_"):
                continue
            count, components = cv2.connectedComponents((labels == label).astype(np.uint8))
            objects += [(name, components == k, "") for k in range(1, count)]
        return objects

    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        json_path = self.folder / f"{item.name}.json"
        shapes = []
        for group_id, (label, mask, description) in enumerate(self._objects(outputs), start=1):
            shapes += self._object_shapes(label, mask, description, group_id)
        image_data = base64.b64encode(item.path.read_bytes()).decode("ascii") \
            if self.embed else None
        height, width = image_rgb.shape[:2]
        atomic_write_json(json_path, {
            "version": LABELME_VERSION, "flags": {}, "shapes": shapes,
            "imagePath": Path(os.path.relpath(item.path.resolve(), json_path.parent.resolve()))
            .as_posix(),
            "imageData": image_data, "imageHeight": height, "imageWidth": width,
        }, indent=2)
