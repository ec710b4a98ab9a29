"""The report: every class listed, the PNGs open at their documented sizes, JSON without NaN."""

import json
import math

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image

from d2seg.evaluation import report as report_module
from d2seg.evaluation.coco_evaluation import evaluate_coco_predictions, load_coco_gt
from d2seg.evaluation.report import figure_size_in, report_folder, write_report
from d2seg.evaluation.sem_seg_evaluation import semantic_metrics
from d2seg.utils.plotting import DPI

THINGS = ["cat", "dog", "hot|dog"]  # a '|' must not break the Markdown table
STUFF = ["road", "sky"]


@pytest.fixture
def coco_eval(tmp_path):
    """A COCOeval over 3 classes, one without ground truth (its PR panel says so)."""
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400,
             "iscrowd": 0, "segmentation": [[2, 2, 22, 2, 22, 22, 2, 22]]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 30, 20, 20], "area": 400,
             "iscrowd": 0, "segmentation": [[30, 30, 50, 30, 50, 50, 30, 50]]},
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(THINGS)],
    }
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    coco_gt = load_coco_gt(tmp_path / "gt.json")
    results = [{"image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 18], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [30, 30, 20, 20], "score": 0.8}]
    return evaluate_coco_predictions(coco_gt, results, "bbox")


def test_report_lists_every_class_and_writes_readable_plots(coco_eval, tmp_path):
    metrics, cocoeval = coco_eval
    sem_seg = {"mIoU": 50.0, "IoU-road": 80.0, "IoU-sky": 20.0, "MCC": 0.4}
    results = {"bbox": metrics, "sem_seg": sem_seg,
               "panoptic_seg": {"PQ": 40.0, "PQ-road": 40.0, "PQ-sky": float("nan")}}
    folder = tmp_path / "report"
    report = write_report(
        results, folder, dataset_name="toy", thing_classes=THINGS,
        coco_evals={"bbox": cocoeval}, instance_confusion=np.eye(4, dtype=np.int64),
        stuff_classes=STUFF, semantic_confusion=np.array([[8, 2], [1, 3]]),
    )
    text = report.read_text()
    for name in ["cat", "dog", "hot\\|dog", *STUFF]:
        assert f"| {name} |" in text
    expected = {
        "pr_curves_bbox.png": figure_size_in("pr_curves", THINGS),
        "instance_confusion.png": figure_size_in("confusion", [*THINGS, "background"]),
        "semantic_confusion.png": figure_size_in("confusion", STUFF),
        "semantic_iou.png": figure_size_in("iou_bars", STUFF),
    }
    for name, inches in expected.items():
        assert f"({name})" in text
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
            assert image.size == tuple(round(v * DPI) for v in inches)
    saved = json.loads((folder / "results.json").read_text())
    assert saved["panoptic_seg"]["PQ-sky"] is None  # NaN → null: strict JSON
    assert saved["bbox"]["AP-cat"] == pytest.approx(metrics["AP-cat"])
    assert math.isnan(metrics["AP-hot|dog"])


def test_a_report_without_plots_has_every_table_and_no_figure(coco_eval, tmp_path):
    metrics, cocoeval = coco_eval
    results = {"bbox": metrics, "sem_seg": {"mIoU": 50.0, "IoU-road": 80.0, "IoU-sky": 20.0}}
    inputs = dict(dataset_name="toy", thing_classes=THINGS, coco_evals={"bbox": cocoeval},
                  instance_confusion=np.eye(4, dtype=np.int64), stuff_classes=STUFF,
                  semantic_confusion=np.array([[8, 2], [1, 3]]))
    full = write_report(results, tmp_path / "full", **inputs).read_text()
    lean = write_report(results, tmp_path / "lean", plots=False, **inputs).read_text()
    assert sorted(p.name for p in (tmp_path / "lean").iterdir()) == ["report.md", "results.json"]
    assert "![" not in lean
    tables = [line for line in full.splitlines() if line.startswith("|")]
    assert tables == [line for line in lean.splitlines() if line.startswith("|")]
    assert (tmp_path / "lean" / "results.json").read_text() == \
        (tmp_path / "full" / "results.json").read_text()


def test_report_folder_is_per_dataset(tmp_path):
    assert report_folder("out", "balloon_val") == report_folder("out", "balloon_val")
    assert report_folder("out", "/data/x/annotations/val.json").name == "val"
    assert report_folder("out", "a b").parent.name == "inference"


def test_report_tables_label_every_metric_with_its_unit(tmp_path):
    confusion = np.array([[50, 5, 0], [4, 30, 6], [0, 3, 20]])
    sem_seg = semantic_metrics(confusion, ["road", "car", "sky"])
    text = write_report({"sem_seg": sem_seg, "segm": {"AP": 41.5, "AP-car": 41.5}}, tmp_path,
                        thing_classes=["car"]).read_text()
    headers = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    for header in ("mIoU (%)", "pACC (%)", "Dice (0–1)", "MCC (−1…1)", "IoU (%)", "ACC (%)",
                   "precision (0–1)", "AP (%)", "AP segm (%)"):
        assert any(f"| {header} |" in line for line in headers), header
    # percentages with 2 decimals, fractions with 3: the row reads as its header says
    assert f"| {sem_seg['mIoU']:.2f} |" in text and f"| {sem_seg['Dice']:.3f} |" in text


@pytest.mark.parametrize("num_classes", [23, 70])
def test_confusion_and_iou_plots_grow_with_the_class_count(tmp_path, num_classes, monkeypatch):
    names = [f"class {i:02d}" for i in range(num_classes)]
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 20, (num_classes, num_classes)) + np.diag([500] * num_classes)
    figures = []
    save = report_module.save_png
    monkeypatch.setattr(report_module, "save_png", lambda f, p: (figures.append(f), save(f, p)))
    write_report({"sem_seg": semantic_metrics(confusion, names)}, tmp_path,
                 stuff_classes=names, semantic_confusion=confusion)
    for figure in figures:
        texts = [t for t in figure.findobj(Text) if t.get_text() and t.get_visible()]
        assert min(t.get_fontsize() for t in texts) >= 8
    # values written into the cells only while they fit
    assert len(figures[-1].axes[0].texts) == (num_classes**2 if num_classes <= 25 else 0)
    with Image.open(tmp_path / "semantic_confusion.png") as image:
        # ≥ 0.2 in per row and column: 8 pt tick labels never overlap
        assert min(image.size) >= num_classes * 0.2 * DPI
    with Image.open(tmp_path / "semantic_iou.png") as image:
        assert image.height >= num_classes * 0.2 * DPI


def test_report_says_which_model_it_describes(tmp_path):
    report = write_report({"segm": {"AP": 41.5}}, tmp_path, dataset_name="val",
                          model="model_best.pth (iteration 40, best segm/AP)")
    lines = report.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# Evaluation report: val"
    assert "Model: model_best.pth (iteration 40, best segm/AP)" in lines[:4]
