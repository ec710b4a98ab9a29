#!/usr/bin/env python
"""Evaluate any COCO results file against its ground truth and write the evaluation report.

    python tools/evaluate_coco.py --gt val.json --dt coco_instances_results.json \
        --iou-type segm --output eval_report [--backend faster]

Prints the twelve COCOeval numbers; with ``--output`` writes report.md, results.json and the
plots there. A malformed results file (unknown image or category id, missing field, corrupt
RLE) is one error line naming the entry index, exit status 2.
"""

import argparse

from d2seg.data.io import read_json
from d2seg.evaluation.coco_evaluation import (
    BACKENDS,
    COCO_STAT_NAMES,
    evaluate_coco_predictions,
    instance_confusion_matrix,
    load_coco_gt,
    validate_coco_results,
)
from d2seg.evaluation.report import write_report
from d2seg.utils.cli import run_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="COCO ground-truth json")
    parser.add_argument("--dt", required=True, help="COCO results json (list of detections)")
    parser.add_argument("--iou-type", choices=("bbox", "segm"), default="segm")
    parser.add_argument("--output", help="folder for report.md, results.json and plots")
    parser.add_argument("--backend", choices=BACKENDS, default="pycocotools")
    args = parser.parse_args()

    coco_gt = load_coco_gt(args.gt, args.backend)
    results = validate_coco_results(
        read_json(args.dt, "COCO results file"), coco_gt, args.iou_type, args.dt
    )
    class_names = [coco_gt.cats[c]["name"] for c in sorted(coco_gt.getCatIds())]
    metrics, coco_eval = evaluate_coco_predictions(
        coco_gt, results, args.iou_type, backend=args.backend, class_names=class_names
    )
    stats = coco_eval.stats if coco_eval is not None else [float("nan")] * len(COCO_STAT_NAMES)
    print(f"type={args.iou_type} backend={args.backend} detections={len(results)}")
    for name, value in zip(COCO_STAT_NAMES, stats):
        print(f"{name} = {float(value)!r}")
    if args.output:
        report = write_report(
            {args.iou_type: metrics},
            args.output,
            dataset_name=args.gt,
            thing_classes=class_names,
            coco_evals={args.iou_type: coco_eval},
            instance_confusion=instance_confusion_matrix(coco_gt, results, args.iou_type),
        )
        print(f"report: {report}")


if __name__ == "__main__":
    run_cli(main)
