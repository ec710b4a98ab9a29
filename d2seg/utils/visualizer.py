"""Detectron2's ``Visualizer`` for d2seg outputs: instances, semantic, panoptic, ground truth.

The API is Detectron2's (``Visualizer(img_rgb, metadata, scale, instance_mode)``,
``draw_instance_predictions``, ``draw_sem_seg``, ``draw_panoptic_seg``, ``draw_dataset_dict``,
each returning the :class:`~d2seg.utils.vis_image.VisImage` that accumulates the drawings), over
d2seg's plain-dict outputs. Drawing primitives live in :mod:`d2seg.utils.vis_image`, colours in
:mod:`d2seg.utils.colormap`.
"""

from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence

import numpy as np
import torch

from d2seg.data.detection_utils import (
    PANOPTIC_BACKGROUND_LABEL,
    PANOPTIC_FIRST_STUFF_LABEL,
    annotations_to_instances,
    boxes_from_masks,
)
from d2seg.data.io import read_panoptic_ids, read_sem_seg
from d2seg.utils.colormap import RGB, class_color, darker, jitter
from d2seg.utils.cropped_masks import CroppedMasks
from d2seg.utils.vis_image import VisImage

__all__ = ["ColorMode", "VisImage", "Visualizer", "instance_label"]

_BACKGROUND_NAMES = frozenset({"background", "_background_"})
_IGNORE_LABEL = 255


class ColorMode(Enum):
    """How instances are coloured (Detectron2's modes and values)."""

    IMAGE = 0  # class colour jittered per instance; the image as is
    SEGMENTATION = 1  # one colour per class, the same for all its instances and every call
    IMAGE_BW = 2  # as IMAGE, with the image gray outside the objects


_INSTANCE_ALPHA = {ColorMode.IMAGE: 0.5, ColorMode.SEGMENTATION: 0.7, ColorMode.IMAGE_BW: 0.3}


def instance_label(name: str, score: float | None = None) -> str:
    """The text drawn next to an object: ``"balloon 97%"``, or ``"balloon"`` without a score."""
    return name if score is None else f"{name} {score * 100:.0f}%"


