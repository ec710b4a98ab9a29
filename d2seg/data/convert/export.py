"""A converted dataset (``tools/convert.py`` output) written back as YOLO-seg or Labelme JSON.

:func:`export_dataset` reads every split of a :class:`ConvertedLayout` (its COCO instances
json) and writes, into a new folder (atomically, nothing on failure):

- ``to="yolo"``: ``images/<split>/<file_name>``, ``labels/<split>/<stem>.txt`` (one line per
  instance: ``class x1 y1 ...`` normalised by the image size, class = category id - 1, full
  float precision so :mod:`~d2seg.data.convert.from_yolo` reads back the same polygons) and
  ``data.yaml`` (``path``, ``train``/``val``/``test`` where those splits exist, ``names``). A
  YOLO line holds one polygon: an instance of several polygons, or an RLE one, is written as the
  outer contour of its largest part (the other parts are counted in the summary as
  ``parts_dropped``);
- ``to="labelme"``: ``<split>/<file_name>`` and ``<split>/<stem>.json`` beside it: one
  ``polygon`` shape per polygon (the polygons of one instance share a ``group_id``, which
  Labelme and d2seg read as one instance) and a ``mask`` shape (the box's crop as a PNG) for
  RLE instances.

Images are hard-linked where possible (copied otherwise). Returns the summary ``{"to",
"splits": {split: {"images", "instances"}}, "parts_dropped"}``.
"""

import base64
import io
import json
import os
import shutil
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import yaml
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.coco import contiguous_categories, validate
from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.io import read_json
from d2seg.errors import ConfigError, DatasetError
from d2seg.utils.io import atomic_directory

FORMATS = ("yolo", "labelme")


def _link(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:  # another file system: copy
        shutil.copyfile(source, dest)


def _splits(layout: ConvertedLayout) -> list[str]:
    folder = layout.root / "annotations"
    splits = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    if not splits or not layout.images_dir.is_dir():
        raise DatasetError(
            f"{layout.root}: not a converted dataset (no annotations/<split>.json beside "
            f"images/); fix: pass the --output folder of tools/convert.py"
        )
    return splits


def _mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_util.decode(rle).astype(bool)


def yolo_polygon(segmentation: list | dict, height: int, width: int) -> tuple[list[float], int]:
    """The one polygon (pixels) a YOLO line gets for a segmentation, and how many other parts
    were dropped (see the module docstring)."""
    if isinstance(segmentation, list) and len(segmentation) == 1:
        return segmentation[0], 0
    contours, _ = cv2.findContours(
        _mask(segmentation, height, width).astype(np.uint8), cv2.RETR_EXTERNAL,
        cv2.CHAIN_APPROX_SIMPLE,
    )
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return [], 1
    largest = max(contours, key=cv2.contourArea)
    return largest.reshape(-1).astype(float).tolist(), len(contours) - 1


def _mask_shape(label: str, mask: np.ndarray, group_id: int | None) -> dict:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    buffer = io.BytesIO()
    Image.fromarray(mask[y0 : y1 + 1, x0 : x1 + 1].astype(np.uint8) * 255).save(buffer, "PNG")
    return {
        "label": label, "points": [[float(x0), float(y0)], [float(x1), float(y1)]],
        "group_id": group_id, "shape_type": "mask", "flags": {}, "description": "",
        "mask": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }


def _labelme_shapes(
    annotation: dict, label: str, height: int, width: int, group: int
) -> list[dict]:
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, dict):
        return [_mask_shape(label, _mask(segmentation, height, width), None)]
    group_id = group if len(segmentation) > 1 else None
    return [
        {
            "label": label, "points": np.reshape(polygon, (-1, 2)).tolist(),
            "group_id": group_id, "shape_type": "polygon", "flags": {}, "description": "",
        }
        for polygon in segmentation
    ]


def export_dataset(converted_dir: str | Path, output_dir: str | Path, *, to: str) -> dict:
    """Write the converted dataset ``converted_dir`` as ``to`` ("yolo" or "labelme") into the
    new folder ``output_dir``; returns the summary (see the module docstring).

    Example::

        from d2seg.data.convert.export import export_dataset
        export_dataset("data/balloons", "data/balloons_yolo", to="yolo")
    """
    if to not in FORMATS:
        raise ConfigError(f"--to {to!r} is unknown; fix: choose one of {', '.join(FORMATS)}")
    layout = ConvertedLayout(converted_dir)
    splits = _splits(layout)
    summary: dict = {"to": to, "splits": {}, "parts_dropped": 0}
    names: list[str] = []
    with atomic_directory(output_dir, what="--output") as tmp:
        for split in splits:
            json_file = layout.annotations_json(split)
            coco = read_json(json_file, "COCO annotation file")
            validate(coco, str(json_file))
            names, class_of = contiguous_categories(coco)  # YOLO ids: things only
            label_of = {c["id"]: c["name"] for c in coco["categories"]}
            by_image: dict[int, list[dict]] = {image["id"]: [] for image in coco["images"]}
            for annotation in coco["annotations"]:
                by_image[annotation["image_id"]].append(annotation)
            for image in coco["images"]:
                file_name, height, width = image["file_name"], image["height"], image["width"]
                source = layout.images_dir / file_name
                annotations = by_image[image["id"]]
                if to == "yolo":
                    _link(source, tmp / "images" / split / file_name)
                    lines = []
                    for annotation in annotations:
                        polygon, dropped = yolo_polygon(annotation["segmentation"], height, width)
                        summary["parts_dropped"] += dropped
                        if polygon:
                            xy = np.reshape(polygon, (-1, 2)) / (width, height)
                            lines.append(" ".join(
                                [str(class_of[annotation["category_id"]])]
                                + [repr(float(v)) for v in xy.ravel()]
                            ))
                    label_file = (tmp / "labels" / split / file_name).with_suffix(".txt")
                    label_file.parent.mkdir(parents=True, exist_ok=True)
                    label_file.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
                else:
                    _link(source, tmp / split / file_name)
                    shapes = []
                    for group, annotation in enumerate(annotations):
                        shapes += _labelme_shapes(
                            annotation, label_of[annotation["category_id"]], height, width, group
                        )
                    raw = {
                        "version": "5.5.0", "flags": {}, "shapes": shapes,
                        "imagePath": PurePosixPath(file_name).name, "imageData": None,
                        "imageHeight": height, "imageWidth": width,
                    }
                    json_path = (tmp / split / file_name).with_suffix(".json")
                    json_path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
            summary["splits"][split] = {
                "images": len(coco["images"]), "instances": len(coco["annotations"])
            }
        if to == "yolo":
            data = {"path": ".", "names": dict(enumerate(names))}
            for key in ("train", "val", "test"):
                if key in splits:
                    data[key] = f"images/{key}"
            # Ultralytics needs both train and val: a missing one is the other (or the only split)
            data.setdefault("train", data.get("val", f"images/{splits[0]}"))
            data.setdefault("val", data["train"])
            (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        else:
            (tmp / "labels.txt").write_text(
                "".join(f"{name}\n" for name in ["__ignore__", "_background_", *names]),
                encoding="utf-8",
            )
    return summary
