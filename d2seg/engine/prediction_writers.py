"""The files ``tools/predict.py`` writes for each image's predictions.

Each writer takes ``write(item, image_rgb, outputs)`` per image (``outputs`` the predictor's
dict at the image's size, ``image_rgb`` H×W×3 uint8 for display) and ``close()`` at the end:

- :class:`OverlayWriter`: ``overlays/<name>.png``, the Visualizer's picture;
- :class:`CocoResultsWriter`: ``predictions.json``, COCO results (+ ``file_name``,
  ``category_name``; RLE masks; polygons on request);
- :class:`SemSegWriter`: ``sem_seg/<name>.png`` uint8 class ids (+ probabilities ``.npy``);
- :class:`PanopticWriter`: ``panoptic/<name>.png`` (COCO panoptic RGB ids) + ``panoptic.json``;
- :class:`LabelmeWriter`: ``labelme/<name>.json``, Labelme 5.x pre-annotations.

The records in those files come from :mod:`d2seg.engine.prediction_records`, which
``tools/serve.py`` returns over HTTP too.
"""

import abc
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from d2seg.engine.prediction_records import (
    as_numpy,
    instance_records,
    labelme_document,
    labelme_shapes,
    mask_outlines,
    panoptic_segments,
    semantic_labels,
    stuff_name,
)
from d2seg.engine.prediction_sources import PredictionInput
from d2seg.utils.io import atomic_open, atomic_write_json
from d2seg.utils.visualizer import Visualizer

__all__ = [
    "CocoResultsWriter", "LabelmeWriter", "OverlayWriter", "PanopticWriter", "PredictionWriter",
    "SemSegWriter", "draw_outputs", "mask_outlines", "semantic_labels", "semantic_probabilities",
]


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


def semantic_probabilities(logits: torch.Tensor) -> np.ndarray:
    """K×H×W float16 class probabilities (softmax), or 1×H×W foreground probability (sigmoid)
    of a binary model."""
    logits = logits.detach().float().cpu()
    probs = torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, dim=0)
    return probs.numpy().astype(np.float16)


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
    """``predictions.json``: COCO results of every image's instances
    (:func:`~d2seg.engine.prediction_records.instance_records`) with ``file_name``, the input
    path."""

    def __init__(self, output_dir: Path, class_names: list[str], category_ids: list[int],
                 polygons: bool):
        self.path = output_dir / "predictions.json"
        self.class_names, self.category_ids = class_names, category_ids
        self.polygons = polygons
        self.results: list[dict] = []

    def image_results(self, item: PredictionInput, instances: dict) -> list[dict]:
        """The results of one image (also used per video frame)."""
        results = instance_records(instances, item.image_id, self.class_names,
                                   self.category_ids, self.polygons)
        return [{**r, "file_name": str(item.path)} for r in results]

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
    void) and ``panoptic.json`` ``{"annotations": [{"image_id", "file_name", "segments_info"}],
    "categories": [{"id", "name", "isthing"}]}`` (segments as
    :func:`~d2seg.engine.prediction_records.panoptic_segments` numbers them)."""

    def __init__(self, output_dir: Path, thing_classes: list[str], stuff_classes: list[str]):
        self.folder = output_dir / "panoptic"
        self.path = output_dir / "panoptic.json"
        self.things, self.stuff = thing_classes, stuff_classes
        self.annotations: list[dict] = []
        self.used_stuff: set[int] = set()

    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        if "panoptic_seg" not in outputs:
            return
        ids, segments = outputs["panoptic_seg"]
        ids = as_numpy(ids).astype(np.int64)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=2).astype(np.uint8)
        _save_png(self.folder / f"{item.name}.png", rgb)
        info = panoptic_segments(ids, segments, self.things, self.stuff)
        self.used_stuff |= {s["category_id"] - len(self.things) for s in info if not s["isthing"]}
        self.annotations.append({"image_id": item.image_id, "file_name": f"{item.name}.png",
                                 "segments_info": info})

    def close(self) -> None:
        categories = [{"id": c + 1, "name": n, "isthing": 1} for c, n in enumerate(self.things)]
        categories += [{"id": len(self.things) + label, "name": stuff_name(label, self.stuff),
                        "isthing": 0} for label in sorted(self.used_stuff)]
        atomic_write_json(self.path, {"annotations": self.annotations, "categories": categories})

    def shard_state(self) -> tuple[list[dict], set[int]]:
        return self.annotations, self.used_stuff

    def merge_shards(self, states: list[tuple[list[dict], set[int]]]) -> None:
        self.annotations = [a for annotations, _ in states for a in annotations]
        self.used_stuff = set().union(*(used for _, used in states))


class LabelmeWriter(PredictionWriter):
    """``labelme/<name>.json``: a Labelme 5.x file per image to correct in Labelme, its shapes
    from :func:`~d2seg.engine.prediction_records.labelme_shapes`. ``imagePath`` is the image
    relative to the JSON file; ``imageData`` is embedded only with ``embed`` (the image's file
    bytes).
    """

    def __init__(self, output_dir: Path, thing_classes: list[str], stuff_classes: list[str],
                 embed: bool):
        self.folder = output_dir / "labelme"
        self.things, self.stuff = thing_classes, stuff_classes
        self.embed = embed

    def write(self, item: PredictionInput, image_rgb: np.ndarray, outputs: dict) -> None:
        json_path = self.folder / f"{item.name}.json"
        image_path = Path(os.path.relpath(item.path.resolve(), json_path.parent.resolve()))
        height, width = image_rgb.shape[:2]
        atomic_write_json(json_path, labelme_document(
            labelme_shapes(outputs, self.things, self.stuff), image_path.as_posix(),
            item.path.read_bytes() if self.embed else None, height, width), indent=2)
