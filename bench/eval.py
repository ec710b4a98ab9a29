#!/usr/bin/env python
"""COCO evaluation: d2seg's ``COCOEvaluator`` against plain pycocotools ``COCOeval``, one process.

Two workloads:

1. the cocoapi fixtures (``../shared/data/cocoeval_fixtures``: 100 val2014 images, fake bbox and
   segm results): ``evaluate_coco_predictions`` with each backend vs plain pycocotools;
2. a synthetic set of ``--num-images`` images (default 5,000) with 20 detections each (bbox),
   made in memory: ``COCOEvaluator`` end to end (load the ground truth, ``process`` tensor
   outputs, write ``coco_instances_results.json``, ``evaluate``) vs pycocotools on the same
   detections (load the ground truth, ``loadRes``, evaluate, accumulate, summarize).

Prints ``coco_eval_time_ratio: X`` (d2seg with ``--backend`` seconds / pycocotools seconds on the
synthetic set; target <= 0.5 with the faster backend) and whether the APs agree (|Δ| <= 1e-4).
"""

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from d2seg.evaluation.coco_evaluation import (
    BACKENDS,
    COCOEvaluator,
    evaluate_coco_predictions,
    load_coco_gt,
    validate_coco_results,
)

FIXTURES = Path(
    os.environ.get("D2SEG_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
) / "cocoeval_fixtures"
NUM_CLASSES = 10
GT_PER_IMAGE = 8
DETECTIONS_PER_IMAGE = 20
IMAGE_SIZE = 640


def pycocotools_stats(gt_json: str | Path, results: list[dict], iou_type: str) -> np.ndarray:
    """The reference: plain pycocotools from file to the 12 stats."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_json))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def timed(call):
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def bench_fixtures() -> None:
    gt_json = FIXTURES / "faster_coco_eval" / "cocoapi" / "instances_val2014_100.json"
    for iou_type in ("bbox", "segm"):
        dt_json = FIXTURES / "cocoapi_results" / f"instances_val2014_fake{iou_type}100_results.json"
        with open(dt_json) as f:
            raw = json.load(f)
        reference, reference_s = timed(lambda: pycocotools_stats(gt_json, raw, iou_type))
        for backend in BACKENDS:
            def d2seg_eval():
                coco_gt = load_coco_gt(gt_json, backend)
                results = validate_coco_results(raw, coco_gt, iou_type, str(dt_json))
                return evaluate_coco_predictions(coco_gt, results, iou_type, backend=backend)[1]

            coco_eval, seconds = timed(d2seg_eval)
            delta = np.abs(np.asarray(coco_eval.stats[:12]) - reference).max()
            print(f"fixtures {iou_type} {backend}: AP {coco_eval.stats[0]:.10f} (pycocotools "
                  f"{reference[0]:.10f}, max |Δ| of 12 stats {delta:.1e}); "
                  f"{seconds:.2f} s vs {reference_s:.2f} s")


def synthetic_dataset(num_images: int, seed: int) -> tuple[dict, list[tuple[dict, dict]]]:
    """A COCO ground truth and per-image (input, output) pairs with noisy copies of it."""
    rng = np.random.default_rng(seed)
    images, annotations, pairs = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": IMAGE_SIZE,
                       "width": IMAGE_SIZE})
        xy = rng.uniform(0, IMAGE_SIZE * 0.7, (GT_PER_IMAGE, 2))
        wh = rng.uniform(8, IMAGE_SIZE * 0.3, (GT_PER_IMAGE, 2))
        classes = rng.integers(0, NUM_CLASSES, GT_PER_IMAGE)
        for box, c in zip(np.concatenate([xy, wh], 1).round(2).tolist(), classes.tolist()):
            x, y, w, h = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                "bbox": box, "area": w * h, "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
        # 20 detections: jittered ground truth boxes (some relabelled) plus random boxes.
        source = rng.integers(0, GT_PER_IMAGE, DETECTIONS_PER_IMAGE)
        jitter = rng.normal(0, 0.08, (DETECTIONS_PER_IMAGE, 4)) * np.tile(wh[source], 2)
        boxes = np.concatenate([xy[source], xy[source] + wh[source]], 1) + jitter
        boxes[DETECTIONS_PER_IMAGE // 2:] = np.sort(
            rng.uniform(0, IMAGE_SIZE, (DETECTIONS_PER_IMAGE // 2, 2, 2)), axis=1
        ).transpose(0, 2, 1).reshape(-1, 4)
        det_classes = np.where(rng.random(DETECTIONS_PER_IMAGE) < 0.8, classes[source],
                               rng.integers(0, NUM_CLASSES, DETECTIONS_PER_IMAGE))
        output = {"instances": {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(rng.random(DETECTIONS_PER_IMAGE), dtype=torch.float32),
            "classes": torch.tensor(det_classes, dtype=torch.long),
        }}
        pairs.append(({"image_id": image_id}, output))
    categories = [{"id": c + 1, "name": f"class_{c}"} for c in range(NUM_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}, pairs


def bench_synthetic(num_images: int, backend: str, seed: int) -> None:
    coco, pairs = synthetic_dataset(num_images, seed)
    with tempfile.TemporaryDirectory() as tmp:
        gt_json = Path(tmp) / "gt.json"
        gt_json.write_text(json.dumps(coco))

        def d2seg_eval():
            evaluator = COCOEvaluator(gt_json=gt_json, tasks=("bbox",), output_dir=tmp,
                                      backend=backend)
            for inp, out in pairs:
                evaluator.process([inp], [out])
            return evaluator.evaluate()["bbox"]

        metrics, d2seg_s = timed(d2seg_eval)
        with open(Path(tmp) / "coco_instances_results.json") as f:
            results = json.load(f)
        reference, reference_s = timed(lambda: pycocotools_stats(gt_json, results, "bbox"))
    delta = abs(metrics["AP"] / 100 - reference[0])
    print(f"synthetic: {num_images} images x {DETECTIONS_PER_IMAGE} detections, bbox; "
          f"d2seg ({backend}) {d2seg_s:.2f} s, pycocotools {reference_s:.2f} s")
    print(f"AP d2seg {metrics['AP'] / 100:.10f} pycocotools {reference[0]:.10f} "
          f"|Δ| {delta:.1e}: {'equal' if delta <= 1e-4 else 'DIFFERENT'}")
    print(f"coco_eval_time_ratio: {d2seg_s / reference_s:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=5000)
    parser.add_argument("--backend", choices=BACKENDS, default="faster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-fixtures", action="store_true")
    args = parser.parse_args()
    if not args.skip_fixtures:
        if FIXTURES.is_dir():
            bench_fixtures()
        else:
            print(f"fixtures: not found at {FIXTURES} (set D2SEG_TEST_DATA); skipped")
    bench_synthetic(args.num_images, args.backend, args.seed)


if __name__ == "__main__":
    main()
