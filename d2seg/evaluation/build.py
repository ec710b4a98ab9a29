"""The evaluators of a model, chosen by the tasks its meta-architecture declares.

A meta-architecture lists what it is evaluated on (``tasks``, see
:mod:`d2seg.modeling.meta_arch.declarations`); each task has one evaluator here, built with
its ``from_config``. A newly registered meta-architecture that declares ``("sem_seg",)`` gets
:class:`SemSegEvaluator` without any change to the trainer.

Example::

    evaluator = build_evaluator(cfg, "balloon_val", "runs/balloon/inference/balloon_val")
    results = inference_on_dataset(model, data_loader, evaluator)
"""

import os

from d2seg.config import CfgNode
from d2seg.evaluation.coco_evaluation import COCOEvaluator
from d2seg.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators
from d2seg.evaluation.panoptic_evaluation import PanopticEvaluator
from d2seg.evaluation.sem_seg_evaluation import SemSegEvaluator
from d2seg.modeling.meta_arch.declarations import model_tasks

TASK_EVALUATORS: dict[str, type[DatasetEvaluator]] = {
    "instances": COCOEvaluator,
    "sem_seg": SemSegEvaluator,
    "panoptic_seg": PanopticEvaluator,
}


def build_evaluator(
    cfg: CfgNode,
    dataset_name: str,
    output_dir: str | os.PathLike | None = None,
    tasks: tuple[str, ...] | None = None,
) -> DatasetEvaluator:
    """One evaluator per task (default: the config's meta-architecture's ``tasks``), combined
    into :class:`DatasetEvaluators` when there are several."""
    evaluators = [
        TASK_EVALUATORS[task](**TASK_EVALUATORS[task].from_config(cfg, dataset_name, output_dir))
        for task in (tasks or model_tasks(cfg))
    ]
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
