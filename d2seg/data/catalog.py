"""Dataset and metadata catalogs with Detectron2's API, and the standard registrations.

``DatasetCatalog.register(name, func)`` maps a name to a function returning dataset dicts;
``MetadataCatalog.get(name)`` holds what is known about it (class names, json file, evaluator
type). Registered functions are ``functools.partial`` objects of module-level loaders, so they
pickle; a spawned worker process that needs a dataset calls :func:`resolve_dataset` (or the
``register_*`` call) again and gets the same name.

A COCO json path works wherever a dataset name does (``DATASETS.TRAIN: ("out/annotations/
train.json",)``): :func:`resolve_dataset` registers it under its absolute path. When the json is
``OUT/annotations/<split>.json`` and ``OUT/images`` exists (the layout ``tools/convert_labelme.py``
writes), it is a converted split (:func:`load_converted_split`): images in ``OUT/images`` and the
converter's semantic and panoptic labels attached. Otherwise its images are looked up in the
json's own folder.
"""

import functools
import logging
import os
from collections import UserDict
from pathlib import Path
from typing import Any, Callable

from d2seg.data.coco import load_coco_json, read_json
from d2seg.data.convert.writers import IGNORE_VALUE, label_map_name
from d2seg.errors import DatasetError

logger = logging.getLogger(__name__)


class _DatasetCatalog(UserDict):
    """Name → function returning ``list[dict]`` (the dataset dicts); call ``get`` to load."""

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        if not callable(func):
            raise DatasetError(
                f"DatasetCatalog.register('{name}', ...): {func!r} is not callable; fix: pass a "
                f"function that returns the dataset dicts"
            )
        if name in self:
            raise DatasetError(
                f"dataset '{name}' is already registered; fix: pick another name or call "
                f"DatasetCatalog.remove('{name}') first"
            )
        self[name] = func

    def get(self, name: str) -> list[dict]:
        """Call the function registered as ``name`` and return its dataset dicts."""
        try:
            func = self[name]
        except KeyError:
            registered = ", ".join(sorted(self)) or "none"
            raise DatasetError(
                f"dataset '{name}' is not registered (registered: {registered}); fix: register "
                f"it (register_coco_instances) or give a path to a COCO json file instead"
            ) from None
        return func()

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.keys())})"


DatasetCatalog = _DatasetCatalog()


class Metadata:
    """Attributes of one dataset (``thing_classes``, ``json_file``, ``evaluator_type``, ...).

    Set once: setting an attribute to a different value than it has is an error, because two
    parts of a program disagreeing about a dataset's classes is a bug that must not pass.
    """

    def __init__(self, name: str):
        self.__dict__["name"] = name

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"metadata of dataset '{self.__dict__['name']}' has no '{key}' (it has: "
            f"{', '.join(self.__dict__)}); fix: MetadataCatalog.get(name).set({key}=...)"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        old = self.__dict__.get(key, value)
        if old != value:
            raise DatasetError(
                f"metadata '{key}' of dataset '{self.name}' is already {old!r} and cannot become "
                f"{value!r}; fix: register the dataset under another name, or "
                f"MetadataCatalog.remove('{self.name}') first"
            )
        self.__dict__[key] = value

    def set(self, **kwargs: Any) -> "Metadata":
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class _MetadataCatalog(UserDict):
    """Name → :class:`Metadata`; ``get`` creates an empty one on first use (as Detectron2)."""

    def get(self, name: str) -> Metadata:
        if name not in self:
            self[name] = Metadata(name)
        return self[name]

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


MetadataCatalog = _MetadataCatalog()


def register_coco_instances(
    name: str, metadata: dict, json_file: str | os.PathLike, image_root: str | os.PathLike
) -> None:
    """Register a COCO instances file; the json is read only when the dataset is loaded."""
    DatasetCatalog.register(
        name, functools.partial(load_coco_json, str(json_file), str(image_root), name)
    )
    MetadataCatalog.get(name).set(
        json_file=str(json_file), image_root=str(image_root), evaluator_type="coco", **metadata
    )


