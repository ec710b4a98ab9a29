"""Label-map folders as an annotation source (``--format semantic``): CamVid, Cityscapes, VOC.

``--images DIR --labels-dir DIR [--label-suffix _L] --class-names a,b,c | --palette
classes.csv [--ignore-value 11] [--thing-classes a,b]``: each image is paired with its label
image by stem (see :mod:`d2seg.data.convert.label_images`); label value ``v`` (the pixel value,
palette index, or the palette row of its colour) is class ``class_names[v]``, ``--ignore-value``
becomes 255 (ignore), a class named ``_background_`` becomes 0 (background).

Every class present in an image is a stuff region: drawn in the semantic map (value = its
category id, 1..N in class order), not a COCO annotation. Classes in ``--thing-classes`` are
also split into connected components (8-connected, smaller than ``mask_min_area`` dropped and
reported), each a COCO instance and a panoptic segment, so Mask R-CNN and the panoptic model
train on the same folder.
"""

from d2seg.data.convert.label_images import (
    PairedLabelSource,
    ValueClasses,
    ignore_region,
    label_map_instances,
)
from d2seg.data.convert.record import ConversionReport, ImageRecord
from d2seg.data.convert.source import SourceOptions
from d2seg.errors import ConfigError


class SemanticLabelSource(PairedLabelSource):
    """Images + class-index (or colour) label images; stuff classes, optional thing classes."""

    def __init__(self, input_dir, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        self.classes = ValueClasses.from_options(options, 0, self.palette)
        unknown = set(options.thing_classes) - set(self.classes.categories)
        if unknown:
            raise ConfigError(
                f"--thing-classes {','.join(sorted(unknown))}: not a class; fix: choose among "
                f"{', '.join(self.classes.categories)}"
            )

    def categories(self) -> list[str]:
        return self.classes.categories

    def labels(self, item: str) -> list[str]:
        return self.classes.categories

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        fitted = self.label_values(item, report)
        if fitted is None:
            return None
        values, height, width = fitted
        label_name = self.label_name(item)
        self.classes.check(values, label_name)
        record = ImageRecord(
            source=item, file_name=item, height=height, width=width,
            image_path=self.input_dir / item,
        )
        record.instances = label_map_instances(
            values, self.classes, label_name, item, self.options, report
        )
        record.ignore_mask = ignore_region(values, self.classes)
        return record


SOURCE = SemanticLabelSource
