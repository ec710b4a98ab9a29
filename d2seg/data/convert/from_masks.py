"""Binary mask images as an annotation source (``--format masks``), Carvana's layout.

An image ``<id>.<jpg|jpeg|png|bmp|tif|tiff|webp>`` is paired with the mask ``<id>_mask.gif`` or
``<id>_mask.png`` anywhere under the input folder (Carvana keeps them in ``train/`` and
``train_masks/``); when an id occurs in several folders, the mask in the image's own folder
wins. Images without a mask, masks without an image, ambiguous pairs and masks whose size
differs from the image's are reported and skipped.

Foreground is every non-zero pixel of the mask: the palette index for palette images (GIF,
palette PNG), the value for grayscale (0/255 or 0/1 PNG), any colour channel for RGB(A).
Mask pixels are taken to match the image's stored pixels, so an image with an EXIF rotation is
reported and skipped rather than silently misaligned.

There is one category, ``SourceOptions.mask_label`` (``--mask-label``; ``"object"`` when
unset). Connected components (8-connected) smaller than ``mask_min_area`` pixels are dropped and
reported; the rest are one instance each (``mask_instances="components"``) or one instance
together (``"single"``). Instances get COCO polygons from their outer contours
(``cv2.findContours``), unless the mask has holes or a contour encloses no area (thin lines,
single pixels): those are written as RLE.
``area`` and ``bbox`` always come from the mask itself.
"""

from pathlib import Path

import cv2
import numpy as np

from d2seg.data.convert.record import ConversionReport, ImageRecord, InstanceRecord
from d2seg.data.convert.source import AnnotationSource, SourceOptions
from d2seg.data.io import decode_image, exif_orientation, open_image
from d2seg.errors import AnnotationError, DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MASK_SUFFIXES = frozenset({".gif", ".png"})
MASK_TAG = "_mask"
DEFAULT_LABEL = "object"


def read_mask(path: Path) -> np.ndarray:
    """Foreground of a mask image as bool H×W: every non-zero pixel (palette index for GIFs)."""
    where = str(path)
    image = open_image(path, where, "mask", error=AnnotationError)
    # mask pixels must match the image's stored pixels (see the module docstring): no EXIF
    image = decode_image(image, where, "mask", error=AnnotationError, exif=False)
    if image.mode in ("P", "PA"):
        pixels = np.asarray(image.convert("P") if image.mode == "PA" else image)
    else:
        pixels = np.asarray(image)
        if pixels.ndim == 3 and image.mode.endswith("A"):
            pixels = pixels[..., :-1]  # alpha is not a class
    return pixels.any(axis=2) if pixels.ndim == 3 else pixels != 0