def _panoptic_category_maps(categories: list[dict]) -> dict[str, Any]:
    """Detectron2's panoptic class maps with SEPARATE contiguous ids for things and stuff.

    Categories sorted by dataset id; ``isthing`` (default 1) splits them. Returns
    ``thing_classes`` (the T thing names), ``stuff_classes`` (the S stuff names, no
    "background": PanopticUNet's semantic label 2 + k is ``stuff_classes[k]``, label 0 the
    things and label 1 the unlabelled pixels, which are no dataset category),
    ``thing_dataset_id_to_contiguous_id`` (→ 0..T-1, the instance classes) and
    ``stuff_dataset_id_to_contiguous_id`` (→ 0..S-1).
    """
    categories = sorted(categories, key=lambda c: c["id"])
    things = [c for c in categories if c.get("isthing", 1)]
    stuff = [c for c in categories if not c.get("isthing", 1)]
    return {
        "thing_classes": [c["name"] for c in things],
        "stuff_classes": [c["name"] for c in stuff],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(stuff)},
    }


def _check_panoptic_maps(name: str, metadata: dict) -> None:
    """Each class map must number its own kind 0..n-1, with one name per id where names are given.

    Detectron2's "coco_panoptic_standard" metadata (one id space over things and stuff) would
    otherwise give instance classes ≥ T and stuff labels past the semantic head's classes.
    """
    for kind in ("thing", "stuff"):
        ids = sorted(metadata.get(f"{kind}_dataset_id_to_contiguous_id", {}).values())
        if ids != list(range(len(ids))):
            raise DatasetError(
                f"register_coco_panoptic('{name}'): metadata {kind}_dataset_id_to_contiguous_id "
                f"maps to {ids[:8]}{'...' if len(ids) > 8 else ''}, not 0..{len(ids) - 1}; fix: "
                f"number {kind} categories on their own (0..n-1 over the {kind} categories), or "
                f"leave the maps out to read them from the json's categories"
            )
        names = metadata.get(f"{kind}_classes")
        if names is not None and len(names) != len(ids):
            raise DatasetError(
                f"register_coco_panoptic('{name}'): metadata {kind}_classes has {len(names)} "
                f"names for {len(ids)} {kind} categories; fix: give one name per {kind} category "
                f"in contiguous order ({kind} categories only, no 'background'/'things' entry)"
            )


def load_coco_panoptic_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    thing_dataset_id_to_contiguous_id: dict[int, int],
    stuff_dataset_id_to_contiguous_id: dict[int, int],
) -> list[dict]:
    """Load a COCO panoptic file as dataset dicts.

    Returns one dict per annotated image: ``file_name`` (absolute image path), ``height``,
    ``width``, ``image_id``, ``pan_seg_file_name`` (absolute PNG path; segment id = R + 256·G +
    256²·B, 0 = void) and ``segments_info`` = ``[{id, category_id (contiguous), iscrowd, area,
    bbox (XYWH pixels), isthing}]``.
    """
    coco = read_json(json_file, "COCO panoptic file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key) if isinstance(coco, dict) else None, list):
            raise DatasetError(
                f"{json_file}: no '{key}' list; fix: give a COCO panoptic json (images, "
                f"annotations with segments_info, categories)"
            )
    images = {image["id"]: image for image in coco["images"]}
    thing_map, stuff_map = thing_dataset_id_to_contiguous_id, stuff_dataset_id_to_contiguous_id
    image_root, panoptic_root = Path(image_root).resolve(), Path(panoptic_root).resolve()
    dataset_dicts = []
    for i, ann in enumerate(coco["annotations"]):
        image = images.get(ann.get("image_id"))
        if image is None or "file_name" not in ann or "segments_info" not in ann:
            raise DatasetError(
                f"{json_file}: annotations[{i}] needs 'image_id' of an entry in 'images', "
                f"'file_name' (its PNG) and 'segments_info'; fix: correct that entry"
            )
        if not {"file_name", "height", "width"} <= image.keys():
            raise DatasetError(
                f"{json_file}: the image of annotations[{i}] lacks file_name/height/width; fix: "
                f"add them to its entry in 'images'"
            )
        segments = []
        for segment in ann["segments_info"]:
            category = segment["category_id"]
            isthing = category in thing_map
            if not isthing and category not in stuff_map:
                raise DatasetError(
                    f"{json_file}: annotations[{i}] has a segment of category_id {category}, "
                    f"which is not in 'categories'; fix: add the category or correct the id"
                )
            segments.append(
                {
                    **segment,
                    "category_id": thing_map[category] if isthing else stuff_map[category],
                    "isthing": isthing,
                }
            )
        dataset_dicts.append(
            {
                "file_name": str(image_root / image["file_name"]),
                "height": image["height"],
                "width": image["width"],
                "image_id": ann["image_id"],
                "pan_seg_file_name": str(panoptic_root / ann["file_name"]),
                "segments_info": segments,
            }
        )
    return dataset_dicts


def register_coco_panoptic(
    name: str,
    metadata: dict,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    panoptic_json: str | os.PathLike,
) -> None:
    """Register a COCO panoptic dataset (PNGs in ``panoptic_root`` + ``panoptic_json``).

    When ``metadata`` has no ``thing_dataset_id_to_contiguous_id``, the class maps and names are
    read from the json's categories now (see :func:`_panoptic_category_maps`); given maps must
    number things 0..T-1 and stuff 0..S-1 separately. The dataset dicts' ``segments_info`` then
    carry those contiguous ids and ``isthing``, which is what
    :func:`~d2seg.data.detection_utils.panoptic_to_targets` and
    :class:`~d2seg.evaluation.PanopticEvaluator` read.
    """
    if "thing_dataset_id_to_contiguous_id" not in metadata:
        categories = read_json(panoptic_json, "COCO panoptic file").get("categories", [])
        metadata = {**_panoptic_category_maps(categories), **metadata}
    _check_panoptic_maps(name, metadata)
    DatasetCatalog.register(
        name,
        functools.partial(
            load_coco_panoptic_json,
            str(panoptic_json),
            str(image_root),
            str(panoptic_root),
            metadata["thing_dataset_id_to_contiguous_id"],
            metadata.get("stuff_dataset_id_to_contiguous_id", {}),
        ),
    )
    MetadataCatalog.get(name).set(
        image_root=str(image_root),
        panoptic_root=str(panoptic_root),
        panoptic_json=str(panoptic_json),
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **metadata,
    )


def _files_by_stem(root: Path, ext: str) -> dict[str, Path]:
    """Files ``*.ext`` under ``root``, keyed by their relative path without the extension."""
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in root.rglob(f"*.{ext}")}


