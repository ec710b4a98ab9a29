"""Mask images as an annotation source (``--format masks``).

Two layouts:

- ``--masks DIR [--mask-suffix S]``: images under ``--images`` and masks under ``DIR`` paired
  by stem (any image suffix; see :mod:`d2seg.data.convert.label_images`), the person
  segmentation layout (``images/`` + ``masks/``);
- without ``--masks``, Carvana's: an image ``<id>.<jpg|jpeg|png|bmp|tif|tiff|webp>`` and the
  mask ``<id>_mask.gif`` or ``<id>_mask.png`` anywhere under the input folder (Carvana keeps
  them in ``train/`` and ``train_masks/``); when an id occurs in several folders, the mask in
  the image's own folder wins.

Images without a mask, masks without an image, ambiguous pairs and masks whose size differs
from the image's are reported and skipped (resized with ``--resize-masks``).

Binary masks (the default): foreground is every non-zero pixel, the palette index for palette
images (GIF, palette PNG), the value for grayscale (0/255 or 0/1 PNG), any colour channel for
RGB(A); one category, ``SourceOptions.mask_label`` (``--mask-label``; ``"object"`` when unset).
Multi-class masks: with ``--mask-classes a,b`` value ``k`` is class ``k`` (1-based, 0 is
background), with ``--palette`` the colour's row (a row named ``_background_`` is background).
Mask pixels are taken to match the image's stored pixels, so an image with an EXIF rotation is
reported and skipped rather than silently misaligned.

Connected components (8-connected) smaller than ``mask_min_area`` pixels are dropped and
reported; the rest are one instance each (``mask_instances="components"``) or one instance
together (``"single"``). Instances get COCO polygons from their outer contours
(``cv2.findContours``) that pycocotools fills back to exactly the mask, unless the mask has
holes: those are written as RLE.
``area`` and ``bbox`` always come from the mask itself.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

from d2seg.data.convert.label_images import (
    IMAGE_SUFFIXES,
    PairedLabelSource,
    ValueClasses,
    component_instances,
    ignore_region,
    label_map_instances,
)
from d2seg.data.convert.record import ConversionReport, ImageRecord
from d2seg.data.convert.source import SourceOptions
from d2seg.data.io import decode_image, open_image
from d2seg.errors import AnnotationError, DatasetError

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


class MaskImageSource(PairedLabelSource):
    """Images with binary or multi-class masks; see the module docstring for the layouts."""

    format_name = "masks"

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        self.label = DEFAULT_LABEL if options.mask_label is None else options.mask_label
        self.classes = None
        if options.class_names is not None:  # --mask-classes: values 1, 2, ...
            self.classes = ValueClasses.from_options(options, 1, None)
        elif self.palette is not None:  # the palette's rows: 0, 1, ...
            self.classes = ValueClasses.from_options(options, 0, self.palette)

    def pairs(self, report: ConversionReport | None = None) -> dict[str, Path]:
        if self.labels_dir is not None:
            return super().pairs(report)
        return self._index(report)

    def label_name(self, item: str) -> str:
        if self.labels_dir is not None:
            return super().label_name(item)
        return self._relative(self._index()[item])

    def read_values(self, item: str) -> np.ndarray:
        if self.classes is None:
            return read_mask(self.pairs()[item])
        return super().read_values(item)

    def categories(self) -> list[str]:
        return [self.label] if self.classes is None else self.classes.categories

    def stuff_categories(self) -> frozenset[str]:
        return frozenset()  # every mask class is a thing (see load)

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

    def labels(self, item: str) -> list[str]:
        return self.categories()

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        fitted = self.label_values(item, report)
        if fitted is None:
            return None
        values, height, width = fitted
        mask_name = self.label_name(item)
        record = ImageRecord(
            source=item, file_name=item, height=height, width=width,
            image_path=self.input_dir / item,
        )
        if self.classes is None:
            record.instances = component_instances(
                self.label, values.astype(bool), mask_name, item, self.options, report
            )
            return record
        self.classes.check(values, mask_name)
        every_class_a_thing = replace(self.options, thing_classes=tuple(self.classes.categories))
        record.instances = label_map_instances(
            values, self.classes, mask_name, item, every_class_a_thing, report
        )
        record.ignore_mask = ignore_region(values, self.classes)
        return record


SOURCE = MaskImageSource
