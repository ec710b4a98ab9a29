"""Tiled (sliced) inference for images much larger than a model's test size.

The image is cut into overlapping square tiles (:func:`~d2seg.engine.tile_layout.tile_windows`);
each tile goes through the :class:`~d2seg.engine.predictor.DefaultPredictor` (its own test-time
resize included), and the tile outputs are put back together at the image's size. For R-CNN
models the default ``mode="features"`` computes the backbone once for the whole image (in
blocks for huge ones) and runs only the detection heads per tile window
(:mod:`d2seg.engine.feature_tiling`); ``mode="images"`` runs the whole model on each tile, as
SAHI does.

- ``sem_seg``: the tiles' logits are averaged with a smooth weight window (a raised cosine,
  highest at a tile's centre), so a pixel near one tile's border mostly takes the logits of the
  tile it is central in: no seams.
- ``instances``: every tile's detections are shifted to image coordinates and merged across
  tiles, as SAHI's postprocessing does: ``"nmm"`` (greedy non-maximum *merging*, SAHI's
  GREEDYNMM) unites the parts of one object cut by a tile border into one detection (union
  mask and box, the highest score) when their mask intersection over the smaller part (IoS)
  reaches ``match_threshold``; ``"nms"`` keeps only the best-scoring one by mask IoU. An
  optional full-image pass adds the detections of the whole (resized) image first, for objects
  larger than a tile.
- ``panoptic_seg``: recombined from the merged instances and blended semantic logits with the
  model's own combination settings.

Masks are kept as crops while merging and returned so (``instances["masks"]`` is a
:class:`~d2seg.utils.cropped_masks.CroppedMasks`, which every writer reads), so memory stays
proportional to the objects, not to (number of detections) × image area.
"""

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from d2seg.engine.feature_tiling import SharedFeatureDetector, supports_shared_features
from d2seg.engine.tile_layout import blend_window, tile_windows
from d2seg.errors import ConfigError
from d2seg.modeling.postprocess import combine_semantic_and_instance_outputs
from d2seg.utils.cropped_masks import CroppedMasks

MERGE_MODES = ("nmm", "nms")
TILE_MODES = ("features", "images")
# Features mode's default largest backbone input side: blocks next to each other compute their
# shared window overlap twice, and with the channels-last backbone a 2048² pass costs only ~7%
# more per pixel than a 1280² one, so one 2048² block is cheaper than four ≤ 1280 px blocks of
# a 2048² image (bench/RESULTS.md, "tiles" of session 7: −5–8% CPU, +350 MB peak memory).
DEFAULT_BLOCK = 2048


