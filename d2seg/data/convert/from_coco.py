"""A COCO instances json from another tool (CVAT, Roboflow, ...) as a source (``--format coco``).

``--coco instances.json --images DIR [--prune-categories]``: the json is checked with
:func:`d2seg.data.coco.validate` (first broken rule → one error naming the entry), after
dropping polygons of fewer than 3 points (degenerate, reported). Then per annotation:

- ``bbox`` and ``area`` are recomputed from the segmentation (the pixel count and the box of
  the rasterised mask, as every d2seg source writes them); each one that disagreed (box off by
  more than 1 px, or area by more than 10 %: a polygon's own area and its pixel count legitimately
  differ by a few percent) is reported as ``fixed`` with the old and new values;
- annotations whose segmentation covers no pixel of the image are dropped and reported;
- ``iscrowd: 1`` regions become ignore (255) in the semantic map, as COCO evaluation treats
  them, and are not instances.

Categories keep their order (sorted ids) and are renumbered 1..N; ``--prune-categories`` drops
those no annotation uses. Images missing from ``--images``, or whose size differs from the
json's ``height``/``width``, are reported and skipped.
"""

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from d2seg.data.coco import contiguous_categories, validate
from d2seg.data.convert.label_images import image_size
from d2seg.data.convert.record import ConversionReport, ImageRecord, InstanceRecord
from d2seg.data.convert.source import AnnotationSource, SourceOptions
from d2seg.data.io import read_json
from d2seg.errors import AnnotationError, ConfigError, DatasetError

# |Δ| beyond which an exported bbox side (pixels) or area (fraction) counts as wrong.
BBOX_TOLERANCE = 1.0
AREA_TOLERANCE = 0.10


def segmentation_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """The compressed pycocotools RLE of a validated COCO segmentation (polygons merged)."""
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


def disagreement(annotation: dict, area: float, bbox: list[float]) -> str | None:
    """What is wrong with an annotation's own ``bbox``/``area`` (None when both agree with the
    recomputed ``area`` and ``bbox``)."""
    problems = []
    old_bbox = annotation.get("bbox")
    if old_bbox is None or np.abs(np.subtract(old_bbox, bbox)).max() > BBOX_TOLERANCE:
        problems.append(f"bbox {old_bbox} → {[round(v, 2) for v in bbox]}")
    old_area = annotation.get("area")
    tolerance = AREA_TOLERANCE * max(area, 1)
    if not isinstance(old_area, (int, float)) or abs(old_area - area) > tolerance:
        problems.append(f"area {old_area} → {area:g}")
    return ", ".join(problems) or None


