"""Evaluation: the DatasetEvaluator protocol, COCO / semantic / panoptic metrics, reports.

Typical use (what the trainer does for each test dataset)::

    evaluator = build_evaluator(cfg, name, folder)   # from the model's declared tasks
    results = inference_on_dataset(model, loader, evaluator)
    if results:  # the main process
        write_report(results, report_folder(cfg.OUTPUT_DIR, name), dataset_name=name,
                     **evaluator.report_inputs())
"""

from d2seg.evaluation.build import build_evaluator
from d2seg.evaluation.coco_evaluation import COCOEvaluator
from d2seg.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
)
from d2seg.evaluation.panoptic_evaluation import PanopticEvaluator
from d2seg.evaluation.report import report_folder, write_report
from d2seg.evaluation.sem_seg_evaluation import SemSegEvaluator

__all__ = [
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "PanopticEvaluator",
    "SemSegEvaluator",
    "build_evaluator",
    "inference_context",
    "inference_on_dataset",
    "report_folder",
    "write_report",
]
