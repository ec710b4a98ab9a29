"""Training hooks: timing, LR schedule, precise BatchNorm statistics, checkpoints, evaluation,
best model, early stopping, validation loss, metric writers and the training-curves plot."""

import copy
import logging
import math
import os
import time
from typing import Any, Callable, Iterable

import torch
from fvcore.nn.precise_bn import update_bn_stats
from torch import nn

from d2seg.checkpoint import D2SegCheckpointer, load_checkpoint_file
from d2seg.engine.train_loop import HookBase, StopTraining
from d2seg.utils import comm
from d2seg.utils.training_plots import write_training_plots

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Puts ``time``: seconds per iteration (data + step + the hooks before this one)."""

    def before_step(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._start)


class LRScheduler(HookBase):
    """Puts ``lr`` (of the largest param group) and steps the scheduler every iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any):
        self.optimizer = optimizer
        self.scheduler = scheduler
        self._group = max(range(len(optimizer.param_groups)),
                          key=lambda i: len(optimizer.param_groups[i]["params"]))

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("lr", self.optimizer.param_groups[self._group]["lr"])
        self.scheduler.step()


class PreciseBN(HookBase):
    """Detectron2's ``TEST.PRECISE_BN``: every ``period`` iterations (0 = never) and after the
    last one, the BatchNorm statistics of ``model`` are recomputed with its weights fixed, as
    the population mean and variance of ``num_iter`` training batches (fvcore's
    ``update_bn_stats``) instead of the running average over changing weights. Registered
    before the checkpointer and the evaluation, so that both see the recomputed statistics.

    ``data_loader`` builds the loader of those batches the first time they are needed (a
    loader of its own: the training stream is not consumed).
    """

    def __init__(
        self, period: int, model: nn.Module, data_loader: Callable[[], Iterable[list[dict]]],
        num_iter: int,
    ):
        self.period = period
        self.model = model
        self.num_iter = num_iter
        self._build_loader = data_loader
        self._batches: Any = None

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done == self.trainer.max_iter or (self.period > 0 and done % self.period == 0):
            self.update_stats()

    def update_stats(self) -> None:
        if self._batches is None:
            self._batches = iter(self._build_loader())
        logger.info(f"Precise BatchNorm statistics from {self.num_iter} batches")
        update_bn_stats(self.model, self._batches, self.num_iter)


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{iter:07d}.pth`` every ``period`` iterations, after the step at which a
    SIGINT/SIGTERM stop was agreed and after the last step, keeping the newest ``max_to_keep``
    periodic files (0 = all); and at the end ``model_final.pth``: the model and its metadata
    only, no optimizer (``last_checkpoint`` keeps naming the full file).

    Each file also holds ``iteration`` and ``extra_state()`` (the trainer's RNG states, data
    seed and hook states), so that ``--resume`` continues exactly where the run stopped. The
    file of iteration ``i`` is written once all hooks are done with ``i`` (before step ``i + 1``
    or at the end): evaluation after step ``i`` draws random numbers too, and the saved RNG
    states must be those step ``i + 1`` starts from. ``extra_state`` is called on every rank at
    each save (it may be a collective, e.g. gathering every rank's RNG state); only rank 0
    writes the file, atomically.
    """

    def __init__(
        self,
        checkpointer: D2SegCheckpointer,
        period: int,
        extra_state: Callable[[], dict[str, Any]],
        max_to_keep: int = 0,
    ):
        self.checkpointer = checkpointer
        self.period = period
        self.extra_state = extra_state
        self.max_to_keep = max_to_keep
        self._recent: list[str] = []
        self._saved_iter = -1

    def _due(self, it: int) -> bool:
        return self.period > 0 and (it + 1) % self.period == 0

    def _save_periodic(self, it: int) -> str:
        name = f"model_{it:07d}"
        path = os.path.join(self.checkpointer.save_dir, f"{name}.pth")
        if it == self._saved_iter:
            return path
        main = comm.is_main_process()
        if main:
            # Listed before saving, so that the saved hook state includes the file itself.
            self._recent.append(path)
        extra = self.extra_state()
        if main:
            self.checkpointer.save(name, iteration=it, **extra)
            if self.max_to_keep > 0:
                while len(self._recent) > self.max_to_keep:
                    old = self._recent.pop(0)
                    if os.path.exists(old):
                        os.remove(old)
        self._saved_iter = it
        return path

    def before_step(self) -> None:
        previous = self.trainer.iter - 1
        if previous >= self.trainer.start_iter and self._due(previous):
            self._save_periodic(previous)

    def on_interrupt(self) -> str:
        return self._save_periodic(self.trainer.iter)

    def after_train(self) -> None:
        if self.trainer.completed:
            # The full state of the last iteration stays resumable (a longer MAX_ITER, or a
            # run stopped early); model_final.pth is the lean file to ship.
            self._save_periodic(self.trainer.iter)
            if comm.is_main_process():
                self.checkpointer.save(
                    "model_final", tag_last=False, model_only=True, iteration=self.trainer.iter
                )

    def state_dict(self) -> dict[str, Any]:
        # After --resume, files of the first session still count towards max_to_keep.
        return {"recent": list(self._recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._recent = list(state["recent"])


class EvalHook(HookBase):
    """Runs ``eval_function() -> {task: {metric: value}}`` every ``period`` iterations and after
    training (unless the last iteration was just evaluated); puts each finite value as
    ``task/metric`` (e.g. ``segm/AP``)."""

    def __init__(self, period: int, eval_function: Callable[[], dict[str, dict[str, float]]]):
        self.period = period
        self.eval_function = eval_function
        self._evaluated_iter = -1

    def _evaluate(self) -> None:
        self._evaluated_iter = self.trainer.iter
        results = self.eval_function()
        for task, metrics in results.items():
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.trainer.storage.put_scalar(f"{task}/{name}", value)
        comm.synchronize()

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and done % self.period == 0 and done != self.trainer.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        # Early stopping ends the run right after an evaluation: that model is not evaluated
        # twice.
        if self.trainer.completed and self._evaluated_iter != self.trainer.iter:
            self._evaluate()


class _MetricWatcher(HookBase):
    """Base of hooks that react to each new value of one evaluation metric."""

    def __init__(self, metric: str, mode: str):
        self.metric = metric
        self.mode = mode
        self.best: float | None = None
        self.best_iter = -1
        self._seen_iter = -1

    def _new_value(self) -> float | None:
        value = self.trainer.storage.latest().get(self.metric)
        if value is None or value[1] <= self._seen_iter:
            return None
        self._seen_iter = value[1]
        return value[0]

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iter": self.best_iter, "seen_iter": self._seen_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_iter = state["best"], state["best_iter"]
        self._seen_iter = state["seen_iter"]


class BestCheckpointer(_MetricWatcher):
    """Saves ``model_best.pth`` (model and metadata only, no optimizer) whenever ``metric``
    improves (``mode`` "max" or "min") and ``worth_saving(value)`` (default: always; a tuning
    trial skips the file while its best value cannot be among the trials it keeps)."""

    def __init__(self, checkpointer: D2SegCheckpointer, metric: str, mode: str,
                 worth_saving: Callable[[float], bool] = lambda value: True):
        super().__init__(metric, mode)
        self.checkpointer = checkpointer
        self.worth_saving = worth_saving

    def _check(self) -> None:
        value = self._new_value()
        if value is None or not self._improves(value):
            return
        self.best, self.best_iter = value, self.trainer.iter
        logger.info(f"New best {self.metric} = {value:.4f} at iteration {self.trainer.iter + 1}")
        if comm.is_main_process() and self.worth_saving(value):
            self.checkpointer.save(
                "model_best",
                tag_last=False,
                model_only=True,
                iteration=self.trainer.iter,
                **{self.metric: value},
            )

    def after_step(self) -> None:
        self._check()

    def after_train(self) -> None:
        if self.trainer.completed:
            self._check()


class BestModelEvaluation(HookBase):
    """After training, when ``model_best.pth`` is not the final model, evaluates it once with
    ``evaluate(model, description)``, so that the closing report describes the model a user
    ships, not the last one. Runs on every rank (evaluation is a collective)."""

    def __init__(self, best: BestCheckpointer, evaluate: Callable[[nn.Module, str], Any]):
        self.best = best
        self.evaluate = evaluate

    def after_train(self) -> None:
        best_iter = self.best.best_iter
        if not self.trainer.completed or best_iter < 0 or best_iter == self.trainer.iter:
            return
        comm.synchronize()  # rank 0 has finished writing model_best.pth
        path = os.path.join(self.best.checkpointer.save_dir, "model_best.pth")
        model = copy.deepcopy(self.best.checkpointer.model)
        model.load_state_dict(load_checkpoint_file(path)["model"])
        description = f"model_best.pth (iteration {best_iter + 1}, best {self.best.metric})"
        logger.info(f"Closing evaluation of {description}")
        self.evaluate(model, description)


class EarlyStopping(_MetricWatcher):
    """Ends training when ``metric`` has not improved for ``patience`` evaluations."""

    def __init__(self, metric: str, mode: str, patience: int):
        super().__init__(metric, mode)
        self.patience = patience
        self.bad_evals = 0

    def after_step(self) -> None:
        value = self._new_value()
        if value is None:
            return
        if self._improves(value):
            self.best, self.best_iter, self.bad_evals = value, self.trainer.iter, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            raise StopTraining(
                f"{self.metric} has not improved for {self.patience} evaluations "
                f"(best {self.best:.4f} at iteration {self.best_iter + 1})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.bad_evals = state["bad_evals"]


class ValidationLoss(HookBase):
    """Every ``period`` iterations, puts the mean training losses on a validation loader as
    ``validation_loss`` and ``val/<loss name>``.

    The model runs in training mode (losses need targets) under ``torch.no_grad()``, with its
    BatchNorm layers switched to eval so that validation batches do not change their statistics.
    """

    def __init__(self, period: int, model: nn.Module, data_loader: Iterable[list[dict]]):
        self.period = period
        self.model = model
        self.data_loader = data_loader

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and (done % self.period == 0 or done == self.trainer.max_iter):
            self._compute()

    def _compute(self) -> None:
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.model.train()
        for m in norms:
            m.eval()
        sums: dict[str, float] = {}
        batches = 0
        with torch.no_grad():
            for batch in self.data_loader:
                for k, v in self.model(batch).items():
                    sums[k] = sums.get(k, 0.0) + v.item()
                batches += 1
        for m in norms:
            m.train()
        if batches == 0:
            return
        means = {k: v / batches for k, v in sums.items()}
        storage = self.trainer.storage
        storage.put_scalar("validation_loss", sum(means.values()))
        for k, v in means.items():
            storage.put_scalar(f"val/{k}", v)


class PeriodicWriter(HookBase):
    """Calls every writer (metrics.json, TensorBoard, progress) after the first iteration (so a
    user sees the starting loss at once), then every ``period`` iterations and at the end."""

    def __init__(self, writers: list[Any], period: int = 20):
        self.writers = writers
        self.period = period

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        first = self.trainer.iter == self.trainer.start_iter
        if first or done % self.period == 0 or done == self.trainer.max_iter:
            for writer in self.writers:
                writer.write(self.trainer.storage)

    def after_train(self) -> None:
        for writer in self.writers:
            writer.write(self.trainer.storage)
            writer.close()


class TrainingCurves(HookBase):
    """After training, plots ``metrics.json`` to ``training_curves.png`` (losses, LR, headline
    metrics) and ``per_class_metrics.png`` (see :mod:`d2seg.utils.training_plots`)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def after_train(self) -> None:
        if comm.is_main_process():
            write_training_plots(self.output_dir)
