"""Dataset names or COCO json paths → registered dataset names (:func:`resolve_dataset`).

A COCO json path works wherever a dataset name does (``DATASETS.TRAIN: ("out/annotations/
train.json",)``): it is registered under its absolute path. A split written by
``tools/convert_labelme.py`` (:meth:`ConvertedLayout.of_split
<d2seg.data.convert.layout.ConvertedLayout.of_split>`) is registered as a converted split
(:func:`~d2seg.data.datasets.converted.load_converted_split`: images in the converter's images
folder, its semantic and panoptic labels attached), a converted split's panoptic json
(``OUT/panoptic/<split>.json``) as its panoptic dataset; any other json finds its images in its
own folder.
"""

from pathlib import Path

from d2seg.data.catalog import DatasetCatalog
from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.datasets.coco import register_coco_instances
from d2seg.data.datasets.converted import register_converted_panoptic, register_converted_split
from d2seg.errors import DatasetError


def resolve_dataset(name_or_path: str) -> str:
    """A registered name as is; a COCO ``.json`` path registered under its absolute path.

    Deterministic, so worker processes call it again to re-create the registration.
    """
    if name_or_path in DatasetCatalog:
        return name_or_path
    path = Path(name_or_path)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise DatasetError(
                f"dataset json {name_or_path} not found; fix: check the path (relative paths are "
                f"from the working folder {Path.cwd()})"
            )
        name = str(path.resolve())
        if name in DatasetCatalog:
            return name
        json_file = Path(name)
        if ConvertedLayout.of_split(json_file) is not None:
            register_converted_split(name, json_file)
        elif ConvertedLayout.of_panoptic_split(json_file) is not None:
            register_converted_panoptic(name, json_file)
        else:
            register_coco_instances(name, {}, name, json_file.parent)
        return name
    registered = ", ".join(sorted(DatasetCatalog)) or "none"
    raise DatasetError(
        f"dataset '{name_or_path}' is not registered (registered: {registered}); fix: register "
        f"it first (inside the launched function: --num-gpus workers are new processes), or "
        f"give a path to a COCO json file (e.g. OUT/annotations/train.json)"
    )
