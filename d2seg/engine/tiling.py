"""Tiled (sliced) inference for images much larger than a model's test size.

The image is cut into overlapping square tiles (:func:`tile_windows`); each tile goes through
the :class:`~d2seg.engine.predictor.DefaultPredictor` (its own test-time resize included), and
the tile outputs are put back together at the image's size:

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

Masks are kept as crops while merging, so memory stays proportional to the objects, not to
(number of detections) × image area.
"""

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from d2seg.errors import ConfigError
from d2seg.modeling.postprocess import combine_semantic_and_instance_outputs

MERGE_MODES = ("nmm", "nms")


def _axis_starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis of ``size`` pixels: every ``stride``, the last flush with the
    far edge (one tile of the full size when ``size <= tile``)."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


def tile_windows(
    height: int, width: int, tile: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """The tiles covering an H×W image: ``(y0, x0, y1, x1)`` pixel windows of ``tile``×``tile``
    (smaller only where the image is), consecutive tiles sharing ``overlap`` (0 ≤ overlap < 1)
    of their side."""
    if tile < 16 or not 0 <= overlap < 1:
        raise ConfigError(
            f"--tile {tile} --overlap {overlap}: the tile needs at least 16 pixels and the overlap "
            f"a fraction in [0, 1); fix: e.g. --tile 512 --overlap 0.25"
        )
    stride = max(1, round(tile * (1 - overlap)))
    return [
        (y0, x0, min(y0 + tile, height), min(x0 + tile, width))
        for y0 in _axis_starts(height, tile, stride)
        for x0 in _axis_starts(width, tile, stride)
    ]


def blend_window(height: int, width: int) -> torch.Tensor:
    """H×W float32 weights: a raised cosine in each direction, 1 at the centre, falling to a
    small positive floor at the border (so pixels only one tile covers still count)."""

    def ramp(n: int) -> torch.Tensor:
        t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        return 0.5 - 0.5 * torch.cos(2 * math.pi * t) + 1e-3

    return ramp(height)[:, None] * ramp(width)[None, :]


def needs_tiling(height: int, width: int, min_size_test: int, max_size_test: int) -> bool:
    """Whether an H×W image is more than twice the model's test size (then the test-time
    resize would shrink it more than 2×); never for a model that does not resize
    (``INPUT.MIN_SIZE_TEST`` 0)."""
    if min_size_test <= 0:
        return False
    return min(height, width) > 2 * min_size_test or max(height, width) > 2 * max_size_test


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
        crops, origins = [], []
        if masks is None:
            crops = [np.zeros((0, 0), bool) for _ in boxes]
            origins = [(y0 + int(box[1]), x0 + int(box[0])) for box in boxes]
        else:
            masks = masks.detach().cpu().bool()
            # Each mask's row and column extents in two vectorised reductions, not a full
            # nonzero() per mask: a tile holds up to 100 masks of the tile's size.
            rows, cols = masks.any(dim=2).numpy(), masks.any(dim=1).numpy()
            masks = masks.numpy()
            for mask, row, col in zip(masks, rows, cols):
                ys, xs = np.flatnonzero(row), np.flatnonzero(col)
                if len(ys) == 0:
                    crops.append(np.zeros((0, 0), bool))
                    origins.append((y0, x0))
                    continue
                crops.append(mask[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1])
                origins.append((y0 + int(ys[0]), x0 + int(xs[0])))
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

    def to_instances(self, height: int, width: int, with_masks: bool) -> dict[str, torch.Tensor]:
        """The predictor's ``instances`` dict at H×W (masks pasted back at full size)."""
        out = {"boxes": torch.from_numpy(self.boxes).float().reshape(-1, 4),
               "scores": torch.from_numpy(self.scores).float(),
               "classes": torch.from_numpy(self.classes).long()}
        if with_masks:
            masks = torch.zeros((len(self.crops), height, width), dtype=torch.bool)
            for k, (crop, (y0, x0)) in enumerate(zip(self.crops, self.origins)):
                masks[k, y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = torch.from_numpy(crop)
            out["masks"] = masks
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
        """
        if merge not in MERGE_MODES:
            raise ConfigError(f"--tile-merge {merge!r}: fix: one of {', '.join(MERGE_MODES)}")
        tile_windows(tile, tile, tile, overlap)  # checks tile and overlap
        self.predictor = predictor
        self.tile, self.overlap = tile, overlap
        self.merge, self.match_threshold = merge, match_threshold
        self.full_pass = full_pass
        self.batch_size = max(1, batch_size)

    def __call__(self, image: np.ndarray, format: str | None = None) -> dict[str, Any]:
        """Outputs for one H×W×C image at its original size (``format`` as the predictor's)."""
        height, width = image.shape[:2]
        windows = tile_windows(height, width, self.tile, self.overlap)
        logits, weights = None, None
        parts: list[_Detections] = []
        with_masks = False
        if self.full_pass:
            full = self.predictor(image, format)
            if "instances" in full:
                parts.append(_Detections.from_instances(full["instances"], 0, 0))
                with_masks = "masks" in full["instances"]
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            crops = [image[y0:y1, x0:x1] for y0, x0, y1, x1 in batch]
            for (y0, x0, y1, x1), out in zip(batch, self.predictor.predict_batch(crops, format)):
                if "sem_seg" in out:
                    tile_logits = out["sem_seg"].detach().float().cpu()
                    if logits is None:
                        logits = torch.zeros((tile_logits.shape[0], height, width))
                        weights = torch.zeros((height, width))
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