def load_sem_seg(
    gt_root: str | os.PathLike,
    image_root: str | os.PathLike,
    gt_ext: str = "png",
    image_ext: str = "jpg",
) -> list[dict]:
    """Pair images with label PNGs by relative path without extension.

    Returns ``[{file_name, sem_seg_file_name}]`` (absolute paths), sorted by file name; the
    label PNG holds uint8 class ids per pixel (255 = ignore). Unpaired files are logged.
    """
    gt_root, image_root = Path(gt_root).resolve(), Path(image_root).resolve()
    for what, root in (("image_root", image_root), ("gt_root", gt_root)):
        if not root.is_dir():
            raise DatasetError(f"sem_seg {what} {root} is not a folder; fix: correct the path")
    images, labels = _files_by_stem(image_root, image_ext), _files_by_stem(gt_root, gt_ext)
    paired = sorted(images.keys() & labels.keys())
    if not paired:
        raise DatasetError(
            f"no '*.{image_ext}' under {image_root} has a '*.{gt_ext}' label with the same "
            f"relative path under {gt_root}; fix: check the folders and image_ext/gt_ext"
        )
    unpaired = len(images) + len(labels) - 2 * len(paired)
    if unpaired:
        logger.warning("%d images/labels under %s have no partner; ignored", unpaired, gt_root)
    return [{"file_name": str(images[k]), "sem_seg_file_name": str(labels[k])} for k in paired]


def register_sem_seg(
    name: str,
    image_root: str | os.PathLike,
    gt_root: str | os.PathLike,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    *,
    metadata: dict | None = None,
) -> None:
    """Register images + per-pixel label PNGs (``stuff_classes`` may come in ``metadata``)."""
    DatasetCatalog.register(
        name, functools.partial(load_sem_seg, str(gt_root), str(image_root), gt_ext, image_ext)
    )
    MetadataCatalog.get(name).set(
        image_root=str(image_root),
        sem_seg_root=str(gt_root),
        evaluator_type="sem_seg",
        ignore_label=255,
        **(metadata or {}),
    )


def _is_converted_split(json_file: Path) -> bool:
    """Whether ``json_file`` is ``OUT/annotations/<split>.json`` beside ``OUT/images``."""
    return json_file.parent.name == "annotations" and (json_file.parent.parent / "images").is_dir()


