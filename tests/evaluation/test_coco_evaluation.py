"""COCO AP: published COCOeval numbers, both backends, and the evaluator on model outputs."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from d2seg.data.datasets import register_coco_instances
from d2seg.errors import DatasetError
from d2seg.evaluation.coco_evaluation import (
    COCOEvaluator,
    evaluate_coco_predictions,
    instance_confusion_matrix,
    load_coco_gt,
    validate_coco_results,
)

# cocoapi@8c9bcc3 results/val2014_fake_eval_res.txt, computed with pycocotools 2.0.11.
FAKE_AP = {"segm": 0.3195452758576433, "bbox": 0.5045806987249628}


@pytest.fixture(scope="module")
def cocoeval_fixtures(shared_data):
    return shared_data / "cocoeval_fixtures"


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_fake_results_give_published_ap_with_both_backends(cocoeval_fixtures, iou_type):
    gt_json = cocoeval_fixtures / "faster_coco_eval/cocoapi/instances_val2014_100.json"
    dt_json = (cocoeval_fixtures / "cocoapi_results"
               / f"instances_val2014_fake{iou_type}100_results.json")
    raw = json.loads(dt_json.read_text())
    stats = {}
    for backend in ("pycocotools", "faster"):
        coco_gt = load_coco_gt(gt_json, backend)
        results = validate_coco_results(raw, coco_gt, iou_type, str(dt_json))
        metrics, coco_eval = evaluate_coco_predictions(coco_gt, results, iou_type,
                                                       backend=backend)
        stats[backend] = np.asarray(coco_eval.stats[:12])
        assert metrics["AP"] == pytest.approx(stats[backend][0] * 100, abs=1e-12)
        assert len([k for k in metrics if k.startswith("AP-")]) == 80
    assert stats["pycocotools"][0] == pytest.approx(FAKE_AP[iou_type], abs=1e-9)
    np.testing.assert_allclose(stats["faster"], stats["pycocotools"], atol=1e-4)


def test_detection_polygons_are_merged_to_rle(cocoeval_fixtures):
    folder = cocoeval_fixtures / "faster_coco_eval"
    coco_gt = load_coco_gt(folder / "gt_dataset.json")
    raw = json.loads((folder / "dt_dataset.json").read_text())
    results = validate_coco_results(raw, coco_gt, "segm", "dt_dataset.json")
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    _, coco_eval = evaluate_coco_predictions(coco_gt, results, "segm")
    assert coco_eval.stats[0] == pytest.approx(0.6947194719471946, abs=1e-12)


def _rectangle(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def tiny_gt(tmp_path):
    """Two 64×64 images, categories with non-contiguous ids 3 ('cat') and 7 ('dog')."""
    boxes = {1: [(3, (4, 4, 20, 30)), (7, (30, 10, 25, 25))], 2: [(7, (10, 20, 40, 30))]}
    annotations = []
    for image_id, objects in boxes.items():
        for category_id, (x, y, w, h) in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category_id, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0,
                                "segmentation": _rectangle(x, y, w, h)})
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 64, "width": 64} for i in (1, 2)],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    return path


def _perfect_outputs(gt_json):
    """What a perfect model outputs for each image: GT boxes (XYXY), classes, masks."""
    coco_gt = load_coco_gt(gt_json)
    contiguous = {3: 0, 7: 1}
    pairs = []
    for image_id in coco_gt.imgs:
        anns = coco_gt.imgToAnns[image_id]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
        masks = torch.from_numpy(np.stack([coco_gt.annToMask(a) for a in anns]))
        instances = {"boxes": boxes, "scores": torch.ones(len(anns)),
                     "classes": torch.tensor([contiguous[a["category_id"]] for a in anns]),
                     "masks": masks}
        pairs.append(({"image_id": image_id, "height": 64, "width": 64},
                      {"instances": instances}))
    return pairs


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_perfect_predictions_give_ap_100(tiny_gt, tmp_path, backend):
    evaluator = COCOEvaluator(gt_json=tiny_gt, output_dir=tmp_path / "out", backend=backend)
    for inp, out in _perfect_outputs(tiny_gt):
        evaluator.process([inp], [out])
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100)
        assert results[task]["AP-cat"] == pytest.approx(100)
        assert results[task]["AP-dog"] == pytest.approx(100)
    written = json.loads((tmp_path / "out/coco_instances_results.json").read_text())
    assert sorted(r["category_id"] for r in written) == [3, 7, 7]
    confusion = evaluator.report_inputs()["instance_confusion"]
    np.testing.assert_array_equal(confusion, [[1, 0, 0], [0, 2, 0], [0, 0, 0]])


def test_registered_dataset_gives_class_names_and_ids(tiny_gt, tmp_path):
    name = f"tiny_{tmp_path.name}"
    register_coco_instances(name, {}, tiny_gt, tmp_path)
    evaluator = COCOEvaluator(name, tasks=("segm",))
    for inp, out in _perfect_outputs(tiny_gt):
        evaluator.process([inp], [out])
    assert set(evaluator.evaluate()) == {"segm"}
    assert evaluator.report_inputs()["thing_classes"] == ["cat", "dog"]


def test_no_predictions_give_nan_and_a_warning(tiny_gt, caplog):
    evaluator = COCOEvaluator(gt_json=tiny_gt)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "classes": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 64, 64)}
    with caplog.at_level(logging.WARNING):
        evaluator.process([{"image_id": 1}], [{"instances": empty}])
        results = evaluator.evaluate()
    assert math.isnan(results["bbox"]["AP"]) and math.isnan(results["segm"]["AP-dog"])
    assert "No bbox predictions" in caplog.text


def test_class_outside_the_dataset_is_a_dataset_error(tiny_gt):
    evaluator = COCOEvaluator(gt_json=tiny_gt, tasks=("bbox",))
    bad = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.ones(1),
           "classes": torch.tensor([2])}
    with pytest.raises(DatasetError, match="predicted class 2.*2 classes"):
        evaluator.process([{"image_id": 1}], [{"instances": bad}])


def test_missing_ground_truth_json_says_how_to_fix():
    with pytest.raises(DatasetError, match="register_coco_instances"):
        COCOEvaluator()


_FULL = mask_util.encode(np.asfortranarray(np.ones((64, 64), np.uint8)))
VALID_RLE = {"size": [64, 64], "counts": _FULL["counts"].decode()}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"image_id": 99, "category_id": 3, "score": 0.5, "segmentation": VALID_RLE},
         r"\[1\]: image_id 99 is not an image"),
        ({"image_id": 1, "category_id": 4, "score": 0.5, "segmentation": VALID_RLE},
         r"\[1\]: category_id 4 is not a category"),
        ({"image_id": 1, "category_id": 3, "segmentation": VALID_RLE}, r"\[1\] has no 'score'"),
        ({"image_id": 1, "category_id": 3, "score": 0.5,
          "segmentation": {"size": [64, 64], "counts": "0`0"}}, r"\[1\]: RLE 'counts' string"),
        ({"image_id": 1, "category_id": 3, "score": 0.5,
          "segmentation": {**VALID_RLE, "size": [32, 64]}}, r"\[1\]: RLE size \[32, 64\]"),
        ({"image_id": 1, "category_id": 3, "score": 0.5, "segmentation": [1, 2, 3, 4, 5, 6]},
         r"\[1\]: segmentation is a flat list"),
    ],
)
def test_malformed_results_name_the_entry(tiny_gt, entry, message):
    coco_gt = load_coco_gt(tiny_gt)
    entries = [{"image_id": 1, "category_id": 3, "score": 0.9, "segmentation": VALID_RLE}, entry]
    with pytest.raises(DatasetError, match=message):
        validate_coco_results(entries, coco_gt, "segm", "dt.json")


def test_confusion_matrix_counts_wrong_class_and_misses(tiny_gt):
    coco_gt = load_coco_gt(tiny_gt)
    results = [
        {"image_id": 1, "category_id": 7, "bbox": [4, 4, 20, 30], "score": 0.9},  # cat as dog
        {"image_id": 1, "category_id": 3, "bbox": [0, 50, 10, 10], "score": 0.9},  # nothing
        {"image_id": 2, "category_id": 7, "bbox": [10, 20, 40, 30], "score": 0.3},  # low score
    ]
    confusion = instance_confusion_matrix(coco_gt, results, "bbox")
    # rows: GT cat, dog, background; columns: predicted cat, dog, background
    np.testing.assert_array_equal(confusion, [[0, 1, 0], [0, 0, 2], [1, 0, 0]])