@dataclass
class _Detections:
    """Detections in image coordinates, masks as crops.

    ``boxes`` R×4 float XYXY, ``scores`` R, ``classes`` R; ``crops[i]`` a bool h×w array whose
    top-left pixel is ``origins[i]`` = (y, x) in the image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    crops: list[np.ndarray]
    origins: list[tuple[int, int]]

    @classmethod
    def empty(cls) -> "_Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), [], [])

    @classmethod
    def from_instances(cls, instances: dict[str, torch.Tensor], y0: int, x0: int) -> "_Detections":
        """A tile's instances (at the tile's size) shifted by the tile's origin (y0, x0)."""
        boxes = instances["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
        masks = instances.get("masks")
        if masks is None:
            crops = [np.zeros((0, 0), bool) for _ in boxes]
            origins = [(y0 + int(box[1]), x0 + int(box[0])) for box in boxes]
        else:
            cropped = CroppedMasks.of(masks)
            crops = cropped.crops
            origins = [(y0 + y, x0 + x) for y, x in cropped.origins]
        return cls(boxes + np.array([x0, y0, x0, y0], dtype=np.float64),
                   instances["scores"].detach().cpu().double().numpy().reshape(-1),
                   instances["classes"].detach().cpu().numpy().astype(np.int64).reshape(-1),
                   crops, origins)

    @classmethod
    def concatenate(cls, parts: Sequence["_Detections"]) -> "_Detections":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.boxes for p in parts]),
                   np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.classes for p in parts]),
                   [c for p in parts for c in p.crops], [o for p in parts for o in p.origins])

    def _intersection(self, i: int, j: int) -> int:
        (ya, xa), (yb, xb) = self.origins[i], self.origins[j]
        a, b = self.crops[i], self.crops[j]
        y0, x0 = max(ya, yb), max(xa, xb)
        y1, x1 = min(ya + a.shape[0], yb + b.shape[0]), min(xa + a.shape[1], xb + b.shape[1])
        if y1 <= y0 or x1 <= x0:
            return 0
        return int(np.logical_and(a[y0 - ya:y1 - ya, x0 - xa:x1 - xa],
                                  b[y0 - yb:y1 - yb, x0 - xb:x1 - xb]).sum())

    def _merge_into(self, i: int, others: list[int]) -> None:
        """Detection ``i`` becomes the union of itself and ``others`` (box, mask; score kept:
        it is the highest)."""
        group = [i, *others]
        self.boxes[i] = [self.boxes[group, 0].min(), self.boxes[group, 1].min(),
                         self.boxes[group, 2].max(), self.boxes[group, 3].max()]
        parts = [(self.origins[k], self.crops[k]) for k in group if self.crops[k].size]
        if not parts:
            return
        y0 = min(o[0] for o, _ in parts)
        x0 = min(o[1] for o, _ in parts)
        y1 = max(o[0] + c.shape[0] for o, c in parts)
        x1 = max(o[1] + c.shape[1] for o, c in parts)
        union = np.zeros((y1 - y0, x1 - x0), bool)
        for (oy, ox), crop in parts:
            union[oy - y0:oy - y0 + crop.shape[0], ox - x0:ox - x0 + crop.shape[1]] |= crop
        self.crops[i], self.origins[i] = union, (y0, x0)

    def merge(self, mode: str, threshold: float) -> "_Detections":
        """Greedy, class by class, best score first: ``"nmm"`` merges every remaining
        detection whose mask IoS with the current one is ≥ ``threshold`` into it; ``"nms"``
        drops those whose mask IoU is ≥ ``threshold``. Detections without masks match by box."""
        if mode not in MERGE_MODES:
            raise ConfigError(f"--tile-merge {mode!r}: fix: one of {', '.join(MERGE_MODES)}")
        areas = np.array([c.sum() for c in self.crops], dtype=np.float64)
        order = np.argsort(-self.scores, kind="stable")
        alive = np.ones(len(order), bool)
        kept = []
        for rank, i in enumerate(order):
            if not alive[rank]:
                continue
            alive[rank] = False
            # Only same-class detections whose boxes touch box i can match it: a vectorised
            # box test first, the mask intersection for those few.
            rest = order[alive]
            box = self.boxes[i]
            touching = ((self.classes[rest] == self.classes[i])
                        & (self.boxes[rest, 0] <= box[2]) & (self.boxes[rest, 2] >= box[0])
                        & (self.boxes[rest, 1] <= box[3]) & (self.boxes[rest, 3] >= box[1]))
            matches = [int(j) for j in rest[touching]
                       if self._match(i, j, areas, mode) >= threshold]
            if mode == "nmm" and matches:
                self._merge_into(i, matches)
                areas[i] = self.crops[i].sum()
            kept.append(i)
            alive[np.isin(order, matches)] = False
        return _Detections(self.boxes[kept], self.scores[kept], self.classes[kept],
                           [self.crops[k] for k in kept], [self.origins[k] for k in kept])

    def _match(self, i: int, j: int, areas: np.ndarray, mode: str) -> float:
        if areas[i] == 0 or areas[j] == 0:
            a, b = self.boxes[i], self.boxes[j]
            w = min(a[2], b[2]) - max(a[0], b[0])
            h = min(a[3], b[3]) - max(a[1], b[1])
            inter = max(w, 0) * max(h, 0)
            area_a = (a[2] - a[0]) * (a[3] - a[1])
            area_b = (b[2] - b[0]) * (b[3] - b[1])
        else:
            inter, area_a, area_b = self._intersection(i, j), areas[i], areas[j]
        denominator = min(area_a, area_b) if mode == "nmm" else area_a + area_b - inter
        return inter / denominator if denominator > 0 else 0.0

    def to_instances(self, height: int, width: int, with_masks: bool) -> dict[str, Any]:
        """The predictor's ``instances`` dict at H×W, the masks as :class:`CroppedMasks` (the
        crops themselves: never pasted at full size here)."""
        out: dict[str, Any] = {"boxes": torch.from_numpy(self.boxes).float().reshape(-1, 4),
                               "scores": torch.from_numpy(self.scores).float(),
                               "classes": torch.from_numpy(self.classes).long()}
        if with_masks:
            out["masks"] = CroppedMasks(self.crops, self.origins, (height, width))
        return out


