"""Ultralytics YOLO-seg datasets as an annotation source (``--format yolo``).

``--input DATASET``: ``DATASET/images/**/<stem>.<jpg|png|...>``, the label file of each at the
same place under ``DATASET/labels/`` with suffix ``.txt``, and the class names in
``DATASET/data.yaml`` (``names: [a, b]`` or ``names: {0: a, 1: b}``; any one ``*.yaml`` at the
top is taken when there is no ``data.yaml``). Item and output ``file_name`` are the image's
path under ``images/`` (``train/0001.jpg``), so ``--split`` draws splits anew; the
folders' own split names are not kept.

A label line is ``class x1 y1 x2 y2 ...``: a class index into ``names`` and a polygon of at
least 3 points in coordinates normalised by the image's width and height (``class cx cy w h``,
a detection box, is read as its rectangle). Each line is one instance, rasterised as Labelme
rasterises polygons; points outside 0..1 are kept in the polygon and cut off in the mask. A line
that is not that (not numbers, an odd or too small count, a class outside ``names``, NaN) is
reported with its file and line number and skipped (an error with ``--strict``); an image
without a label file has no objects, a label file without an image is reported.
"""

import math
from pathlib import Path

import numpy as np
import yaml

from d2seg.data.convert.label_images import IMAGE_SUFFIXES
from d2seg.data.convert.record import ConversionReport, ImageRecord, InstanceRecord
from d2seg.data.convert.source import AnnotationSource, SourceOptions
from d2seg.data.io import exif_orientation, open_image
from d2seg.data.labelme import LabelmeShape, rasterize_shape
from d2seg.errors import AnnotationError, DatasetError


def parse_line(line: str, num_classes: int) -> tuple[int, list[float]] | None:
    """``(class index, normalised polygon [x1, y1, ...])`` of one label line, None for a blank
    line; ValueError saying what is wrong."""
    fields = line.split()
    if not fields:
        return None
    if not fields[0].isdigit():
        raise ValueError(f"class {fields[0]!r} is not a class index (0, 1, ...)")
    class_index = int(fields[0])
    if class_index >= num_classes:
        raise ValueError(f"class {class_index} is not in data.yaml's {num_classes} names")
    try:
        coords = [float(v) for v in fields[1:]]
    except ValueError:
        bad = next(v for v in fields[1:] if not _is_float(v))
        raise ValueError(f"{bad!r} is not a number") from None
    if not all(math.isfinite(v) for v in coords):
        raise ValueError("a coordinate is NaN or infinite")
    if len(coords) == 4:  # a detection box: cx cy w h
        cx, cy, w, h = coords
        coords = [cx - w / 2, cy - h / 2, cx + w / 2, cy - h / 2, cx + w / 2, cy + h / 2,
                  cx - w / 2, cy + h / 2]
    if len(coords) % 2 or len(coords) < 6:
        raise ValueError(
            f"{len(coords)} coordinates: a polygon needs x y pairs of at least 3 points"
        )
    return class_index, coords


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_names(root: Path) -> list[str]:
    """The class names of a YOLO dataset's ``data.yaml`` (see the module docstring)."""
    candidates = [root / "data.yaml"]
    if not candidates[0].is_file():
        candidates = sorted(root.glob("*.yaml"))
    if len(candidates) != 1:
        raise DatasetError(
            f"{root}: no data.yaml with the class names; fix: add one with 'names: [a, b, ...]'"
        )
    path = candidates[0]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise AnnotationError(f"{path}: cannot read it as YAML ({e}); fix: repair it") from e
    names = raw.get("names") if isinstance(raw, dict) else None
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise AnnotationError(
            f"{path}: 'names' must be a list of class names (or {{0: name, ...}}); fix: e.g. "
            f"names: [person, car]"
        )
    return names


class YoloSegSource(AnnotationSource):
    """A YOLO-seg dataset folder (see the module docstring)."""

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        self.images_dir = self.input_dir / "images"
        self.labels_dir = self.input_dir / "labels"
        self._names: list[str] | None = None

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = read_names(self.input_dir)
        return self._names

    def label_file(self, item: str) -> Path:
        return (self.labels_dir / item).with_suffix(".txt")

    def items(self, report: ConversionReport) -> list[str]:
        if not self.images_dir.is_dir():
            raise DatasetError(
                f"--input {self.input_dir} has no images/ folder; fix: pass the YOLO dataset "
                f"folder (images/, labels/, data.yaml)"
            )
        self.names  # read (and check) data.yaml before converting anything
        images = self._image_items()
        stems = {Path(i).with_suffix("").as_posix() for i in images}
        if self.labels_dir.is_dir():
            for path in sorted(self.labels_dir.rglob("*.txt")):
                stem = path.relative_to(self.labels_dir).with_suffix("").as_posix()
                if stem not in stems and not any(part.startswith(".") for part in path.parts):
                    report.add(f"labels/{stem}.txt", "missing", "no image for this label file")
        if not images:
            raise DatasetError(f"{self.images_dir}: no images; fix: put the images there")
        return images

    def _image_items(self) -> list[str]:
        found = []
        for path in sorted(self.images_dir.rglob("*")):
            relative = path.relative_to(self.images_dir)
            if path.suffix.lower() in IMAGE_SUFFIXES and not any(
                part.startswith(".") for part in relative.parts
            ):
                found.append(relative.as_posix())
        return found

    def categories(self) -> list[str]:
        return self.names

    def labels(self, item: str) -> list[str]:
        return self.names

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        image_path = self.images_dir / item
        image = open_image(image_path, str(image_path), error=AnnotationError)
        if exif_orientation(image) != 1:
            report.add(item, "skipped", "EXIF rotation: unclear whether the normalised polygons "
                       "follow the stored or the rotated pixels; re-save it without EXIF rotation")
            return None
        width, height = image.size
        record = ImageRecord(
            source=item, file_name=item, height=height, width=width, image_path=image_path
        )
        label_file = self.label_file(item)
        if not label_file.is_file():
            return record
        name = f"labels/{Path(item).with_suffix('.txt').as_posix()}"
        try:
            lines = label_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise AnnotationError(
                f"{name}: cannot read it ({e}); fix: save it as UTF-8 text"
            ) from e
        for number, line in enumerate(lines, start=1):
            where = f"{name}: line {number}"
            try:
                parsed = parse_line(line, len(self.names))
            except ValueError as e:
                report.add(where, "skipped", str(e))
                continue
            if parsed is None:
                continue
            class_index, coords = parsed
            polygon = (np.array(coords).reshape(-1, 2) * (width, height)).ravel().tolist()
            shape = LabelmeShape(number - 1, self.names[class_index], "polygon",
                                 np.array(polygon).reshape(-1, 2), None)
            record.instances.append(InstanceRecord(
                self.names[class_index], rasterize_shape(shape, height, width), [polygon], where
            ))
        return record


SOURCE = YoloSegSource
