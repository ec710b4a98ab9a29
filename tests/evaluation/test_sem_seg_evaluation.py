"""Semantic metrics against torchmetrics on random label maps with ignored pixels."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryMatthewsCorrCoef,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MulticlassMatthewsCorrCoef,
    MulticlassPrecision,
    MulticlassRecall,
)

from d2seg.data.datasets import register_sem_seg
from d2seg.errors import DatasetError
from d2seg.evaluation.sem_seg_evaluation import SemSegEvaluator

IGNORE = 255
NAMES = ["road", "car", "tree", "sky", "unused"]  # "unused" never occurs in GT or prediction


def _random_maps(seed, num_classes, shape=(48, 64)):
    """GT with ~10 % ignored pixels; predictions right ~60 % of the time."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, num_classes, shape)
    pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, num_classes, shape))
    gt[rng.random(shape) < 0.1] = IGNORE
    return gt.astype(np.uint8), pred


def _write_png(path, labels):
    Image.fromarray(labels.astype(np.uint8)).save(path)
    return str(path)


def _logits_for(pred, num_classes):
    return torch.nn.functional.one_hot(torch.from_numpy(pred), num_classes).permute(2, 0, 1) * 5.0


@pytest.fixture
def evaluated(tmp_path):
    """The evaluator's results and the flattened (pred, gt) tensors over 3 images."""
    evaluator = SemSegEvaluator(class_names=NAMES, ignore_label=IGNORE)
    preds, gts = [], []
    for i in range(3):
        gt, pred = _random_maps(i, num_classes=4)
        inp = {"sem_seg_file_name": _write_png(tmp_path / f"{i}.png", gt)}
        evaluator.process([inp], [{"sem_seg": _logits_for(pred, len(NAMES))}])
        preds.append(torch.from_numpy(pred).flatten())
        gts.append(torch.from_numpy(gt.astype(np.int64)).flatten())
    return evaluator.evaluate()["sem_seg"], torch.cat(preds), torch.cat(gts)


def _present(values):
    """torchmetrics per-class values of the 4 classes that occur."""
    return values[:4].numpy().astype(np.float64)


def test_iou_and_mean_match_torchmetrics_jaccard(evaluated):
    metrics, pred, gt = evaluated
    per_class = MulticlassJaccardIndex(5, average="none", ignore_index=IGNORE)(pred, gt)
    np.testing.assert_allclose([metrics[f"IoU-{n}"] for n in NAMES[:4]],
                               _present(per_class) * 100, rtol=1e-6)
    assert math.isnan(metrics["IoU-unused"])  # absent class: no IoU, left out of the mean
    assert metrics["mIoU"] == pytest.approx(_present(per_class).mean() * 100, rel=1e-6)


@pytest.mark.parametrize(
    "key, metric",
    [
        ("Dice", MulticlassF1Score),
        ("F1", MulticlassF1Score),
        ("precision", MulticlassPrecision),
        ("recall", MulticlassRecall),
    ],
)
def test_macro_metrics_match_torchmetrics(evaluated, key, metric):
    metrics, pred, gt = evaluated
    per_class = metric(5, average="none", ignore_index=IGNORE)(pred, gt)
    np.testing.assert_allclose([metrics[f"{key}-{n}"] for n in NAMES[:4]], _present(per_class),
                               rtol=1e-6)
    macro = metric(5, average="macro", ignore_index=IGNORE)(pred, gt)
    assert metrics[key] == pytest.approx(float(macro), rel=1e-6)


def test_mcc_is_torchmetrics_multiclass_matthews(evaluated):
    metrics, pred, gt = evaluated
    expected = MulticlassMatthewsCorrCoef(5, ignore_index=IGNORE)(pred, gt)
    assert metrics["MCC"] == pytest.approx(float(expected), rel=1e-6)


def test_pixel_accuracy_and_frequency_weighted_iou(evaluated):
    metrics, pred, gt = evaluated
    valid = gt != IGNORE
    assert metrics["pACC"] == pytest.approx(
        float((pred[valid] == gt[valid]).double().mean()) * 100, rel=1e-9)
    frequency = torch.bincount(gt[valid], minlength=5).double() / valid.sum()
    iou = MulticlassJaccardIndex(5, average="none", ignore_index=IGNORE)(pred, gt).double()
    assert metrics["fwIoU"] == pytest.approx(float((frequency * iou).sum()) * 100, rel=1e-6)