class TiledPredictor:
    """A :class:`~d2seg.engine.predictor.DefaultPredictor` applied tile by tile (see the
    module docstring); called like the predictor, with the same output dict."""

    def __init__(
        self,
        predictor: Any,
        *,
        tile: int = 512,
        overlap: float = 0.25,
        merge: str = "nmm",
        match_threshold: float = 0.5,
        full_pass: bool = False,
        batch_size: int = 1,
        mode: str | None = None,
        block: int = DEFAULT_BLOCK,
    ):
        """
        Args:
            predictor: a ``DefaultPredictor`` (``predict_batch``, ``model.tasks`` or
                ``metadata.saved["tasks"]``).
            tile, overlap: :func:`tile_windows`'s, in pixels of the original image.
            merge, match_threshold: the instance merging (``"nmm"`` or ``"nms"``) and its
                mask IoS/IoU threshold.
            full_pass: also predict on the whole image and merge its detections in.
            batch_size: tiles per forward pass.
            mode: ``"features"`` (one backbone pass per block, the heads per tile window; R-CNN
                models only), ``"images"`` (the whole model per tile), or None: features where
                the model supports it, else images.
            block: features mode's largest backbone input side (model pixels): bounds memory.
        """
        if merge not in MERGE_MODES:
            raise ConfigError(f"--tile-merge {merge!r}: fix: one of {', '.join(MERGE_MODES)}")
        tile_windows(tile, tile, tile, overlap)  # checks tile and overlap
        if mode is None:
            mode = "features" if supports_shared_features(predictor.model) else "images"
        if mode not in TILE_MODES:
            raise ConfigError(f"--tile-mode {mode!r}: fix: one of {', '.join(TILE_MODES)}")
        self.mode = mode
        self.shared = None
        if mode == "features":
            self.shared = SharedFeatureDetector(predictor, tile=tile, overlap=overlap,
                                                block=block, batch_size=batch_size)
        self.predictor = predictor
        self.tile, self.overlap = tile, overlap
        self.merge, self.match_threshold = merge, match_threshold
        self.full_pass = full_pass
        self.batch_size = max(1, batch_size)

    def _tile_outputs(self, image: np.ndarray, format: str | None
                      ) -> Iterator[tuple[dict[str, Any], int, int]]:
        """Each tile's output dict (at the tile's size) and the tile's top-left corner (y, x)."""
        if self.shared is not None:
            for instances, y0, x0 in self.shared(image, format):
                yield {"instances": instances}, y0, x0
            return
        windows = tile_windows(*image.shape[:2], self.tile, self.overlap)
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            crops = [image[y0:y1, x0:x1] for y0, x0, y1, x1 in batch]
            for (y0, x0, _, _), out in zip(batch, self.predictor.predict_batch(crops, format)):
                yield out, y0, x0

    def __call__(self, image: np.ndarray, format: str | None = None) -> dict[str, Any]:
        """Outputs for one H×W×C image at its original size (``format`` as the predictor's)."""
        height, width = image.shape[:2]
        logits, weights = None, None
        parts: list[_Detections] = []
        with_masks = False
        if self.full_pass:
            full = self.predictor(image, format)
            if "instances" in full:
                parts.append(_Detections.from_instances(full["instances"], 0, 0))
                with_masks = "masks" in full["instances"]
        for out, y0, x0 in self._tile_outputs(image, format):
            if "sem_seg" in out:
                tile_logits = out["sem_seg"].detach().float().cpu()
                if logits is None:
                    logits = torch.zeros((tile_logits.shape[0], height, width))
                    weights = torch.zeros((height, width))
                y1, x1 = y0 + tile_logits.shape[1], x0 + tile_logits.shape[2]
                window = blend_window(y1 - y0, x1 - x0)
                logits[:, y0:y1, x0:x1] += tile_logits * window
                weights[y0:y1, x0:x1] += window
            if "instances" in out:
                parts.append(_Detections.from_instances(out["instances"], y0, x0))
                with_masks = with_masks or "masks" in out["instances"]
        result: dict[str, Any] = {}
        if parts:
            merged = _Detections.concatenate(parts).merge(self.merge, self.match_threshold)
            result["instances"] = merged.to_instances(height, width, with_masks)
        if logits is not None:
            result["sem_seg"] = logits / weights
        model = self.predictor.model
        if "instances" in result and "sem_seg" in result and getattr(model, "combine_enabled",
                                                                      False):
            result["panoptic_seg"] = combine_semantic_and_instance_outputs(
                result["instances"], result["sem_seg"].argmax(dim=0),
                overlap_threshold=model.combine_overlap_thresh,
                stuff_area_thresh=model.combine_stuff_area_thresh,
                instances_score_thresh=model.combine_instances_score_thresh,
            )
        return result

    def predict_batch(self, images: Sequence[np.ndarray], format: str | None = None) -> list[dict]:
        """:meth:`__call__` on each image (the tiles of each are batched)."""
        return [self(image, format) for image in images]