def mask_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons of the outer contours of a bool mask, or None when RLE is needed.

    None when the mask has a hole (a polygon list cannot express one) or a contour with fewer
    than 3 points or no enclosed area.
    """
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None or (hierarchy[0][:, 3] >= 0).any():
        return None
    if any(len(c) < 3 or cv2.contourArea(c) == 0 for c in contours):
        return None
    return [c.reshape(-1).astype(float).tolist() for c in contours]


class MaskImageSource(AnnotationSource):
    """Images with ``<id>_mask.gif|png`` binary masks; one class, ``options.mask_label``."""

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        self.label = DEFAULT_LABEL if options.mask_label is None else options.mask_label
        self._pairs: dict[str, Path] | None = None

    def _index(self, report: ConversionReport | None = None) -> dict[str, Path]:
        """Item (image path relative to the input folder) → its mask file."""
        if self._pairs is not None:
            return self._pairs
        files = self.input_files("*", "the images and their <id>_mask.gif/png masks")
        report = report if report is not None else ConversionReport()
        images: dict[str, list[Path]] = {}
        masks: dict[str, list[Path]] = {}
        for path in files:
            suffix = path.suffix.lower()
            if path.stem.endswith(MASK_TAG) and suffix in MASK_SUFFIXES:
                masks.setdefault(path.stem[: -len(MASK_TAG)], []).append(path)
            elif suffix in IMAGE_SUFFIXES:
                images.setdefault(path.stem, []).append(path)
        pairs: dict[str, Path] = {}
        used: set[Path] = set()
        for image_id, candidates in images.items():
            id_masks = masks.get(image_id, [])
            for image in candidates:
                mask = self._partner(image, id_masks, len(candidates))
                if mask is None:
                    found = [self._relative(m) for m in id_masks]
                    reason = f"ambiguous: {found}" if found else f"no {image_id}{MASK_TAG}.gif/png"
                    report.add(self._relative(image), "missing", f"no mask for it ({reason})")
                    continue
                pairs[self._relative(image)] = mask
                used.add(mask)
        for candidates in masks.values():
            for mask in candidates:
                if mask not in used:
                    report.add(self._relative(mask), "missing", "no image for this mask")
        if not pairs:
            raise DatasetError(
                f"{self.input_dir}: no image has a mask named <id>{MASK_TAG}.gif or "
                f"<id>{MASK_TAG}.png ({sum(map(len, images.values()))} image(s), "
                f"{sum(map(len, masks.values()))} mask(s) found); fix: name each mask after its "
                f"image, e.g. car_01.jpg + car_01{MASK_TAG}.gif"
            )
        self._pairs = pairs
        return pairs

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.input_dir).as_posix()

    @staticmethod
    def _partner(image: Path, masks: list[Path], images_with_id: int) -> Path | None:
        beside = [m for m in masks if m.parent == image.parent]
        if len(beside) == 1:
            return beside[0]
        if not beside and len(masks) == 1 and images_with_id == 1:
            return masks[0]
        return None

    def items(self, report: ConversionReport) -> list[str]:
        return sorted(self._index(report))

    def labels(self, item: str) -> list[str]:
        return [self.label]

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        image_path = self.input_dir / item
        mask_path = self._index()[item]
        mask_name = self._relative(mask_path)
        image = open_image(image_path, str(image_path), error=AnnotationError)
        orientation = exif_orientation(image)
        if orientation != 1:
            report.add(
                item,
                "skipped",
                f"EXIF orientation {orientation}: unclear whether {mask_name} follows the stored "
                f"or the rotated pixels; re-save the image without EXIF rotation",
            )
            return None
        width, height = image.size
        foreground = read_mask(mask_path)
        if foreground.shape != (height, width):
            report.add(
                item,
                "skipped",
                f"mask {mask_name} is {foreground.shape[1]}×{foreground.shape[0]}, the image "
                f"{width}×{height}",
            )
            return None
        record = ImageRecord(
            source=item, file_name=item, height=height, width=width, image_path=image_path
        )
        record.instances = self._instances(item, mask_name, foreground, report)
        return record

    def _instances(
        self, item: str, mask_name: str, foreground: np.ndarray, report: ConversionReport
    ) -> list[InstanceRecord]:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            foreground.astype(np.uint8), connectivity=8
        )
        kept = []
        for component in range(1, count):
            area = int(stats[component, cv2.CC_STAT_AREA])
            if area < self.options.mask_min_area:
                x, y = stats[component, cv2.CC_STAT_LEFT], stats[component, cv2.CC_STAT_TOP]
                report.add(
                    item,
                    "skipped",
                    f"{mask_name}: a component of {area} px at x={x}, y={y} is smaller than "
                    f"mask_min_area={self.options.mask_min_area}",
                )
                continue
            kept.append(component)
        if not kept:
            return []
        if self.options.mask_instances == "single":
            groups = [(np.isin(labels, kept), mask_name)]
        else:
            groups = [(labels == c, f"{mask_name}: component {i}") for i, c in enumerate(kept)]
        return [
            InstanceRecord(
                label=self.label,
                mask=mask,
                polygons=mask_polygons(mask),
                source=source,
            )
            for mask, source in groups
        ]


SOURCE = MaskImageSource
