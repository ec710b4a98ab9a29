"""The interface every annotation source (Labelme, VIA, mask images) implements.

``--format NAME`` on the command line selects the module ``d2seg.data.convert.from_NAME``,
whose ``SOURCE`` attribute is an :class:`AnnotationSource` subclass. Sources are built from
plain paths and options so that ``--workers`` processes can rebuild them (they are pickled).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from d2seg.data.convert.record import ConversionReport, ImageRecord


@dataclass(frozen=True)
class SourceOptions:
    """Options that only some sources use; every source accepts all of them.

    Attributes:
        allow_outside_root: accept image paths that resolve outside the input folder.
        mask_label: category name of mask-image sources (one class per mask file).
        mask_instances: "components" = one instance per connected component of a mask,
            "single" = one instance per mask file.
        mask_min_area: connected components smaller than this (pixels) are dropped and reported.
    """

    allow_outside_root: bool = False
    mask_label: str = "object"
    mask_instances: Literal["components", "single"] = "components"
    mask_min_area: int = 16


class AnnotationSource(ABC):
    """Lists the annotated items of an input folder and turns each into an ImageRecord."""

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        self.input_dir = Path(input_dir)
        self.options = options

    @abstractmethod
    def items(self, report: ConversionReport) -> list[str]:
        """Stable, sorted ids of the annotated items (the unit of splits and progress).

        Problems that concern the whole input (e.g. an entry whose image is missing) are added
        to ``report``; a folder with nothing to convert raises ``DatasetError``.
        """

    @abstractmethod
    def labels(self, item: str) -> list[str]:
        """The category names used by ``item`` (to collect categories when no labels file)."""

    @abstractmethod
    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        """Read one item; ``None`` means it was skipped entirely (and the reason reported).

        Raises ``AnnotationError`` naming the file (and shape) for input that cannot be read.
        """
