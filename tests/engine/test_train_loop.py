"""The train loop and hooks on a toy model: what a user sees in OUTPUT_DIR and the console."""

import contextlib
import itertools
import json
import os
import time

import pytest
import torch
from PIL import Image
from torch import nn

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.engine import hooks
from d2seg.engine.train_loop import SimpleTrainer
from d2seg.errors import ConfigError
from d2seg.utils.events import JSONWriter


class ToyRegressor(nn.Module):
    """Fits y = 2x; returns a loss dict like a meta-architecture in training mode."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.norm = nn.BatchNorm1d(1)

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        return {"loss_fit": ((self.linear(self.norm(x)) - 2 * x) ** 2).mean()}


def toy_loader(value=None):
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            xs = torch.rand(4, 1, generator=gen) if value is None else torch.full((4, 1), value)
            yield [{"x": x} for x in xs]

    return batches()


def test_non_finite_loss_stops_with_iteration_and_term_and_no_checkpoint(tmp_path):
    model = ToyRegressor()
    trainer = SimpleTrainer(model, toy_loader(float("nan")), torch.optim.SGD(model.parameters(), 0.1))
    ckpt = D2SegCheckpointer(model, str(tmp_path))
    trainer.register_hooks([hooks.PeriodicCheckpointer(ckpt, 1, lambda: {})])
    with pytest.raises(ConfigError, match=r"non-finite at iteration 1 \(loss_fit=nan\)"):
        trainer.train(0, 5)
    assert not any(name.endswith(".pth") for name in os.listdir(tmp_path))


class SlowEvaluation(hooks.HookBase):
    """Stands for an evaluation that takes ``seconds`` after training."""

    def __init__(self, seconds):
        self.seconds = seconds

    def after_train(self):
        time.sleep(self.seconds)


@pytest.mark.parametrize("value", [None, float("nan")])
def test_train_seconds_spans_the_steps_and_hooks_also_when_training_fails(value):
    model = ToyRegressor()
    trainer = SimpleTrainer(model, toy_loader(value), torch.optim.SGD(model.parameters(), 0.1))
    trainer.register_hooks([SlowEvaluation(0.3)])
    time.sleep(1.0)  # before train(): not training time
    with contextlib.nullcontext() if value is None else pytest.raises(ConfigError):
        trainer.train(0, 3)
    assert 0.3 <= trainer.train_seconds < 1.3


def test_metrics_json_lr_checkpoints_and_curves(tmp_path):
    model = ToyRegressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    trainer = SimpleTrainer(model, toy_loader(), opt)
    ckpt = D2SegCheckpointer(model, str(tmp_path), optimizer=opt)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(opt, sched),
        hooks.PeriodicCheckpointer(ckpt, 4, lambda: {}, max_to_keep=1),
        hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))], period=2),
        hooks.TrainingCurves(str(tmp_path)),
    ])
    trainer.train(0, 10)

    lines = [json.loads(l) for l in (tmp_path / "metrics.json").read_text().splitlines()]
    # the first iteration at once (the starting loss), then every period
    assert [l["iteration"] for l in lines] == [0, 1, 3, 5, 7, 9]
    assert {"total_loss", "loss_fit", "lr", "time", "data_time"} <= set(lines[0])
    assert lines[-1]["lr"] == pytest.approx(0.025)
    # keep-last-1: only the newest periodic checkpoint (the last iteration's) survives, plus
    # the final one
    pths = sorted(n for n in os.listdir(tmp_path) if n.endswith(".pth"))
    assert pths == ["model_0000009.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    with Image.open(tmp_path / "training_curves.png") as img:
        assert img.size[0] > 300 and img.size[1] > 200


def fake_eval_sequence(values):
    results = iter(values)
    return lambda: {"segm": {"AP": next(results)}}


def test_best_checkpoint_and_early_stopping(tmp_path):
    model = ToyRegressor()
    trainer = SimpleTrainer(model, toy_loader(), torch.optim.SGD(model.parameters(), 0.01))
    ckpt = D2SegCheckpointer(model, str(tmp_path))
    trainer.register_hooks([
        hooks.PeriodicCheckpointer(ckpt, 5, lambda: {}),
        hooks.EvalHook(2, fake_eval_sequence([10.0, 30.0, 20.0, 25.0, 5.0, 50.0])),
        hooks.BestCheckpointer(ckpt, "segm/AP", "max"),
        hooks.EarlyStopping("segm/AP", "max", patience=3),
    ])
    trainer.train(0, 100)
    # evaluations at iterations 2,4,6,8,10: best 30 at 4, then 3 evaluations without gain
    assert trainer.iter + 1 == 10
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert best["iteration"] == 3 and best["segm/AP"] == 30.0
    # --resume continues from the newest full checkpoint, not from the best one
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"


def test_validation_loss_keeps_batchnorm_statistics(tmp_path):
    model = ToyRegressor()
    val_batches = list(itertools.islice(toy_loader(3.0), 2))
    trainer = SimpleTrainer(model, toy_loader(), torch.optim.SGD(model.parameters(), 0.01))
    val_hook = hooks.ValidationLoss(5, model, val_batches)
    trainer.register_hooks([val_hook])
    trainer.train(0, 4)
    running_mean = model.norm.running_mean.clone()
    val_hook._compute()
    assert torch.equal(model.norm.running_mean, running_mean)
    assert "validation_loss" in trainer.storage.latest()


def test_after_early_stopping_the_best_model_is_evaluated_once_and_named(tmp_path):
    model = ToyRegressor()
    trainer = SimpleTrainer(model, toy_loader(), torch.optim.SGD(model.parameters(), 0.01))
    ckpt = D2SegCheckpointer(model, str(tmp_path))
    values = [10.0, 30.0, 20.0, 25.0, 5.0, 50.0]
    evaluations = fake_eval_sequence(values)
    calls = []

    def evaluate_best(best_model, description):
        calls.append((best_model.state_dict(), description))

    best = hooks.BestCheckpointer(ckpt, "segm/AP", "max")
    trainer.register_hooks([
        hooks.EvalHook(2, evaluations),
        best,
        hooks.BestModelEvaluation(best, evaluate_best),
        hooks.EarlyStopping("segm/AP", "max", patience=3),
    ])
    trainer.train(0, 100)
    # evaluated at iterations 2, 4, 6, 8, 10 — the stop at 10 is not evaluated a second time
    assert trainer.storage.history("segm/AP").values()[-1][0] == 5.0
    assert len(trainer.storage.history("segm/AP").values()) == 5
    [(state, description)] = calls
    assert description == "model_best.pth (iteration 4, best segm/AP)"
    saved = torch.load(tmp_path / "model_best.pth", weights_only=True)["model"]
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert not all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)


def test_precise_bn_sets_the_statistics_of_the_batches_it_is_given():
    """TEST.PRECISE_BN: after the last iteration (and every period) BatchNorm holds the mean and
    (population) variance of NUM_ITER batches as a whole, not a running average."""
    model = ToyRegressor()
    trainer = SimpleTrainer(model, toy_loader(), torch.optim.SGD(model.parameters(), 0.01))
    precise = [[{"x": torch.tensor([v])} for v in values]
               for values in ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0])]
    drawn, built = [], []

    def loader():
        built.append(1)
        for batch in itertools.cycle(precise):
            drawn.append(batch)
            yield batch

    trainer.register_hooks([hooks.PreciseBN(3, model, loader, 2)])
    trainer.train(0, 4)
    assert built == [1] and len(drawn) == 4  # after iteration 3 (the period) and 4 (the last)
    pooled = torch.arange(1.0, 9.0)
    torch.testing.assert_close(model.norm.running_mean, pooled.mean().reshape(1))
    torch.testing.assert_close(model.norm.running_var, pooled.var(correction=0).reshape(1))