@dataclass
class _Region:
    """A class's pixels in a semantic or panoptic map (input-size H×W bool ``mask``)."""

    name: str
    color: RGB
    mask: np.ndarray


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_rgb(img: Any) -> np.ndarray:
    """H×W×3 uint8 RGB from RGB, gray (H×W, H×W×1) or multiband (H×W×N) pixels 0..255."""
    img = _numpy(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or 0 in img.shape:
        raise ValueError(
            f"Visualizer needs an H×W×C image, got shape {img.shape}; fix: pass the RGB image "
            f"as an H×W×3 uint8 array (channels last)"
        )
    img = np.clip(img, 0, 255).astype(np.uint8)
    if img.shape[2] >= 3:
        return np.ascontiguousarray(img[:, :, :3])
    return np.repeat(img[:, :, :1], 3, axis=2)


class Visualizer:
    """Draws d2seg predictions and ground truth over an image.

    Args:
        img_rgb: the image, pixels 0..255 (other dtypes are clipped and cast to uint8):
            H×W×3 RGB; H×W or H×W×1 gray (drawn as gray RGB); H×W×N multiband: the first 3
            bands shown as RGB when N > 3, band 0 as gray when N = 2.
        metadata: a dataset's metadata (``MetadataCatalog.get(name)``) or a dict; read keys:
            ``thing_classes``, ``stuff_classes`` (names by contiguous id), ``thing_colors``,
            ``stuff_colors`` (RGB 0..255 per id, optional). A class without a name is drawn as
            ``"class 3"``; one without a colour gets :func:`~d2seg.utils.colormap.class_color`.
        scale: the output is round(H·scale)×round(W·scale); masks and boxes are scaled along.
        instance_mode: :class:`ColorMode` of objects (instances and panoptic things).

    Every ``draw_*`` adds to one canvas, :attr:`output`, and returns it.

    Example::

        import numpy as np
        import torch
        from d2seg.utils.visualizer import ColorMode, Visualizer

        image = np.full((120, 160, 3), 90, dtype=np.uint8)
        masks = torch.zeros(1, 120, 160, dtype=torch.bool)
        masks[0, 40:90, 50:120] = True
        predictions = {"boxes": torch.tensor([[50.0, 40.0, 120.0, 90.0]]),
                       "scores": torch.tensor([0.97]), "classes": torch.tensor([0]),
                       "masks": masks}
        vis = Visualizer(image, {"thing_classes": ["balloon"]},
                         instance_mode=ColorMode.SEGMENTATION)
        vis.draw_instance_predictions(predictions).save("/tmp/balloon.png")
    """

    def __init__(
        self,
        img_rgb: np.ndarray | torch.Tensor,
        metadata: Any = None,
        scale: float = 1.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ):
        self.img = _as_rgb(img_rgb)
        self.metadata = {} if metadata is None else metadata
        self.output = VisImage(self.img, scale=scale)
        self._instance_mode = instance_mode

    # -- classes --------------------------------------------------------------------------

    def _meta_list(self, key: str) -> Sequence:
        return self.metadata.get(key, None) or ()

    def _name(self, kind: str, index: int) -> str:
        names = self._meta_list(f"{kind}_classes")
        return str(names[index]) if 0 <= index < len(names) else f"class {index}"

    def _thing_color(self, category: int) -> RGB:
        colors = self._meta_list("thing_colors")
        if 0 <= category < len(colors):
            return tuple(int(c) for c in colors[category])
        return class_color(category)

    def _stuff_color(self, index: int, palette_index: int | None = None) -> RGB:
        """``stuff_colors[index]``; else the colour of the thing class of the same name (a
        converted split's semantic class k is thing class k - 1: one colour in every view);
        else palette colour ``palette_index`` (default ``index``)."""
        colors = self._meta_list("stuff_colors")
        if 0 <= index < len(colors):
            return tuple(int(c) for c in colors[index])
        things = list(self._meta_list("thing_classes"))
        name = self._name("stuff", index)
        if name in things:
            return self._thing_color(things.index(name))
        return class_color(index if palette_index is None else palette_index)

    def _object_color(self, category: int, instance: int) -> RGB:
        color = self._thing_color(category)
        if self._instance_mode is ColorMode.SEGMENTATION:
            return color
        return jitter(color, seed=instance)

    # -- objects (instances, panoptic things, annotations) --------------------------------

    def _gray_background(self, foreground: np.ndarray) -> None:
        """In IMAGE_BW mode, turn the image gray outside ``foreground`` (H×W bool)."""
        if self._instance_mode is ColorMode.IMAGE_BW:
            self.output.grayscale_outside(foreground)

    def _object_pixels(self, boxes: np.ndarray, masks: CroppedMasks | None) -> np.ndarray:
        """H×W bool: the union of ``masks``, or of ``boxes`` (R×4 XYXY) without masks."""
        if masks is not None and len(masks):
            return masks.union()
        foreground = np.zeros(self.img.shape[:2], dtype=bool)
        if masks is None:
            for x0, y0, x1, y1 in np.round(boxes).astype(int):
                foreground[max(y0, 0):y1, max(x0, 0):x1] = True
        return foreground

    def _draw_objects(
        self,
        boxes: np.ndarray,
        masks: CroppedMasks | None,
        labels: list[str],
        colors: list[RGB],
        alpha: float,
        draw_boxes: bool,
        draw_labels: bool,
    ) -> None:
        """Draw R objects, largest first: ``boxes`` R×4 XYXY, ``masks`` R image-size masks or
        None (each pasted at the image's size only while it is drawn).

        Labels go on top of every mask and box, so a small object's label is never hidden.
        """
        if masks is not None:
            areas = masks.areas
        else:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-areas, kind="stable")
        for i in order:
            if masks is not None:
                mask = masks.paste(i)
                self.output.fill(mask, colors[i], alpha)
                self.output.outline(mask, darker(colors[i]))
            if draw_boxes:
                self.output.rectangle(boxes[i], colors[i])
        if draw_labels:
            for i in order:
                self.output.label(labels[i], boxes[i], colors[i])

    def draw_instance_predictions(
        self, predictions: dict[str, Any], *, draw_boxes: bool = True, draw_labels: bool = True
    ) -> VisImage:
        """Draw a detector's instances (torch tensors or numpy arrays).

        Args:
            predictions: ``{"boxes": R×4 XYXY float (input pixels), "classes": R int (0-based
                into ``thing_classes``), "scores"?: R float 0..1, "masks"?: R×H×W bool or
                :class:`~d2seg.utils.cropped_masks.CroppedMasks`}``,
                e.g. ``model(inputs)[0]["instances"]``. Masks are tinted (alpha 0.5; 0.7 in
                SEGMENTATION, 0.3 in IMAGE_BW mode) and outlined in a darker shade.
            draw_boxes: draw each box.
            draw_labels: draw ``"class 97%"`` (:func:`instance_label`) above each box.
        """
        boxes = _numpy(predictions["boxes"]).astype(np.float64).reshape(-1, 4)
        classes = _numpy(predictions["classes"]).astype(np.int64).reshape(-1)
        scores = predictions.get("scores")
        scores = None if scores is None else _numpy(scores).astype(np.float64).reshape(-1)
        masks = predictions.get("masks")
        masks = None if masks is None else CroppedMasks.of(masks)
        labels = [
            instance_label(self._name("thing", int(c)), None if scores is None else scores[i])
            for i, c in enumerate(classes)
        ]
        colors = [self._object_color(int(c), i) for i, c in enumerate(classes)]
        self._gray_background(self._object_pixels(boxes, masks))
        self._draw_objects(boxes, masks, labels, colors, _INSTANCE_ALPHA[self._instance_mode],
                           draw_boxes, draw_labels)
        return self.output

    # -- regions (semantic classes, panoptic stuff) ---------------------------------------

    def _draw_regions(self, regions: list[_Region], alpha: float) -> None:
        for region in regions:
            self.output.fill(region.mask, region.color, alpha)
            self.output.outline(region.mask, darker(region.color))

    def _draw_legend(self, regions: list[_Region], covered: np.ndarray) -> None:
        """Legend of ``regions``, in the corner that hides least of ``covered`` (H×W bool)."""
        self.output.legend([(r.name, r.color) for r in regions], covered)

    def _union(self, masks: list[np.ndarray]) -> np.ndarray:
        return np.logical_or.reduce(masks) if masks else np.zeros(self.img.shape[:2], bool)

    def _semantic_regions(self, sem_seg: Any, area_threshold: int | None) -> list[_Region]:
        sem_seg = _numpy(sem_seg)
        if sem_seg.ndim not in (2, 3) or sem_seg.shape[-2:] != self.img.shape[:2]:
            raise ValueError(
                f"sem_seg is {sem_seg.shape} but the image is {self.img.shape[0]}×"
                f"{self.img.shape[1]}; fix: give H×W labels or K×H×W logits at the image's size"
            )
        if sem_seg.ndim == 3 and sem_seg.shape[0] == 1:
            # One sigmoid logit: a binary model, named as SemSegEvaluator names its classes.
            names = self._meta_list("stuff_classes")
            index = 0 if len(names) == 1 else 1
            name = self._name("stuff", index) if len(names) in (1, 2) else "foreground"
            candidates = [(name, self._stuff_color(index), sem_seg[0] > 0)]
        else:
            labels = sem_seg.argmax(axis=0) if sem_seg.ndim == 3 else sem_seg.astype(np.int64)
            candidates = [
                (self._name("stuff", label), self._stuff_color(label), labels == label)
                for label in np.unique(labels).tolist()
                if label != _IGNORE_LABEL
            ]
        return [
            _Region(name, color, mask)
            for name, color, mask in candidates
            if name.lower() not in _BACKGROUND_NAMES
            and mask.sum() >= max(area_threshold or 0, 1)
        ]

    def legend_entries(
        self, sem_seg: Any, area_threshold: int | None = None
    ) -> list[tuple[str, RGB]]:
        """The (name, colour) pairs :meth:`draw_sem_seg` lists in its legend for ``sem_seg``:
        the drawn classes present, by label."""
        return [(r.name, r.color) for r in self._semantic_regions(sem_seg, area_threshold)]

    def draw_sem_seg(
        self, sem_seg: Any, area_threshold: int | None = None, alpha: float = 0.6
    ) -> VisImage:
        """Draw a semantic segmentation: each class tinted and outlined, plus a legend.

        Args:
            sem_seg: H×W integer labels (label k is ``stuff_classes[k]``; 255 = ignore, not
                drawn), K×H×W logits (argmax over K), or 1×H×W logits of a binary model
                (foreground = logit > 0, named ``stuff_classes[1]`` when there are 2 names,
                ``stuff_classes[0]`` when 1, else "foreground"). Classes named "background" or
                "_background_" are not drawn (d2seg's converted data has label 0 = background).
                PanopticUNet's ``sem_seg`` uses other labels: draw its ``panoptic_seg`` instead.
            area_threshold: classes with fewer pixels are not drawn.
            alpha: tint opacity 0..1.

        The legend (colour swatch + name of each drawn class) sits in the corner it hides
        least of, on a semi-opaque dark backdrop.
        """
        regions = self._semantic_regions(sem_seg, area_threshold)
        self._draw_regions(regions, alpha)
        self._draw_legend(regions, self._union([r.mask for r in regions]))
        return self.output

    # -- panoptic -------------------------------------------------------------------------

    def draw_panoptic_seg(
        self,
        panoptic_seg: Any,
        segments_info: list[dict],
        area_threshold: int | None = None,
        alpha: float = 0.7,
    ) -> VisImage:
        """Draw PanopticUNet's ``panoptic_seg`` output: things as instances, stuff as regions.

        Args:
            panoptic_seg: H×W int segment ids, 0 = void (not drawn).
            segments_info: ``{"id", "isthing", "category_id", "score"?}`` per segment, as
                :func:`~d2seg.modeling.postprocess.combine_semantic_and_instance_outputs`
                writes them: a thing's ``category_id`` is its instance class
                (``thing_classes[c]``; labelled ``"name 97%"`` with a score, ``"name (crowd)"``
                with ``iscrowd``); a stuff segment's is its PanopticFPN semantic label:
                1 = background (not drawn), 2 + k = ``stuff_classes[k]``, coloured
                ``stuff_colors[k]``, else as the thing class of that name, else palette colour
                ``len(thing_classes) + k`` (not a thing's).
            area_threshold: stuff segments with fewer pixels are not drawn.
            alpha: tint opacity of things and stuff.

        In IMAGE_BW mode the image is gray outside every drawn segment.
        """
        ids = _numpy(panoptic_seg).astype(np.int64)
        num_things = len(self._meta_list("thing_classes"))
        things: list[tuple[np.ndarray, str, RGB]] = []
        stuff: list[_Region] = []
        for i, segment in enumerate(segments_info):
            mask = ids == segment["id"]
            category = int(segment["category_id"])
            if segment.get("isthing", True):
                name = self._name("thing", category)
                label = f"{name} (crowd)" if segment.get("iscrowd") else instance_label(
                    name, segment.get("score"))
                things.append((mask, label, self._object_color(category, i)))
            elif category != PANOPTIC_BACKGROUND_LABEL:
                k = category - PANOPTIC_FIRST_STUFF_LABEL
                if mask.sum() >= max(area_threshold or 0, 1):
                    stuff.append(_Region(self._name("stuff", k),
                                         self._stuff_color(k, num_things + k), mask))
        drawn = self._union([m for m, _, _ in things] + [r.mask for r in stuff])
        self._gray_background(drawn)
        self._draw_regions(stuff, alpha)
        if things:
            masks = np.stack([m for m, _, _ in things])
            boxes = boxes_from_masks(torch.from_numpy(masks)).numpy()
            self._draw_objects(boxes, CroppedMasks.from_dense(masks), [t[1] for t in things],
                               [t[2] for t in things],
                               alpha, False, True)
        self._draw_legend(stuff, drawn)
        return self.output

    # -- ground truth ---------------------------------------------------------------------

    def _annotation_objects(
        self, annotations: list[dict], file_name: str
    ) -> tuple[np.ndarray, CroppedMasks | None, list[str], list[RGB]]:
        """Dataset-dict annotations → boxes R×4 XYXY, masks (None without segmentations),
        labels and colours, as :meth:`_draw_objects` takes them."""
        height, width = self.img.shape[:2]
        # Every annotation is drawn, crowd included: clear the flag that would drop it.
        instances = annotations_to_instances([{**a, "iscrowd": 0} for a in annotations],
                                             height, width, str(file_name))
        masks = instances.get("masks")
        labels = [
            self._name("thing", a["category_id"]) + (" (crowd)" if a.get("iscrowd") else "")
            for a in annotations
        ]
        colors = [self._object_color(a["category_id"], i) for i, a in enumerate(annotations)]
        return (instances["boxes"].numpy().astype(np.float64),
                None if masks is None else CroppedMasks.from_dense(masks), labels, colors)

    def draw_dataset_dict(self, dic: dict) -> VisImage:
        """Draw one dataset dict's ground truth over the image given to the constructor.

        Draws, where present: ``sem_seg`` (H×W labels) or ``sem_seg_file_name`` (read with
        :func:`~d2seg.data.io.read_sem_seg`) as :meth:`draw_sem_seg`; then
        ``annotations`` (``bbox`` + ``bbox_mode``, ``category_id`` into ``thing_classes``,
        ``segmentation`` polygons or RLE, ``iscrowd``: crowd regions are drawn too and
        labelled ``"name (crowd)"``) as :meth:`draw_instance_predictions`. A panoptic dict
        (``pan_seg_file_name`` + ``segments_info``, contiguous thing/stuff ids) is drawn as
        :meth:`draw_panoptic_seg` only when it has neither, as a converted split holds the
        same objects in all three.
        """
        sem_seg = dic.get("sem_seg")
        if sem_seg is None and "sem_seg_file_name" in dic:
            sem_seg = read_sem_seg(dic["sem_seg_file_name"])
        regions = [] if sem_seg is None else self._semantic_regions(sem_seg, None)
        annotations = dic.get("annotations") or []
        objects = self._annotation_objects(annotations, dic.get("file_name", "image")) \
            if annotations else None
        drawn = self._union([r.mask for r in regions]
                            + ([self._object_pixels(*objects[:2])] if objects else []))
        self._gray_background(drawn)
        self._draw_regions(regions, alpha=0.5)
        if objects:
            self._draw_objects(*objects, _INSTANCE_ALPHA[self._instance_mode], True, True)
        self._draw_legend(regions, drawn)
        if sem_seg is None and not annotations and "pan_seg_file_name" in dic:
            segments = [
                s if s.get("isthing", True)
                else {**s, "category_id": PANOPTIC_FIRST_STUFF_LABEL + s["category_id"]}
                for s in dic.get("segments_info", [])
            ]
            self.draw_panoptic_seg(read_panoptic_ids(dic["pan_seg_file_name"]), segments)
        return self.output
