"""COCO files from other tools (``--format coco``): validated, bbox/area recomputed, pruned."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.data.datasets.coco import load_coco_json
from d2seg.errors import DatasetError

HEIGHT, WIDTH = 40, 60
SQUARE = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]  # pycocotools rasterises it to 20×20 pixels


def _cvat_export(root: Path) -> Path:
    """A CVAT-like export: wrong boxes/areas, a degenerate polygon, a zero-area annotation,
    an unused category with id 7 and an RLE annotation."""
    (root / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90)).save(root / "images" / name)
    blob = np.zeros((HEIGHT, WIDTH), np.uint8)
    blob[5:15, 40:55] = 1
    rle = mask_util.encode(np.asfortranarray(blob))
    rle["counts"] = rle["counts"].decode("ascii")
    coco = {
        "images": [{"id": 3, "file_name": "a.jpg", "height": HEIGHT, "width": WIDTH},
                   {"id": 4, "file_name": "b.jpg", "height": HEIGHT, "width": WIDTH}],
        "categories": [{"id": 7, "name": "unused"}, {"id": 2, "name": "box"},
                       {"id": 5, "name": "blob"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 2, "segmentation": SQUARE,
             "bbox": [0, 0, 5, 5], "area": 12.0, "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 5, "segmentation": rle,
             "bbox": [40, 5, 15, 10], "area": 150, "iscrowd": 0},
            {"id": 3, "image_id": 4, "category_id": 2, "segmentation": [[1, 1, 2, 2]],
             "bbox": [1, 1, 1, 1], "area": 0, "iscrowd": 0},
            {"id": 4, "image_id": 4, "category_id": 2,
             "segmentation": [[100, 100, 120, 100, 120, 120]], "iscrowd": 0},
        ],
    }
    (root / "export.json").write_text(json.dumps(coco))
    return root / "export.json"


def test_boxes_and_areas_are_recomputed_and_degenerate_ones_dropped(tmp_path):
    coco_file = _cvat_export(tmp_path)
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="coco",
                              options=SourceOptions(coco_file=str(coco_file)))
    assert summary["categories"] == ["box", "blob", "unused"]  # sorted ids 2, 5, 7 → 1, 2, 3
    assert summary["report"] == {"skipped": 2, "fixed": 1}
    out = json.loads((tmp_path / "out/annotations/all.json").read_text())
    assert [(a["category_id"], a["bbox"], a["area"]) for a in out["annotations"]] == [
        (1, [10.0, 10.0, 20.0, 20.0], 400.0),
        (2, [40.0, 5.0, 15.0, 10.0], 150.0),
    ]
    assert out["annotations"][0]["segmentation"] == SQUARE
    entries = json.loads((tmp_path / "out/report.json").read_text())["entries"]
    reasons = {e["file"]: e["reason"] for e in entries}
    assert "fewer than 3 points" in reasons["export.json: annotations[2]"]
    assert "covers no pixel" in reasons["export.json: annotations[3]"]
    assert "bbox [0, 0, 5, 5] → [10.0, 10.0, 20.0, 20.0]" in reasons["export.json: annotations[0]"]


def test_prune_categories_and_split(tmp_path):
    coco_file = _cvat_export(tmp_path)
    options = SourceOptions(coco_file=str(coco_file), prune_categories=True)
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="coco", options=options,
                              splits={"val": 0.5})
    assert summary["categories"] == ["box", "blob"]
    assert {name: s["images"] for name, s in summary["splits"].items()} == {"train": 1, "val": 1}


def test_an_invalid_file_is_the_validator_error_and_nothing_is_written(tmp_path):
    coco_file = _cvat_export(tmp_path)
    raw = json.loads(coco_file.read_text())
    raw["annotations"][0]["category_id"] = 99
    coco_file.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=r"export\.json: annotations\[0\]: category_id 99"):
        convert_dataset(tmp_path / "images", tmp_path / "out", fmt="coco",
                        options=SourceOptions(coco_file=str(coco_file)))
    assert not (tmp_path / "out").exists()


def test_loading_an_export_directly_recomputes_wrong_boxes_with_one_warning(tmp_path, caplog):
    coco_file = _cvat_export(tmp_path)
    raw = json.loads(coco_file.read_text())
    raw["annotations"] = raw["annotations"][:2]
    coco_file.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger="d2seg.data.coco"):
        dicts = load_coco_json(coco_file, tmp_path / "images")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 of 2 annotation bbox(es) disagree" in warnings[0]
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[10.0, 10.0, 20.0, 20.0], [40.0, 5.0, 15.0, 10.0]]
