"""The interface every annotation source (Labelme, VIA, mask images) implements.

``--format NAME`` on the command line selects the module ``d2seg.data.convert.from_NAME``,
whose ``SOURCE`` attribute is an :class:`AnnotationSource` subclass. Sources are built from
plain paths and options so that ``--workers`` processes can rebuild them (they are pickled).
"""

import fnmatch
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from d2seg.data.convert.record import ConversionReport, ImageRecord
from d2seg.errors import DatasetError


@dataclass(frozen=True)
class SourceOptions:
    """Options that only some sources use; every source accepts all of them.

    Attributes:
        allow_outside_root: accept image paths that resolve outside the input folder.
        mask_label: the class of annotations that name none: every mask of ``--format masks``
            (default there ``"object"``), VIA regions without a label attribute (default there
            ``"balloon"``). ``None`` = each source's default.
        mask_instances: "components" = one instance per connected component of a mask,
            "single" = one instance per mask file.
        mask_min_area: connected components smaller than this (pixels) are dropped and reported.
        labels_dir: the folder of label images paired with the images by stem (``--labels-dir``
            of ``semantic`` and ``raster``, ``--masks`` of ``masks``); None = ``masks``' own
            ``<id>_mask.gif`` layout.
        label_suffix: what follows the image's stem in its label image's name (``_L``,
            ``_gtFine_labelIds``, ``_mask``), before the suffix.
        class_names: the class of each label value 0, 1, 2, ... (``semantic``, ``raster``:
            ``--class-names``; ``masks``: ``--mask-classes``, values 1.. with 0 background;
            ``kaggle-rle``: the names of ClassId 1, 2, ...). A name in ``RESERVED_LABELS``
            (``_background_``) marks background.
        palette: a ``.csv``/``.json`` table class → RGB for colour-coded label images.
        ignore_value: the label value (or, with a palette, the palette row's value) that means
            "ignore" (CamVid 11, Cityscapes 255); written as 255.
        thing_classes: classes whose connected components are also instances (``semantic``);
            the other classes are stuff (semantic map only).
        resize_masks: label images of another size than their image are resized (nearest)
            instead of reported and skipped.
        copy_images: copy images instead of hard-linking them.
        csv: the ``kaggle-rle`` CSV; rle_order: ``"column"``/``"row"``, or None = from the
            CSV's header.
        coco_file: the COCO json of ``--format coco``; prune_categories: drop categories no
            annotation uses.
        patch, stride: ``raster`` patch side and step in pixels (stride None = patch).
    """

    allow_outside_root: bool = False
    mask_label: str | None = None
    mask_instances: Literal["components", "single"] = "components"
    mask_min_area: int = 16
    labels_dir: str | None = None
    label_suffix: str = ""
    class_names: tuple[str, ...] | None = None
    palette: str | None = None
    ignore_value: int | None = None
    thing_classes: tuple[str, ...] = ()
    resize_masks: bool = False
    copy_images: bool = False
    csv: str | None = None
    rle_order: Literal["column", "row"] | None = None
    coco_file: str | None = None
    prune_categories: bool = False
    patch: int = 256
    stride: int | None = None


class AnnotationSource(ABC):
    """Lists the annotated items of an input folder and turns each into an ImageRecord."""

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        self.input_dir = Path(input_dir)
        self.options = options

    def input_files(self, pattern: str, expected: str) -> list[Path]:
        """Sorted files under the input folder whose name matches ``pattern`` (e.g. ``"*.json"``).

        Hidden files and folders (``.git``, ``.ipynb_checkpoints``, ...) are skipped and not
        descended into. ``expected`` says what the folder should hold, for the DatasetError
        raised when ``input_dir`` is not a folder (e.g. "the Labelme .json files").
        """
        if not self.input_dir.is_dir():
            raise DatasetError(
                f"--input {self.input_dir} is not a folder; fix: pass the folder that holds "
                f"{expected}"
            )
        found = []
        for folder, subfolders, files in os.walk(self.input_dir):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            found.extend(
                Path(folder, name)
                for name in files
                if not name.startswith(".") and fnmatch.fnmatchcase(name, pattern)
            )
        return sorted(found)

    @abstractmethod
    def items(self, report: ConversionReport) -> list[str]:
        """Stable, sorted ids of the annotated items (the unit of splits and progress).

        Problems that concern the whole input (e.g. an entry whose image is missing) are added
        to ``report``; a folder with nothing to convert raises ``DatasetError``.
        """

    def categories(self) -> list[str] | None:
        """The category names in id order when the input defines them (class names, a COCO
        file's categories, ``data.yaml``), else None (collected from :meth:`labels`)."""
        return None

    def stuff_categories(self) -> frozenset[str]:
        """Categories whose regions are "stuff": drawn in the semantic map and as one panoptic
        segment per image (``isthing: 0``), never COCO instances. Default: none."""
        return frozenset()

    def summary(self) -> dict:
        """Facts about the input to add to the conversion summary (e.g. the RLE order used)."""
        return {}

    @abstractmethod
    def labels(self, item: str) -> list[str]:
        """The category names used by ``item`` (to collect categories when no labels file)."""

    @abstractmethod
    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        """Read one item; ``None`` means it was skipped entirely (and the reason reported).

        Raises ``AnnotationError`` naming the file (and shape) for input that cannot be read.
        """
