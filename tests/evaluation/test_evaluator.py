"""inference_on_dataset: eval mode, no_grad, training mode restored; DDP results on rank 0."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from d2seg.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from d2seg.evaluation.sem_seg_evaluation import SemSegEvaluator


class RecordingModel(torch.nn.Module):
    """Returns one output per input; records the mode and grad state it ran under."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.calls = []

    def forward(self, inputs):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return [{"value": self.weight * inp["x"]} for inp in inputs]


class SumEvaluator(DatasetEvaluator):
    def __init__(self, key):
        self.key = key
        self.total = None

    def reset(self):
        self.total = 0.0

    def process(self, inputs, outputs):
        self.total += sum(float(o["value"]) for o in outputs)

    def evaluate(self):
        return {self.key: {"sum": self.total}}


def _loader():
    return [[{"x": 1.0}, {"x": 2.0}], [{"x": 3.0}]]


def test_inference_runs_in_eval_mode_without_grad_and_restores_training():
    model = RecordingModel().train()
    evaluator = DatasetEvaluators([SumEvaluator("a"), SumEvaluator("b")])
    results = inference_on_dataset(model, _loader(), evaluator)
    assert results == {"a": {"sum": 6.0}, "b": {"sum": 6.0}}
    assert model.calls == [(False, False), (False, False)]
    assert model.training


def test_evaluators_resets_before_a_second_run():
    evaluator = SumEvaluator("a")
    model = RecordingModel()
    inference_on_dataset(model, _loader(), evaluator)
    assert inference_on_dataset(model, _loader(), evaluator) == {"a": {"sum": 6.0}}


def test_clashing_result_keys_are_an_error():
    evaluator = DatasetEvaluators([SumEvaluator("a"), SumEvaluator("a")])
    with pytest.raises(ValueError, match="'a'"):
        inference_on_dataset(RecordingModel(), _loader(), evaluator)


def test_model_error_still_restores_training_mode():
    model = RecordingModel().train()
    with pytest.raises(KeyError):
        inference_on_dataset(model, [[{"y": 1.0}]], None)
    assert model.training



class ConstantSemSegModel(torch.nn.Module):
    """Predicts class 0 everywhere on a 4×4 image."""

    def forward(self, inputs):
        logits = torch.zeros(2, 4, 4)
        logits[0] = 1.0
        return [{"sem_seg": logits} for _ in inputs]


def _two_process_worker(rank, init_file, folder):
    """Rank r evaluates one 4×4 image labelled all r; results go to folder/rank<r>.json."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        png = Path(folder) / f"gt{rank}.png"
        Image.fromarray(np.full((4, 4), rank, np.uint8)).save(png)
        results = inference_on_dataset(ConstantSemSegModel(), [[{"sem_seg_file_name": str(png)}]],
                                       SemSegEvaluator(num_classes=2))
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_distributed_results_are_gathered_on_rank_0(tmp_path):
    # fork: with --import-mode=importlib a spawned child cannot import this test module.
    torch.multiprocessing.start_processes(
        _two_process_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
        start_method="fork",
    )
    main = json.loads((tmp_path / "rank0.json").read_text())["sem_seg"]
    assert json.loads((tmp_path / "rank1.json").read_text()) == {}
    # 16 pixels of class 0 right, 16 of class 1 predicted as 0: both ranks' pixels counted.
    assert main["pACC"] == pytest.approx(50.0)
    assert main["IoU-class_0"] == pytest.approx(50.0) and main["IoU-class_1"] == 0.0
