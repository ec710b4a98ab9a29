"""A training run as an Optuna trial: each evaluation goes to the pruner.

:class:`TrialTrainer` is the :class:`~d2seg.engine.trainer.DefaultTrainer` of
``tools/train_net.py`` with one more hook, :class:`TrialReporter`, registered after the
evaluation hooks: every new value of the tuned metric is reported to the trial at its iteration,
and when the pruner says the trial is worse than the others were at that point, training stops
with :class:`optuna.TrialPruned` (the writers still flush ``metrics.json``). What a trial does
not need is left out: the closing re-evaluation of ``model_best.pth`` (its value is already
known), the iteration progress bar (the study shows one bar over trials; the trial's progress
goes to its ``log.txt``) and the figures (``PLOTS = False``: no report PNGs, no training
curves; drawing them took ~40 % of a trial on the bench's tiny problem).

Example::

    trainer = TrialTrainer(cfg, trial=trial, metric="sem_seg/mIoU", mode="max")
    trainer.resume_or_load(resume=False)
    trainer.train()
    value = trainer.reporter.best
"""

import optuna
from optuna.trial import TrialState

from d2seg.config import CfgNode
from d2seg.engine import hooks
from d2seg.engine.hooks import _MetricWatcher
from d2seg.engine.trainer import DefaultTrainer
from d2seg.utils.events import ProgressWriter


class TrialReporter(_MetricWatcher):
    """Reports each new ``metric`` value to ``trial`` at step = iterations done; raises
    :class:`optuna.TrialPruned` when ``trial.should_prune()``. ``best`` is the best value
    reported (that of ``model_best.pth``), ``None`` until one is."""

    def __init__(self, trial: optuna.Trial, metric: str, mode: str):
        super().__init__(metric, mode)
        self.trial = trial

    def _report(self) -> float | None:
        value = self._new_value()
        if value is not None:
            self.trial.report(value, self.trainer.iter + 1)
            if self._improves(value):
                self.best, self.best_iter = value, self.trainer.iter
        return value

    def after_step(self) -> None:
        value = self._report()
        if value is not None and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"{self.metric} = {value:.4g} at iteration {self.trainer.iter + 1}"
            )

    def after_train(self) -> None:
        if self.trainer.completed:  # the closing evaluation of EvalHook
            self._report()


class TrialTrainer(DefaultTrainer):
    """``DefaultTrainer`` whose evaluations are reported to an Optuna trial (see the module
    docstring). ``metric``/``mode`` must be the config's ``SOLVER.EARLY_STOP.METRIC``/``MODE``,
    so that ``model_best.pth`` is the trial's best model by the tuned metric."""

    PLOTS = False  # the user reads the study's plots, not each trial's

    def __init__(self, cfg: CfgNode, *, trial: optuna.Trial, metric: str, mode: str,
                 keep_best: int = 1):
        self.reporter = TrialReporter(trial, metric, mode)
        self.keep_best = keep_best
        super().__init__(cfg)

    def may_be_kept(self, value: float) -> bool:
        """Whether a trial valued ``value`` ranks among the ``keep_best`` best complete trials,
        whose checkpoints the study keeps. A trial that ends among them passed this when it
        reached its best value (later trials only raise the bar), so its ``model_best.pth``
        is written; the others skip writing a file that would be deleted after the trial."""
        study = self.reporter.trial.study
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        better = sum(t.value > value if self.reporter.mode == "max" else t.value < value
                     for t in complete)
        return better < self.keep_best

    def build_hooks(self) -> list[hooks.HookBase]:
        out = [h for h in super().build_hooks() if not isinstance(h, hooks.BestModelEvaluation)]
        for hook in out:
            if isinstance(hook, hooks.BestCheckpointer):
                hook.worth_saving = self.may_be_kept
            if isinstance(hook, hooks.PeriodicWriter):
                hook.writers = [
                    ProgressWriter(self.cfg.SOLVER.MAX_ITER, use_bar=False)
                    if isinstance(w, ProgressWriter) else w
                    for w in hook.writers
                ]
        return [*out, self.reporter]