class CocoFileSource(AnnotationSource):
    """A COCO instances json + its images folder (see the module docstring)."""

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        if options.coco_file is None:
            raise ConfigError("--format coco needs the json; fix: pass --coco instances.json")
        self.coco_path = Path(options.coco_file)
        self._index: dict[str, tuple[dict, list[tuple[int, dict]]]] | None = None
        self._categories: list[str] = []
        self._names: dict[int, str] = {}

    def _read(self, report: ConversionReport) -> dict:
        if self._index is not None:
            return self._index
        if not self.input_dir.is_dir():
            raise DatasetError(f"--images {self.input_dir} is not a folder; fix: pass the images")
        name = self.coco_path.name
        coco = read_json(self.coco_path, "COCO json", error=AnnotationError,
                         missing_fix="correct the --coco path")
        dropped = set()
        if isinstance(coco, dict) and isinstance(coco.get("annotations"), list):
            for i, annotation in enumerate(coco["annotations"]):
                if self._drop_short_polygons(annotation, f"{name}: annotations[{i}]", report):
                    dropped.add(i)
                    # a valid stand-in, so the validator's indices stay those of the file
                    annotation["segmentation"] = [[0.0] * 6]
        validate(coco, name)
        names, _ = contiguous_categories(coco)
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise AnnotationError(
                f"{name}: two categories are named {duplicate!r}; fix: merge or rename them"
            )
        self._names = {c["id"]: c["name"] for c in coco["categories"]}
        used = {a["category_id"] for i, a in enumerate(coco["annotations"]) if i not in dropped}
        self._categories = [
            n for i, n in sorted(self._names.items())
            if i in used or not self.options.prune_categories
        ]
        by_image: dict[int, list[tuple[int, dict]]] = {im["id"]: [] for im in coco["images"]}
        for i, annotation in enumerate(coco["annotations"]):
            if i not in dropped:
                by_image[annotation["image_id"]].append((i, annotation))
        index = {}
        for image in coco["images"]:
            file_name = image["file_name"]
            if not (self.input_dir / file_name).is_file():
                report.add(file_name, "missing", f"in {name} but not in {self.input_dir}")
            elif file_name in index:
                raise AnnotationError(
                    f"{name}: two images have file_name {file_name!r}; fix: merge them"
                )
            else:
                index[file_name] = (image, by_image[image["id"]])
        if not index:
            raise DatasetError(
                f"{self.input_dir}: none of the {len(coco['images'])} images of {name} is there; "
                f"fix: pass the images folder the json's file_name values are relative to"
            )
        self._index = index
        return index

    @staticmethod
    def _drop_short_polygons(annotation: dict, where: str, report: ConversionReport) -> bool:
        """Drop (and report) the polygons of fewer than 3 points; True when none is left."""
        segmentation = annotation.get("segmentation") if isinstance(annotation, dict) else None
        if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
            return False
        kept = [p for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
        if len(kept) < len(segmentation):
            dropped = len(segmentation) - len(kept)
            whole = " (its only polygon(s): the annotation is dropped)" if not kept else ""
            report.add(where, "skipped", f"{dropped} polygon(s) of fewer than 3 points{whole}")
            annotation["segmentation"] = kept
        return bool(segmentation) and not kept

    def items(self, report: ConversionReport) -> list[str]:
        return sorted(self._read(report))

    def categories(self) -> list[str]:
        self._read(ConversionReport())
        return self._categories

    def labels(self, item: str) -> list[str]:
        annotations = self._read(ConversionReport())[item][1]
        return sorted({self._names[a["category_id"]] for _, a in annotations})

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        image, annotations = self._read(report)[item]
        name = self.coco_path.name
        size = image_size(self.input_dir / item, item, name, report)
        if size is None:
            return None
        height, width = size
        if (image.get("height", height), image.get("width", width)) != (height, width):
            report.add(
                item, "skipped",
                f"{name} gives it {image.get('width')}×{image.get('height')}, the file is "
                f"{width}×{height}",
            )
            return None
        record = ImageRecord(
            source=item, file_name=item, height=height, width=width,
            image_path=self.input_dir / item,
        )
        crowd = []
        for i, annotation in annotations:
            where = f"{name}: annotations[{i}]"
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, dict) and list(segmentation["size"]) != [height, width]:
                report.add(where, "skipped", f"RLE size {segmentation['size']} is not the "
                           f"image's [{height}, {width}]")
                continue
            rle = segmentation_rle(segmentation, height, width)
            area, bbox = float(mask_util.area(rle)), mask_util.toBbox(rle).tolist()
            if area == 0:
                report.add(where, "skipped", "its segmentation covers no pixel of the image")
                continue
            if annotation.get("iscrowd", 0):
                crowd.append(rle)
                continue
            fixed = disagreement(annotation, area, bbox)
            if fixed is not None:
                report.add(where, "fixed", f"recomputed from the segmentation: {fixed}")
            polygons = segmentation if isinstance(segmentation, list) else None
            record.instances.append(InstanceRecord(
                self._names[annotation["category_id"]], None, polygons, where, rle=rle
            ))
        if crowd:
            record.ignore_mask = mask_util.decode(mask_util.merge(crowd)).astype(bool)
        return record


SOURCE = CocoFileSource
