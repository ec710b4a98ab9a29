"""VGG Image Annotator (VIA) projects as an annotation source (``--format via``).

Every ``*.json`` under the input folder (hidden folders skipped) that is a VIA file is read:

- VIA 1.x export (Matterport's balloon set): a dict keyed ``filename + size`` whose values hold
  ``filename`` and ``regions``, a dict keyed ``"0"``, ``"1"``, ...;
- VIA 2.x: the same with ``regions`` as a list, or a project file that wraps it in
  ``_via_img_metadata``.

Other JSON files are reported as skipped. An item is one image, named by its path relative to
the input folder (``filename`` is relative to the JSON file's folder, as VIA writes it); that
path is also the output ``file_name``. Images that do not exist are reported as ``missing`` and
left out of the items. Image sizes are read from the images (VIA does not store them).

Each region becomes one instance, read as the equivalent Labelme shape so that masks are
rasterised, clipped and reported exactly as for Labelme (:mod:`d2seg.data.labelme`):
``polygon`` (VIA 1.x closes every polygon by repeating its first point at the end: a valid
spelling, normalised silently by dropping the repeat) and ``rect`` → COCO polygons; ``ellipse``
→ a 64-point polygon; ``circle``, ``polyline`` (10 px wide line) and ``point`` → RLE.

Class of a region, first match wins:

1. the region attribute ``label``, ``class`` or ``name`` (in that order) when it is a non-empty
   string;
2. the implicit class: ``SourceOptions.mask_label`` when it is set (``--mask-label NAME``),
   otherwise ``"balloon"`` — VIA files without region attributes are almost always the
   balloon set of Matterport's and Detectron2's tutorials, which then needs no flag.
"""

import math
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from d2seg.data.convert.from_labelme import LabelmeSource
from d2seg.data.convert.record import ConversionReport, ImageRecord
from d2seg.data.convert.source import SourceOptions
from d2seg.data.labelme import LabelmeAnnotation, LabelmeShape, load_json, resolve_image_path
from d2seg.errors import AnnotationError, DatasetError

IMPLICIT_LABEL = "balloon"
LABEL_ATTRIBUTES = ("label", "class", "name")
ELLIPSE_POINTS = 64


@dataclass
class ViaEntry:
    """One image entry of a VIA file.

    Attributes:
        json_path: the VIA file.
        filename: ``filename`` relative to the VIA file's folder, with ``/`` separators.
        regions: the regions, in file order (VIA 1.x dict values or VIA 2.x list items).
    """

    json_path: Path
    filename: str
    regions: list[Any]


def _via_entries(raw: Any) -> dict | None:
    """The ``filename+size → entry`` dict of a VIA 1.x/2.x file, or None if not VIA."""
    if isinstance(raw, dict) and isinstance(raw.get("_via_img_metadata"), dict):
        raw = raw["_via_img_metadata"]
    if not isinstance(raw, dict) or not raw:
        return None
    if all(isinstance(v, dict) and "filename" in v and "regions" in v for v in raw.values()):
        return raw
    return None


def _item_name(json_rel_dir: PurePosixPath, filename: str) -> str:
    """Output-safe relative path of an image: never absolute, never leaving the folder."""
    name = PurePosixPath(posixpath.normpath(json_rel_dir / filename))
    if name.is_absolute() or ".." in name.parts:
        name = json_rel_dir / name.name
    return name.as_posix()


def _finite_numbers(values: list, what: str, where: str) -> list[float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or not all(
        math.isfinite(v) for v in values
    ):
        raise AnnotationError(
            f"{where}: shape_attributes {what} must be finite numbers, got {values}; fix: redraw "
            f"or delete the region"
        )
    return [float(v) for v in values]


def _numbers(attributes: dict, keys: tuple[str, ...], where: str) -> list[float]:
    return _finite_numbers([attributes.get(k) for k in keys], "/".join(keys), where)


def _point_lists(attributes: dict, where: str) -> np.ndarray:
    xs, ys = attributes.get("all_points_x"), attributes.get("all_points_y")
    if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys)):
        raise AnnotationError(
            f"{where}: all_points_x/all_points_y must be two lists of the same length; fix: "
            f"redraw or delete the region"
        )
    xy = _finite_numbers(xs + ys, "all_points_x/all_points_y", where)
    return np.asarray(xy, dtype=np.float64).reshape(2, -1).T


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, theta: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, ELLIPSE_POINTS, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    cos, sin = math.cos(theta), math.sin(theta)
    return np.stack([cx + x * cos - y * sin, cy + x * sin + y * cos], axis=1)


def _shape_geometry(attributes: dict, where: str) -> tuple[str, np.ndarray]:
    """(Labelme shape_type, points K×2) of a region's ``shape_attributes``."""
    kind = attributes.get("name")
    if kind == "polygon":
        points = _point_lists(attributes, where)
        # VIA 1.x closes polygons explicitly; Labelme polygons are implicitly closed.
        closed = len(points) > 3 and bool((points[0] == points[-1]).all())
        return "polygon", points[:-1] if closed else points
    if kind == "polyline":
        return "linestrip", _point_lists(attributes, where)
    if kind == "rect":
        x, y, w, h = _numbers(attributes, ("x", "y", "width", "height"), where)
        return "rectangle", np.array([[x, y], [x + w, y + h]])
    if kind == "circle":
        cx, cy, r = _numbers(attributes, ("cx", "cy", "r"), where)
        return "circle", np.array([[cx, cy], [cx + r, cy]])
    if kind == "ellipse":
        cx, cy, rx, ry = _numbers(attributes, ("cx", "cy", "rx", "ry"), where)
        theta = _numbers(attributes, ("theta",), where)[0] if "theta" in attributes else 0.0
        return "polygon", _ellipse_points(cx, cy, rx, ry, theta)
    if kind == "point":
        return "point", np.array([_numbers(attributes, ("cx", "cy"), where)])
    # Left to LabelmeSource, which reports unsupported shape types as skipped.
    return str(kind), np.zeros((0, 2))


