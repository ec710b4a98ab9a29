"""PQ on panopticapi's sample data: identity, perturbations checked by torchmetrics, crowd/void."""

import json

import cv2
import numpy as np
import pytest
import torch
from torchmetrics.detection import PanopticQuality

from d2seg.config import get_cfg
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.datasets import register_coco_panoptic
from d2seg.data.io import read_panoptic_ids
from d2seg.data.mapper import DatasetMapper
from d2seg.errors import DatasetError
from d2seg.evaluation.panoptic_evaluation import (
    PanopticEvaluator,
    evaluate_coco_panoptic,
    panoptic_image_stats,
    panoptic_metrics,
)
from d2seg.modeling.postprocess import combine_semantic_and_instance_outputs


@pytest.fixture(scope="module")
def sample(shared_data):
    folder = shared_data / "coco_panoptic_sample/sample_data"
    coco = json.loads((folder / "panoptic_examples.json").read_text())
    images = [(read_panoptic_ids(folder / "panoptic_examples" / a["file_name"]),
               a["segments_info"]) for a in coco["annotations"]]
    return folder, coco, images


def test_ground_truth_against_itself_is_perfect(sample):
    folder, _, _ = sample
    gt_json, png_dir = folder / "panoptic_examples.json", folder / "panoptic_examples"
    metrics = evaluate_coco_panoptic(gt_json, png_dir, gt_json, png_dir)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert metrics[key] == pytest.approx(100.0)


def _without_crowd(ids, segments):
    """Crowd regions → void: torchmetrics has no crowd rule, so compare on the rest."""
    crowd = [s["id"] for s in segments if s["iscrowd"]]
    return np.where(np.isin(ids, crowd), 0, ids), [s for s in segments if not s["iscrowd"]]


def _perturb(ids, segments):
    """Erode the largest thing, drop the second largest, relabel the third as category 2.

    Freed pixels go to the largest stuff segment, so the prediction has no void where the
    ground truth has a segment (torchmetrics and panopticapi count such pixels differently).
    """
    pred, segments = ids.copy(), [dict(s) for s in segments]
    things = sorted((s for s in segments if s["category_id"] <= 90), key=lambda s: -s["area"])
    filler = max((s for s in segments if s["category_id"] > 90), key=lambda s: s["area"])["id"]
    largest = ids == things[0]["id"]
    eroded = cv2.erode(largest.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    pred[largest & ~eroded] = filler
    pred[ids == things[1]["id"]] = filler
    segments = [s for s in segments if s["id"] != things[1]["id"]]
    relabelled = next(s for s in segments if s["id"] == things[2]["id"])
    relabelled["category_id"] = 2 if relabelled["category_id"] != 2 else 3
    return pred, segments


def _torchmetrics_input(ids, segments):
    category = np.zeros_like(ids)
    for s in segments:
        category[ids == s["id"]] = s["category_id"]
    return torch.from_numpy(np.stack([category, ids], axis=-1))[None]


def test_perturbed_prediction_matches_torchmetrics(sample):
    _, coco, images = sample
    categories = {c["id"]: c for c in coco["categories"]}
    reference = PanopticQuality(
        things={c for c, v in categories.items() if v["isthing"]},
        stuffs={c for c, v in categories.items() if not v["isthing"]},
        allow_unknown_preds_category=True, return_per_class=True,
    )
    stats = {}
    for ids, segments in images:
        gt_ids, gt_segments = _without_crowd(ids, segments)
        pred_ids, pred_segments = _perturb(gt_ids, gt_segments)
        for category, values in panoptic_image_stats(gt_ids, gt_segments, pred_ids,
                                                     pred_segments).items():
            stats[category] = stats.get(category, 0) + values
        reference.update(_torchmetrics_input(pred_ids, pred_segments),
                         _torchmetrics_input(gt_ids, gt_segments))
    metrics = panoptic_metrics(stats, categories)
    per_class = reference.compute().flatten().double().numpy()
    sorted_ids = sorted(categories)
    seen = [c for c in sorted_ids if c in stats]
    assert 0 < metrics["PQ"] < 100
    assert metrics["PQ"] == pytest.approx(per_class[[sorted_ids.index(c) for c in seen]].mean()
                                          * 100, abs=1e-4)
    for c in seen:
        assert metrics[f"PQ-{categories[c]['name']}"] == pytest.approx(
            per_class[sorted_ids.index(c)] * 100, abs=1e-4)  # torchmetrics: float32


def test_crowd_and_void_rules_follow_panopticapi():
    gt = np.zeros((10, 10), np.int64)
    gt[:, :5] = 1  # crowd region of category 7
    gt[:, 5:8] = 2  # a person (category 1)
    # columns 8-9 are void
    pred = np.zeros_like(gt)
    pred[:, :4] = 11  # category 7 inside the crowd region: ignored, not a false positive
    pred[:, 4:8] = 12  # category 1 over the person + one crowd column: IoU 30 / 40 = 0.75
    pred[:, 8:] = 13  # category 3 on void only: ignored
    gt_segments = [{"id": 1, "category_id": 7, "iscrowd": 1}, {"id": 2, "category_id": 1}]
    pred_segments = [{"id": 11, "category_id": 7}, {"id": 12, "category_id": 1},
                     {"id": 13, "category_id": 3}]
    stats = panoptic_image_stats(gt, gt_segments, pred, pred_segments)
    assert set(stats) == {1}
    np.testing.assert_allclose(stats[1], [0.75, 1, 0, 0])


def _as_model_output(segments, categories):
    """Ground-truth segments (dataset ids) as PanopticUNet reports them: a thing's instance
    class over thing categories, a stuff segment's semantic label 2 + its stuff index."""
    things = [c["id"] for c in categories if c["isthing"]]
    stuff = [c["id"] for c in categories if not c["isthing"]]
    return [{"id": s["id"], "isthing": s["category_id"] in things, "score": 1.0,
             "category_id": things.index(s["category_id"]) if s["category_id"] in things
             else 2 + stuff.index(s["category_id"])} for s in segments]


def test_evaluator_maps_model_classes_to_dataset_ids_and_round_trips_files(sample, tmp_path):
    folder, coco, _ = sample
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    name = f"pan_sample_{tmp_path.name}"
    register_coco_panoptic(name, {}, folder / "input_images", folder / "panoptic_examples",
                           folder / "panoptic_examples.json")
    evaluator = PanopticEvaluator(name, output_dir=tmp_path)
    by_image = {a["image_id"]: a["segments_info"] for a in coco["annotations"]}
    for inp in DatasetCatalog.get(name):
        ids = read_panoptic_ids(inp["pan_seg_file_name"])
        segments = _as_model_output(by_image[inp["image_id"]], categories)
        # A background (label 1) segment over the void pixels is scored as void.
        segments.append({"id": int(ids.max()) + 1, "isthing": False, "category_id": 1})
        ids[ids == 0] = segments[-1]["id"]
        evaluator.process([inp], [{"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)),
                                                    segments)}])
    metrics = evaluator.evaluate()["panoptic_seg"]
    assert metrics["PQ"] == pytest.approx(100) and metrics["PQ_th"] == pytest.approx(100)
    assert metrics["PQ_st"] == pytest.approx(100) and metrics["PQ-person"] == pytest.approx(100)
    written = evaluate_coco_panoptic(folder / "panoptic_examples.json",
                                     folder / "panoptic_examples",
                                     tmp_path / "panoptic_predictions.json",
                                     tmp_path / "panoptic_predictions")
    assert written["PQ"] == pytest.approx(100)