def _converted_split_metadata(json_file: Path) -> dict[str, Any]:
    """Metadata of a converted split: its files (the label parts only where they exist)."""
    out, split = json_file.parent.parent, json_file.stem
    metadata: dict[str, Any] = {
        "json_file": str(json_file),
        "image_root": str(out / "images"),
        "evaluator_type": "coco",
        "ignore_label": IGNORE_VALUE,
    }
    if (out / "sem_seg" / split).is_dir():
        metadata["sem_seg_root"] = str(out / "sem_seg" / split)
    panoptic_json, panoptic_root = out / "panoptic" / f"{split}.json", out / "panoptic" / split
    if panoptic_json.is_file() and panoptic_root.is_dir():
        metadata.update(panoptic_root=str(panoptic_root), panoptic_json=str(panoptic_json))
    return metadata


def load_converted_split(json_file: str | os.PathLike, dataset_name: str) -> list[dict]:
    """Dataset dicts of a split written by ``tools/convert_labelme.py``.

    ``json_file`` is the absolute path of ``OUT/annotations/<split>.json``. Returns
    :func:`load_coco_json`'s dicts (images in ``OUT/images``) with, where the converter wrote
    them:

    - ``sem_seg_file_name``: ``OUT/sem_seg/<split>/<file_name with suffix .png>``, uint8 H×W:
      0 background, k = ``thing_classes[k - 1]``, 255 ignore;
    - ``pan_seg_file_name`` and ``segments_info`` (contiguous category ids, as
      :func:`load_coco_panoptic_json`) from ``OUT/panoptic/<split>.json``.

    Sets the metadata ``stuff_classes = ["background", *thing_classes]``: semantic class k is
    the PNG value k, so a semantic model trained on it needs ``MODEL.SEM_SEG_HEAD.NUM_CLASSES =
    len(thing_classes) + 1``. Every converted category is a thing: the panoptic view has no
    stuff categories (no ``stuff_dataset_id_to_contiguous_id``), so PanopticUNet's semantic
    labels there are only 0 (things) and 1 (background), and ``stuff_classes`` names the
    semantic PNG's classes, not stuff categories as :func:`register_coco_panoptic`'s does.
    Also ``ignore_label`` 255 and ``json_file``, ``image_root``, ``sem_seg_root``,
    ``panoptic_root``, ``panoptic_json`` (those that exist).
    """
    files = _converted_split_metadata(Path(json_file))
    image_root = files["image_root"]
    dataset_dicts = load_coco_json(json_file, image_root, dataset_name)
    metadata = MetadataCatalog.get(dataset_name).set(**files)
    metadata.set(stuff_classes=["background", *metadata.thing_classes])
    if "sem_seg_root" in files:
        for record in dataset_dicts:
            file_name = Path(os.path.relpath(record["file_name"], image_root)).as_posix()
            label_file = Path(files["sem_seg_root"], label_map_name(file_name))
            if label_file.is_file():
                record["sem_seg_file_name"] = str(label_file)
    if "panoptic_json" in files:
        panoptic = load_coco_panoptic_json(
            files["panoptic_json"],
            image_root,
            files["panoptic_root"],
            metadata.thing_dataset_id_to_contiguous_id,
            {},
        )
        by_image = {(p["image_id"], p["file_name"]): p for p in panoptic}
        for record in dataset_dicts:
            match = by_image.get((record["image_id"], record["file_name"]))
            if match is not None:
                record["pan_seg_file_name"] = match["pan_seg_file_name"]
                record["segments_info"] = match["segments_info"]
    return dataset_dicts


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
        if _is_converted_split(json_file):
            DatasetCatalog.register(name, functools.partial(load_converted_split, name, name))
            MetadataCatalog.get(name).set(**_converted_split_metadata(json_file))
        else:
            register_coco_instances(name, {}, name, json_file.parent)
        return name
    registered = ", ".join(sorted(DatasetCatalog)) or "none"
    raise DatasetError(
        f"dataset '{name_or_path}' is not registered (registered: {registered}); fix: register "
        f"it first (inside the launched function: --num-gpus workers are new processes), or "
        f"give a path to a COCO json file (e.g. OUT/annotations/train.json)"
    )
