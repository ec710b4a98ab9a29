"""Where the converter's outputs live: one object the writers and the dataset loaders share.

Layout of a converted folder ``OUT`` (``tools/convert_labelme.py --output OUT``)::

    OUT/images/<file_name>              the images (``file_name`` is relative to it)
    OUT/annotations/<split>.json        COCO instances
    OUT/sem_seg/<split>/<stem>.png      uint8 semantic maps: 0 background, 1..N classes, 255 ignore
    OUT/panoptic/<split>.json           COCO panoptic
    OUT/panoptic/<split>/<stem>.png     RGB panoptic segment ids
    OUT/report.json                     what was skipped, clipped or fixed, and the summary

``<stem>.png`` is :meth:`ConvertedLayout.label_map_name` of the image's ``file_name``.
"""

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# The "ignore" value of the semantic maps (void in the panoptic PNGs).
IGNORE_VALUE = 255


@dataclass(frozen=True)
class ConvertedLayout:
    """The paths of the converted folder ``root`` (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    def annotations_json(self, split: str) -> Path:
        return self.root / "annotations" / f"{split}.json"

    def sem_seg_dir(self, split: str) -> Path:
        return self.root / "sem_seg" / split

    def panoptic_json(self, split: str) -> Path:
        return self.root / "panoptic" / f"{split}.json"

    def panoptic_dir(self, split: str) -> Path:
        return self.root / "panoptic" / split

    @staticmethod
    def label_map_name(file_name: str) -> str:
        """The semantic and panoptic PNG of an output image: ``file_name`` with suffix ``.png``.

        Relative to :meth:`sem_seg_dir` and :meth:`panoptic_dir`, as ``file_name`` is to
        :attr:`images_dir` (POSIX separators).
        """
        return PurePosixPath(file_name).with_suffix(".png").as_posix()

    @classmethod
    def of_split(cls, json_file: str | os.PathLike) -> tuple["ConvertedLayout", str] | None:
        """``(layout, split)`` when ``json_file`` is a converted split's instances json (its
        :meth:`annotations_json` beside an existing :attr:`images_dir`), else None."""
        json_file = Path(json_file)
        layout, split = cls(json_file.parent.parent), json_file.stem
        if layout.annotations_json(split) == json_file and layout.images_dir.is_dir():
            return layout, split
        return None

    @classmethod
    def of_panoptic_split(
        cls, json_file: str | os.PathLike
    ) -> tuple["ConvertedLayout", str] | None:
        """``(layout, split)`` when ``json_file`` is a converted split's panoptic json (its
        :meth:`panoptic_json` beside its PNG folder and an existing :attr:`images_dir`)."""
        json_file = Path(json_file)
        layout, split = cls(json_file.parent.parent), json_file.stem
        if (layout.panoptic_json(split) == json_file and layout.panoptic_dir(split).is_dir()
                and layout.images_dir.is_dir()):
            return layout, split
        return None