def test_mapper_labels_fused_like_the_model_score_ground_truth_at_100(sample):
    """The mapper's training targets of a registered COCO panoptic dataset (80 things, 53 stuff),
    fused by PanopticUNet's own fusion, are the ground truth: every thing and stuff category
    present gets PQ 100 under its own name, so targets, metadata and evaluator agree."""
    folder, coco, _ = sample
    name = "pan_sample_through_the_mapper"
    register_coco_panoptic(name, {}, folder / "input_images", folder / "panoptic_examples",
                           folder / "panoptic_examples.json")
    try:
        cfg = get_cfg()
        cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (0,), "INPUT.RANDOM_FLIP", "none",
                             "MODEL.META_ARCHITECTURE", "PanopticUNet"])
        mapper = DatasetMapper(**DatasetMapper.from_config(cfg, is_train=True))
        evaluator = PanopticEvaluator(name)
        for inp in DatasetCatalog.get(name):
            targets = mapper(inp)
            instances = {**targets["instances"],
                         "scores": torch.ones(len(targets["instances"]["classes"]))}
            prediction = combine_semantic_and_instance_outputs(
                instances, targets["sem_seg"], overlap_threshold=0.5, stuff_area_thresh=0,
                instances_score_thresh=0.5,
            )
            evaluator.process([inp], [{"panoptic_seg": prediction}])
        metrics = evaluator.evaluate()["panoptic_seg"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    present = {s["category_id"] for a in coco["annotations"] for s in a["segments_info"]
               if not s["iscrowd"]}
    assert any(c > 90 for c in present) and any(c <= 90 for c in present)  # stuff and things
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert metrics[key] == pytest.approx(100.0)
    for category in present:
        assert metrics[f"PQ-{names[category]}"] == pytest.approx(100.0)


def test_category_outside_the_model_classes_is_a_dataset_error(sample):
    folder, _, _ = sample
    evaluator = PanopticEvaluator(thing_classes=["thing"], stuff_classes=["stuff"])
    inp = {"image_id": 1, "pan_seg_file_name": str(folder / "panoptic_examples/000000142238.png"),
           "segments_info": []}
    for segment, message in (({"isthing": True, "category_id": 1}, "thing category 1"),
                             ({"isthing": False, "category_id": 3}, "stuff category 3")):
        prediction = (torch.zeros(427, 640, dtype=torch.int32), [{"id": 1, **segment}])
        with pytest.raises(DatasetError, match=f"{message}.*1 thing and 1 stuff"):
            evaluator.process([inp], [{"panoptic_seg": prediction}])
