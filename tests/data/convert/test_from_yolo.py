"""Ultralytics YOLO-seg folders (``--format yolo``) and the way back (export to YOLO/Labelme)."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.convert.export import export_dataset
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.errors import AnnotationError

HEIGHT, WIDTH = 40, 80
LINES = {
    "train/a": ["0 0.1 0.1 0.4 0.1 0.4 0.6", "1 0.5 0.5 0.9 0.5 0.9 0.9 0.5 0.9"],
    "val/b": ["1 0.5 0.5 0.2 0.4"],  # a detection box: cx cy w h
    "val/c": [],
}


def _yolo(root: Path, lines=LINES) -> Path:
    for stem, label_lines in lines.items():
        image = root / "images" / f"{stem}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (WIDTH, HEIGHT), (50, 60, 70)).save(image)
        label = root / "labels" / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{line}\n" for line in label_lines))
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                    "names:\n  0: scratch\n  1: dent\n")
    return root


def _instances(out: Path) -> dict[str, list[tuple[int, list, np.ndarray]]]:
    coco = json.loads((out / "annotations" / "all.json").read_text())
    names = {i["id"]: i for i in coco["images"]}
    result: dict = {i["file_name"]: [] for i in coco["images"]}
    for a in coco["annotations"]:
        image = names[a["image_id"]]
        rles = mask_util.frPyObjects(a["segmentation"], image["height"], image["width"])
        result[image["file_name"]].append(
            (a["category_id"], a["segmentation"], mask_util.decode(mask_util.merge(rles)))
        )
    return result


def test_polygons_are_denormalised_and_boxes_become_rectangles(tmp_path):
    summary = convert_dataset(_yolo(tmp_path / "yolo"), tmp_path / "out", fmt="yolo")
    assert summary["categories"] == ["scratch", "dent"]
    assert summary["splits"]["all"] == {"images": 3, "annotations": 3, "images_without_objects": 1}
    instances = _instances(tmp_path / "out")
    (cls_a, poly_a, _), (cls_b, _, _) = instances["train/a.png"]
    assert (cls_a, cls_b) == (1, 2)
    np.testing.assert_allclose(poly_a, [[8, 4, 32, 4, 32, 24]])
    ((_, box, _),) = instances["val/b.png"]
    np.testing.assert_allclose(box, [[32, 12, 48, 12, 48, 28, 32, 28]])


def test_import_export_import_is_the_identity(tmp_path):
    convert_dataset(_yolo(tmp_path / "yolo"), tmp_path / "first", fmt="yolo")
    summary = export_dataset(tmp_path / "first", tmp_path / "exported", to="yolo")
    assert summary == {"to": "yolo", "splits": {"all": {"images": 3, "instances": 3}},
                       "parts_dropped": 0}
    convert_dataset(tmp_path / "exported", tmp_path / "second", fmt="yolo")
    first, second = _instances(tmp_path / "first"), _instances(tmp_path / "second")
    assert [Path(k).name for k in first] == [Path(k).name for k in second]
    for (_, a), (_, b) in zip(first.items(), second.items()):
        assert [x[0] for x in a] == [x[0] for x in b]
        for (_, poly_a, mask_a), (_, poly_b, mask_b) in zip(a, b):
            np.testing.assert_allclose(poly_a, poly_b, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(mask_a, mask_b)


def test_labelme_export_converts_back_to_the_same_masks(tmp_path):
    convert_dataset(_yolo(tmp_path / "yolo"), tmp_path / "first", fmt="yolo")
    export_dataset(tmp_path / "first", tmp_path / "labelme", to="labelme")
    raw = json.loads((tmp_path / "labelme/all/train/a.json").read_text())
    assert [s["label"] for s in raw["shapes"]] == ["scratch", "dent"]
    assert raw["imagePath"] == "a.png" and (tmp_path / "labelme/all/train/a.png").is_file()
    convert_dataset(tmp_path / "labelme/all", tmp_path / "back", fmt="labelme",
                    labels_file=tmp_path / "labelme/labels.txt")
    back = json.loads((tmp_path / "back/annotations/all.json").read_text())
    first = json.loads((tmp_path / "first/annotations/all.json").read_text())
    assert [(a["category_id"], a["area"], a["bbox"]) for a in back["annotations"]] == [
        (a["category_id"], a["area"], a["bbox"]) for a in first["annotations"]
    ]


_TOKENS = st.sampled_from(["0", "1", "2", "7", "-1", "0.5", "1.5", "nan", "inf", "x", "", "1e-3"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_lines_fail_only_with_an_annotation_error_naming_the_line(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("yolo")
    lines = {stem: list(label_lines) for stem, label_lines in LINES.items()}
    target = data.draw(st.integers(0, 1))
    tokens = lines["train/a"][target].split()
    position = data.draw(st.integers(0, len(tokens)))
    tokens[position:position + data.draw(st.integers(0, 3))] = data.draw(st.lists(_TOKENS, max_size=3))
    lines["train/a"][target] = " ".join(tokens)
    _yolo(root, lines)
    try:
        convert_dataset(root, root / "out", fmt="yolo", strict=True)
    except AnnotationError as e:
        assert f"labels/train/a.txt: line {target + 1}" in str(e)
        assert not (root / "out").exists()


def test_missing_names_is_one_error(tmp_path):
    _yolo(tmp_path)
    (tmp_path / "data.yaml").write_text("names: 3\n")
    with pytest.raises(AnnotationError, match=r"data\.yaml: 'names' must be a list"):
        convert_dataset(tmp_path, tmp_path / "out", fmt="yolo")