def test_binary_logit_reports_foreground_headline(tmp_path):
    gt, pred = _random_maps(7, num_classes=2)
    logit = torch.from_numpy(np.where(pred == 1, 2.0, -2.0)).float()[None]
    evaluator = SemSegEvaluator(class_names=["car"], ignore_label=IGNORE)
    evaluator.process([{"sem_seg_file_name": _write_png(tmp_path / "m.png", gt)}],
                      [{"sem_seg": logit}])
    metrics = evaluator.evaluate()["sem_seg"]
    p, t = torch.from_numpy(pred).flatten(), torch.from_numpy(gt.astype(np.int64)).flatten()
    kwargs = {"ignore_index": IGNORE}
    assert metrics["IoU"] == pytest.approx(float(BinaryJaccardIndex(**kwargs)(p, t)) * 100,
                                           rel=1e-6)
    assert metrics["Dice"] == pytest.approx(float(BinaryF1Score(**kwargs)(p, t)), rel=1e-6)
    assert metrics["MCC"] == pytest.approx(float(BinaryMatthewsCorrCoef(**kwargs)(p, t)),
                                           rel=1e-6)
    assert "IoU-background" in metrics and "IoU-car" in metrics


def test_label_outside_the_classes_names_the_file(tmp_path):
    gt = np.full((8, 8), 7, np.uint8)
    evaluator = SemSegEvaluator(num_classes=3)
    path = _write_png(tmp_path / "bad.png", gt)
    with pytest.raises(DatasetError, match="bad.png: label value 7"):
        evaluator.process([{"sem_seg_file_name": path}], [{"sem_seg": torch.zeros(3, 8, 8)}])


def test_channel_count_mismatch_says_which_key_to_set(tmp_path):
    path = _write_png(tmp_path / "gt.png", np.zeros((8, 8)))
    evaluator = SemSegEvaluator(num_classes=3)
    with pytest.raises(DatasetError, match="SEM_SEG_HEAD.NUM_CLASSES"):
        evaluator.process([{"sem_seg_file_name": path}], [{"sem_seg": torch.zeros(4, 8, 8)}])


def test_registered_dataset_gives_class_names_and_ignore_label(tmp_path):
    name = f"sem_{tmp_path.name}"
    register_sem_seg(name, tmp_path, tmp_path, metadata={"stuff_classes": ["ground", "balloon"]})
    gt = np.array([[0, 1], [IGNORE, 1]], np.uint8)
    evaluator = SemSegEvaluator(name, output_dir=tmp_path / "out")
    evaluator.process([{"sem_seg_file_name": _write_png(tmp_path / "a.png", gt)}],
                      [{"sem_seg": _logits_for(np.array([[0, 1], [0, 0]]), 2)}])
    metrics = evaluator.evaluate()["sem_seg"]
    assert metrics["IoU-ground"] == pytest.approx(50.0)  # the ignored pixel is not counted
    assert metrics["IoU-balloon"] == pytest.approx(50.0)
    saved = json.loads((tmp_path / "out/sem_seg_confusion.json").read_text())
    assert saved == {"class_names": ["ground", "balloon"], "confusion": [[1, 0], [1, 1]]}


def _evaluate_maps(tmp_path, gt, pred, names, **kwargs):
    evaluator = SemSegEvaluator(class_names=names, ignore_label=IGNORE, **kwargs)
    inp = {"sem_seg_file_name": _write_png(tmp_path / "gt.png", gt)}
    evaluator.process([inp], [{"sem_seg": _logits_for(pred, len(names))}])
    return evaluator.evaluate()["sem_seg"]


def test_a_predicted_class_absent_from_the_ground_truth_is_nan_as_in_detectron2(tmp_path):
    """Class 2 never occurs in the ground truth but is predicted: Detectron2 gives it no IoU and
    leaves it out of mIoU; the strict option scores it 0 and counts it."""
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[:, 10:] = 1
    pred = gt.astype(np.int64).copy()
    pred[:4, :4] = 2
    names = ["a", "b", "c"]
    default = _evaluate_maps(tmp_path, gt, pred, names)
    iou_a, iou_b = (200 - 16) / 200 * 100, 100.0
    assert math.isnan(default["IoU-c"])
    assert default["IoU-a"] == pytest.approx(iou_a) and default["IoU-b"] == pytest.approx(iou_b)
    assert default["mIoU"] == pytest.approx((iou_a + iou_b) / 2)
    strict = _evaluate_maps(tmp_path, gt, pred, names, strict_iou=True)
    assert strict["IoU-c"] == 0.0
    assert strict["mIoU"] == pytest.approx((iou_a + iou_b) / 3)


def test_boundary_iou_keys_follow_the_label_boundaries(tmp_path):
    """A perfect prediction has BoundaryIoU 100 for every class with a boundary; shifting the
    edge between two classes lowers it."""
    gt = np.zeros((40, 40), dtype=np.uint8)
    gt[:, 20:] = 1
    names = ["left", "right"]
    perfect = _evaluate_maps(tmp_path, gt, gt.astype(np.int64), names)
    assert perfect["BoundaryIoU-right"] == pytest.approx(100.0)
    shifted = np.zeros((40, 40), dtype=np.int64)
    shifted[:, 24:] = 1
    worse = _evaluate_maps(tmp_path, gt, shifted, names)
    assert worse["BoundaryIoU-right"] < 100.0
    assert set(k for k in worse if k.startswith("BoundaryIoU-")) == {
        "BoundaryIoU-left", "BoundaryIoU-right"}
