"""The records every annotation source produces and every writer consumes.

A source (Labelme, VIA, mask images) turns one annotated image into an :class:`ImageRecord`:
the image, its size, and its instances as rasterised masks (plus polygons where the annotation
was a polygon). Writers (COCO instances, semantic PNGs, COCO panoptic) read only these records,
so a new source needs no writer changes.

Problems found on the way are collected in a :class:`ConversionReport` (``report.json``):
every file or shape skipped, clipped or fixed, and why.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pycocotools import mask as mask_util

from d2seg.errors import AnnotationError

Action = Literal["skipped", "clipped", "fixed", "missing"]


@dataclass
class InstanceRecord:
    """One object instance of an image.

    Attributes:
        label: category name, exactly as annotated.
        mask: bool array H×W, the rasterised instance; COCO ``area``/``bbox`` come from it.
            ``None`` when ``rle`` holds it instead (see :meth:`pixels`).
        polygons: COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` in pixels (each with at least
            3 points, i.e. 6 numbers), or ``None`` when the instance must be written as RLE
            (mask shapes, lines/points, merged groups that include a non-polygon).
        source: where it came from, for reports, e.g. ``"a.json: shapes[3,5]"``.
        rle: the mask as a compressed COCO RLE (pycocotools' ``{"size", "counts": bytes}``),
            for sources that read run lengths (Kaggle CSVs): the COCO writer then never
            decodes it, only the semantic and panoptic maps do.
        isthing: False for a "stuff" region (a label-map class without instances): it is drawn
            in the semantic map but is neither a COCO annotation nor a panoptic segment.
    """

    label: str
    mask: np.ndarray | None
    polygons: list[list[float]] | None
    source: str
    rle: dict | None = None
    isthing: bool = True

    def pixels(self) -> np.ndarray:
        """The instance as bool H×W (decoded from ``rle`` when there is no ``mask``)."""
        if self.mask is None:
            assert self.rle is not None, "an InstanceRecord needs mask or rle"
            return mask_util.decode(self.rle).astype(bool)
        return self.mask


@dataclass
class ImageRecord:
    """One annotated image, ready for the writers.

    Attributes:
        source: the annotation file (or image file for mask sources) it came from.
        file_name: output image path relative to ``OUT/images`` (POSIX separators).
        height, width: image size in pixels after EXIF orientation.
        image: the decoded image (H×W×3 uint8 RGB, or H×W for grayscale) when the output image
            must be written from memory (embedded ``imageData``, EXIF-rotated pixels), or an
            H×W×B array of any dtype when ``file_name`` ends in ``.npy`` (raster patches);
            ``None`` when ``image_path`` can be copied (or hard-linked) unchanged.
        image_path: original image file to copy, when ``image`` is ``None``.
        instances: the instances, in annotation order (later ones are drawn on top in the
            semantic and panoptic maps, as Labelme's own converters do).
        ignore_mask: bool H×W of ``__ignore__`` regions, or ``None``.
    """

    source: str
    file_name: str
    height: int
    width: int
    image: np.ndarray | None = None
    image_path: Path | None = None
    instances: list[InstanceRecord] = field(default_factory=list)
    ignore_mask: np.ndarray | None = None


@dataclass
class ReportEntry:
    """One problem: ``file`` (and ``shape`` index when it concerns one shape) and why."""

    file: str
    action: Action
    reason: str
    shape: int | None = None

    def __str__(self) -> str:
        where = f"{self.file} shapes[{self.shape}]" if self.shape is not None else self.file
        return f"{where}: {self.action}: {self.reason}"


@dataclass
class ConversionReport:
    """Everything skipped, clipped, fixed or missing during a conversion.

    With ``strict=True``, :meth:`raise_if_strict` turns the collected entries into one
    :class:`AnnotationError` that names them (all of them are collected first, so the user sees
    every offending file in one run).
    """

    strict: bool = False
    entries: list[ReportEntry] = field(default_factory=list)

    def add(self, file: str | Path, action: Action, reason: str, shape: int | None = None) -> None:
        self.entries.append(ReportEntry(str(file), action, reason, shape))

    def extend(self, other: "ConversionReport") -> None:
        self.entries.extend(other.entries)

    def raise_if_strict(self) -> None:
        if not self.strict or not self.entries:
            return
        shown = "; ".join(str(e) for e in self.entries[:5])
        more = f" (and {len(self.entries) - 5} more)" if len(self.entries) > 5 else ""
        raise AnnotationError(
            f"--strict: {len(self.entries)} problem(s): {shown}{more}; fix: correct these "
            f"annotations, or run without --strict to skip them (listed in report.json)"
        )

    def to_json(self) -> dict:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.action] = counts.get(e.action, 0) + 1
        return {
            "counts": counts,
            "entries": [
                {"file": e.file, "shape": e.shape, "action": e.action, "reason": e.reason}
                for e in self.entries
            ],
        }