class ViaSource(LabelmeSource):
    """VIA 1.x/2.x JSON files and their images; regions are read as Labelme shapes."""

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        self.implicit_label = IMPLICIT_LABEL if options.mask_label is None else options.mask_label
        self._entries: dict[str, ViaEntry] | None = None

    def __getstate__(self) -> dict:
        # Worker processes re-read the VIA files instead of receiving every region pickled.
        return {**self.__dict__, "_entries": None}

    def _index(self, report: ConversionReport | None = None) -> dict[str, ViaEntry]:
        """Item name → entry, over every VIA file; problems go to ``report`` when given."""
        if self._entries is not None:
            return self._entries
        json_files = self.input_files("*.json", "the VIA .json file(s)")
        report = report if report is not None else ConversionReport()
        entries: dict[str, ViaEntry] = {}
        via_files = 0
        for json_path in json_files:
            json_rel = json_path.relative_to(self.input_dir)
            via = _via_entries(load_json(json_path))
            if via is None:
                report.add(json_rel, "skipped", "not a VIA file (no entries with filename/regions)")
                continue
            via_files += 1
            for key, raw in via.items():
                self._add_entry(entries, json_path, json_rel, key, raw, report)
        if not via_files:
            raise DatasetError(
                f"{self.input_dir}: no VIA annotation file found (looked at {len(json_files)} "
                f".json file(s)); fix: point --input at the folder holding the VIA export "
                f"(e.g. via_region_data.json)"
            )
        if not entries:
            raise DatasetError(
                f"{self.input_dir}: none of the images named in the VIA file(s) exist; fix: put "
                f"the images next to the VIA .json file, as VIA's 'filename' is relative to it"
            )
        self._entries = entries
        return entries

    def _add_entry(
        self,
        entries: dict[str, ViaEntry],
        json_path: Path,
        json_rel: Path,
        key: str,
        raw: dict,
        report: ConversionReport,
    ) -> None:
        filename, regions = raw["filename"], raw["regions"]
        if not isinstance(filename, str) or not filename:
            raise AnnotationError(
                f"{json_path}: entry '{key}' has filename {filename!r}; fix: set the image's name"
            )
        filename = filename.replace("\\", "/")  # annotated on Windows
        if isinstance(regions, dict):
            regions = list(regions.values())
        if not isinstance(regions, list):
            raise AnnotationError(
                f"{json_path}: '{filename}' regions is a {type(regions).__name__}; fix: re-export "
                f"the annotations from VIA"
            )
        item = _item_name(PurePosixPath(json_rel.parent.as_posix()), filename)
        if item in entries:
            report.add(json_rel, "skipped", f"'{filename}' is annotated twice; the first is kept")
            return
        image = json_path.parent / filename
        if not image.is_file() and not (json_path.parent / PurePosixPath(filename).name).is_file():
            report.add(json_rel, "missing", f"image '{filename}' not found at {image}")
            return
        entries[item] = ViaEntry(json_path, filename, regions)

    def _region_label(self, region: dict) -> str:
        attributes = region.get("region_attributes")
        if isinstance(attributes, dict):
            for key in LABEL_ATTRIBUTES:
                value = attributes.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
        return self.implicit_label

    def items(self, report: ConversionReport) -> list[str]:
        return sorted(self._index(report))

    def labels(self, item: str) -> list[str]:
        return [self._region_label(r) for r in self._index()[item].regions if isinstance(r, dict)]

    def _annotation(
        self, item: str, entry: ViaEntry, report: ConversionReport
    ) -> LabelmeAnnotation:
        shapes = []
        for index, region in enumerate(entry.regions):
            where = f"{entry.json_path}: '{entry.filename}' regions[{index}]"
            attributes = region.get("shape_attributes") if isinstance(region, dict) else None
            if not isinstance(attributes, dict):
                raise AnnotationError(
                    f"{where} has no shape_attributes object; fix: redraw or delete the region"
                )
            shape_type, points = _shape_geometry(attributes, where)
            if shape_type == "polygon" and len(points) < 3:
                report.add(item, "skipped", f"a polygon of {len(points)} point(s)", index)
                continue
            shapes.append(
                LabelmeShape(index, self._region_label(region), shape_type, points, group_id=None)
            )
        return LabelmeAnnotation(
            path=entry.json_path,
            shapes=shapes,
            image_path=entry.filename,
            image_data=None,
            height=None,
            width=None,
        )

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        entry = self._index()[item]
        annotation = self._annotation(item, entry, report)
        # Not reported when found by name only: _add_entry accepted that image already (a VIA
        # filename may be a path on the annotating machine).
        image_file, _ = resolve_image_path(
            annotation, self.input_dir, self.options.allow_outside_root
        )
        return self._to_record(item, annotation, image_file, report)


SOURCE = ViaSource
