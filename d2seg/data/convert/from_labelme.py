"""Labelme folders as an annotation source (``--format labelme``, the default).

Every ``*.json`` under the input folder (sub-folders included, hidden ones skipped) is one item.
Reading, validation and rasterisation are in :mod:`d2seg.data.labelme`; this module turns a file
into an :class:`ImageRecord`:

- shapes with the same ``(label, group_id)`` (group_id not None) are one instance: the union of
  their masks, written as several polygons when all are polygons/rectangles, else as RLE;
- ``__ignore__`` shapes become the record's ignore region (only where no later shape is drawn
  over them, as in Labelme's own ``labelme2voc.py``) and are not instances;
- ``_background_`` shapes and unsupported shape types are skipped and reported;
- points outside the image are clipped in the written polygons and reported; the mask (and so
  ``area``/``bbox``) is rasterised from the original points, as Labelme does.
"""

from pathlib import Path, PurePosixPath

import numpy as np

from d2seg.data.convert.record import ConversionReport, ImageRecord, InstanceRecord
from d2seg.data.convert.source import AnnotationSource
from d2seg.data.labelme import (
    BACKGROUND_LABEL,
    IGNORE_LABEL,
    POLYGON_SHAPE_TYPES,
    SUPPORTED_SHAPE_TYPES,
    LabelmeAnnotation,
    LabelmeShape,
    load_image,
    load_json,
    point_extent,
    rasterize_shape,
    read_labelme,
    resolve_image_path,
    shape_list,
    shape_polygon,
)
from d2seg.errors import DatasetError


class LabelmeSource(AnnotationSource):
    """A folder of Labelme JSON files (any Labelme version) and their images."""

    def items(self, report: ConversionReport) -> list[str]:
        found = [
            p.relative_to(self.input_dir).as_posix()
            for p in self.input_files("*.json", "the Labelme .json files")
        ]
        if not found:
            raise DatasetError(
                f"{self.input_dir}: no Labelme .json files found; fix: point --input at the "
                f"folder holding them, or choose --format via/masks for other annotations"
            )
        return sorted(found)

    def labels(self, item: str) -> list[str]:
        # Only the labels are needed here: skip validating points and decoding images.
        path = self.input_dir / item
        shapes = shape_list(load_json(path), path)
        return [
            s["label"] for s in shapes if isinstance(s, dict) and isinstance(s.get("label"), str)
        ]

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        annotation = read_labelme(self.input_dir / item)
        image_file = None
        if annotation.image_data is None:
            image_file, by_name = resolve_image_path(
                annotation, self.input_dir, self.options.allow_outside_root
            )
            if by_name:
                report.add(
                    item,
                    "fixed",
                    f"imagePath '{annotation.image_path}' not found; used {image_file.name} next "
                    f"to the JSON file",
                )
        return self._to_record(item, annotation, image_file, report)

    def _to_record(
        self,
        item: str,
        annotation: LabelmeAnnotation,
        image_file: Path | None,
        report: ConversionReport,
    ) -> ImageRecord:
        """The record of a parsed annotation; ``image_file`` None = embedded ``imageData``.

        ``file_name`` is ``item`` with the image's suffix, or ``.png`` when the pixels are
        written from memory (embedded data, EXIF-rotated files).
        """
        image = load_image(annotation, image_file)
        suffix = image_file.suffix if image_file is not None and image.pixels is None else ".png"
        record = ImageRecord(
            source=item,
            file_name=PurePosixPath(item).with_suffix(suffix).as_posix(),
            height=image.height,
            width=image.width,
            image=image.pixels,
            image_path=image_file if image.pixels is None else None,
        )
        self._add_shapes(annotation, item, record, report)
        return record

    def _add_shapes(
        self,
        annotation: LabelmeAnnotation,
        item: str,
        record: ImageRecord,
        report: ConversionReport,
    ) -> None:
        height, width = record.height, record.width
        groups: dict[tuple, list[tuple[LabelmeShape, np.ndarray]]] = {}
        ignore = None
        for shape in annotation.shapes:
            if shape.shape_type not in SUPPORTED_SHAPE_TYPES:
                report.add(
                    item,
                    "skipped",
                    f"shape_type '{shape.shape_type}' is not supported (supported: "
                    f"{', '.join(SUPPORTED_SHAPE_TYPES)})",
                    shape.index,
                )
                continue
            if shape.label == BACKGROUND_LABEL:
                report.add(item, "skipped", f"'{BACKGROUND_LABEL}' is not a category", shape.index)
                continue
            x0, y0, x1, y1 = point_extent(shape)
            # Shapes far outside were drawn on another image (and would be slow to rasterise).
            if x0 < -width or y0 < -height or x1 > 2 * width or y1 > 2 * height:
                report.add(
                    item,
                    "skipped",
                    f"points lie far outside the {width}×{height} image (drawn on another "
                    f"image?); fix: delete or redraw the shape",
                    shape.index,
                )
                continue
            mask = rasterize_shape(shape, height, width)
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                report.add(item, "clipped", "points outside the image were clipped", shape.index)
                # after rasterising: the mask comes from the original points, as in Labelme
                shape.points = shape.points.clip((0, 0), (width, height))
            if shape.label == IGNORE_LABEL:
                ignore = mask if ignore is None else ignore | mask
                continue
            if ignore is not None:
                ignore &= ~mask  # a later shape is drawn over the ignore region
            alone = shape.group_id is None
            key = (shape.label, shape.index if alone else ("group", shape.group_id))
            groups.setdefault(key, []).append((shape, mask))
        record.ignore_mask = ignore if ignore is not None and ignore.any() else None
        for (label, _), members in groups.items():
            instance = self._instance(item, label, members, report)
            if instance is not None:
                record.instances.append(instance)

    @staticmethod
    def _instance(
        item: str,
        label: str,
        members: list[tuple[LabelmeShape, np.ndarray]],
        report: ConversionReport,
    ) -> InstanceRecord | None:
        indices = [shape.index for shape, _ in members]
        mask = members[0][1]
        for _, other in members[1:]:
            mask = mask | other
        if not mask.any():
            report.add(item, "skipped", "the shape lies outside the image", indices[0])
            return None
        polygons = None
        if all(shape.shape_type in POLYGON_SHAPE_TYPES for shape, _ in members):
            polygons = [shape_polygon(shape) for shape, _ in members]
        return InstanceRecord(
            label=label,
            mask=mask,
            polygons=polygons,
            source=f"{item}: shapes[{','.join(map(str, indices))}]",
        )


SOURCE = LabelmeSource
