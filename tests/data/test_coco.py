"""COCO validation against labelme2coco's validity fixtures, and loading COCO val2014 GT."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from d2seg.data.catalog import MetadataCatalog
from d2seg.data.coco import BoxMode, check_segmentation, validate
from d2seg.data.datasets import load_coco_json
from d2seg.errors import DatasetError

# What each coco_false_N.json breaks (labelme2coco@fe1cbc6:tests/data), as the message says it.
FALSE_FIXTURE_FAULTS = {
    0: "rename 'annotation' to 'annotations'",
    1: "annotations[0]: segmentation is a flat list",
    2: "categories[0] has no 'id'",
    3: "images[1] has no 'id'",
    4: "annotations[0] has no 'category_id'",
    5: "annotations[2] has no 'image_id'",
    6: "images[0] has no 'file_name'",
    7: "categories[0] has no 'name'",
    8: "annotations[0] has no 'segmentation'",
    9: "missing top-level key 'images'",
    10: "missing top-level key 'annotations'",
    11: "missing top-level key 'categories'",
    12: "'annotations' is a dict, not a list",
    13: "'categories' is a dict, not a list",
    14: "'images' is a dict, not a list",
    15: "rename 'image' to 'images'",
    16: "rename 'categoryes' to 'categories'",
}


@pytest.fixture(scope="module")
def validity_dir(shared_data: Path) -> Path:
    return shared_data / "coco_format_validity_fixtures"


@pytest.fixture(scope="module")
def val2014_json(shared_data: Path) -> Path:
    cocoapi = shared_data / "cocoeval_fixtures" / "faster_coco_eval" / "cocoapi"
    return cocoapi / "instances_val2014_100.json"


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("index", [0, 1])
def test_valid_fixtures_pass(validity_dir, index):
    validate(_read(validity_dir / f"coco_true_{index}.json"), f"coco_true_{index}.json")


@pytest.mark.parametrize("index", sorted(FALSE_FIXTURE_FAULTS))
def test_invalid_fixture_is_rejected_naming_file_and_fault(validity_dir, index):
    name = f"coco_false_{index}.json"
    with pytest.raises(DatasetError) as excinfo:
        validate(_read(validity_dir / name), name)
    message = str(excinfo.value)
    assert message.startswith(f"{name}: ")
    assert FALSE_FIXTURE_FAULTS[index] in message
    assert "fix:" in message


def test_every_false_fixture_is_covered(validity_dir):
    on_disk = {int(p.stem.rsplit("_", 1)[1]) for p in validity_dir.glob("coco_false_*.json")}
    assert on_disk == set(FALSE_FIXTURE_FAULTS)


@pytest.mark.parametrize(
    "breakage, fault",
    [
        (lambda c: c["annotations"][1].update(image_id=99), "annotations[1]: image_id 99"),
        (lambda c: c["annotations"][2].update(category_id=7), "annotations[2]: category_id 7"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0]: bbox"),
        (lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3, 4]]), "has 4 numbers"),
        (lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3, 4, 5, 6, 7]]), "has 7"),
        (lambda c: c["annotations"][1].update(segmentation={"counts": "abc"}), "'size'"),
        (
            lambda c: c["annotations"][1].update(segmentation={"size": [2, 2], "counts": [1, 2]}),
            "runs sum to 3",
        ),
        (lambda c: c["images"].append(dict(c["images"][0])), "images[2]: duplicate id 1"),
        (lambda c: c["annotations"][0].update(iscrowd=2), "iscrowd"),
    ],
)
def test_structural_rules(validity_dir, breakage, fault):
    coco = _read(validity_dir / "coco_true_0.json")
    breakage(coco)
    with pytest.raises(DatasetError, match="fix:") as excinfo:
        validate(coco, "train.json")
    assert fault in str(excinfo.value)


def test_rle_forms_are_accepted(validity_dir):
    coco = _read(validity_dir / "coco_true_0.json")
    mask = np.zeros((4, 5), np.uint8, order="F")
    mask[1:3, 2:4] = 1
    compressed = mask_util.encode(mask)
    coco["annotations"][0]["segmentation"] = {
        "size": [4, 5],
        "counts": compressed["counts"].decode("ascii"),
    }
    coco["annotations"][1]["segmentation"] = {"size": [4, 5], "counts": [6, 2, 2, 2, 8]}
    validate(coco, "train.json")


def test_val2014_validates_and_loads_like_pycocotools(val2014_json, tmp_path):
    coco = _read(val2014_json)
    validate(coco, str(val2014_json))

    dicts = load_coco_json(val2014_json, tmp_path, dataset_name="test_coco_val2014")
    oracle = COCO(str(val2014_json))
    assert [d["image_id"] for d in dicts] == [im["id"] for im in coco["images"]]
    assert sum(len(d["annotations"]) for d in dicts) == len(oracle.getAnnIds())

    cat_ids = sorted(oracle.getCatIds())
    meta = MetadataCatalog.get("test_coco_val2014")
    assert meta.thing_classes == [oracle.cats[i]["name"] for i in cat_ids]
    assert meta.thing_dataset_id_to_contiguous_id == {c: i for i, c in enumerate(cat_ids)}

    first = dicts[0]
    assert Path(first["file_name"]).is_absolute()
    assert Path(first["file_name"]).parent == tmp_path.resolve()
    image = coco["images"][0]
    assert (first["height"], first["width"]) == (image["height"], image["width"])

    crowd = [(d, a) for d in dicts for a in d["annotations"] if a["iscrowd"]]
    assert len(crowd) == 9
    for record, ann in crowd:
        assert isinstance(ann["segmentation"]["counts"], str)
        oracle_ann = next(
            a
            for a in oracle.imgToAnns[record["image_id"]]
            if a["iscrowd"] and a["bbox"] == ann["bbox"]
        )
        np.testing.assert_array_equal(
            mask_util.decode(ann["segmentation"]), oracle.annToMask(oracle_ann)
        )
    for record in dicts:
        for ann in record["annotations"]:
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS == 1
            assert 0 <= ann["category_id"] < len(cat_ids)
    MetadataCatalog.remove("test_coco_val2014")


def test_missing_bbox_is_computed_from_the_polygon(validity_dir, tmp_path):
    coco = _read(validity_dir / "coco_true_0.json")
    for image in coco["images"]:
        image.update(height=20, width=30)
    coco["annotations"][0]["segmentation"] = [[2, 3, 12, 3, 12, 9, 2, 9]]
    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps(coco))
    dicts = load_coco_json(json_file, tmp_path)
    assert dicts[0]["annotations"][0]["bbox"] == [2.0, 3.0, 10.0, 6.0]


def test_loader_errors_name_the_file_and_the_fix(validity_dir, tmp_path):
    with pytest.raises(DatasetError, match=r"missing\.json.*not found; fix:"):
        load_coco_json(tmp_path / "missing.json", tmp_path)
    no_size = tmp_path / "no_size.json"
    no_size.write_text((validity_dir / "coco_true_0.json").read_text())
    with pytest.raises(DatasetError, match=r"no_size\.json: images\[0\] has no integer height"):
        load_coco_json(no_size, tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match=r"broken\.json: missing top-level key 'annotations'"):
        load_coco_json(broken, tmp_path)


def test_check_segmentation_is_the_one_check_of_gt_and_results():
    full = mask_util.encode(np.asfortranarray(np.ones((4, 6), np.uint8)))
    rle = {"size": [4, 6], "counts": full["counts"].decode()}
    check_segmentation([[0, 0, 5, 0, 5, 3]], "gt.json: annotations[0]")
    check_segmentation(rle, "dt.json: [0]", 4, 6)
    check_segmentation({"size": [2, 2], "counts": [1, 3]}, "gt.json: annotations[1]")
    cases = [
        (([1, 2, 3, 4, 5, 6], "w"), r"w: segmentation is a flat list .*fix: .*wrap it"),
        (("polygon", "w"), r"w: segmentation is a str; fix: use polygons"),
        (({"size": [2, 2], "counts": [1, 2]}, "w"), r"runs sum to 3, not height\*width = 4"),
        ((rle, "w", 4, 7), r"w: RLE size \[4, 6\] is not the image's \[height, width\] = \[4, 7\]"),
        (({"size": [4, 6], "counts": "0`0"}, "w", 4, 6), r"w: RLE 'counts' string is corrupt"),
    ]
    for args, message in cases:
        with pytest.raises(DatasetError, match=message):
            check_segmentation(*args)
