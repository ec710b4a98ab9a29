"""The pruner of a study: ``--pruner`` and its settings, built for a trial schedule.

Example::

    pruner = PrunerSpec.from_flags("median", startup=3).build(job.cfg)
"""

from dataclasses import dataclass

import optuna

from d2seg.config import CfgNode
from d2seg.errors import ConfigError

PRUNERS = ("median", "asha", "hyperband", "none")


@dataclass(frozen=True)
class PrunerSpec:
    """``--pruner NAME`` and, for ``median``, ``--pruner-startup`` (``startup``: complete trials
    before any trial is pruned) and ``--pruner-warmup`` (``warmup``: evaluations of each trial
    that never prune it; 0 prunes from the first one).

    The defaults are Optuna's ``MedianPruner``'s (5, 0). Why keep them (bench/RESULTS.md "tune
    pruning over seeds"): fewer start-up trials make the bar the median of fewer, often bad,
    early values (with 2 a study lost its best trial, 77 -> 40 mIoU), and what pruning saves
    depends far more on how many of the space's configurations do nothing early than on these
    settings. A warm-up makes every pruned trial cost more (on the bench with 3 start-up
    trials, one evaluation of it raised the iteration ratio from 0.55-0.91 to 0.75-0.94 over
    3 seeds, best trial unchanged; with 24-iteration trials and 5 start-up trials, from
    0.51 / 0.75 to 0.67 / 0.77 on seeds 0 / 1, best trial unchanged); set it when the first
    evaluations do not rank configurations yet and pruning there loses good trials (e.g.
    during a long LR warm-up). What matters more is trials long enough for their evaluations
    to rank configurations: the pruner then also stops trials at later evaluations."""

    name: str = "median"
    startup: int = 5
    warmup: int = 0

    @classmethod
    def from_flags(cls, name: str, *, startup: int | None = None, warmup: int | None = None
                   ) -> "PrunerSpec":
        """The spec of the command line; ``None`` = not given. ``ConfigError`` for a setting
        the pruner has not or a negative one."""
        given = {"--pruner-startup": startup, "--pruner-warmup": warmup}
        for flag, value in given.items():
            if value is not None and name != "median":
                raise ConfigError(f"{flag} sets the median pruner, not --pruner {name}; fix: "
                                  f"drop {flag} or use --pruner median")
            if value is not None and value < 0:
                raise ConfigError(f"{flag} {value}: must be at least 0; fix: give {flag} 0 "
                                  f"or more")
        defaults = cls()
        return cls(name, defaults.startup if startup is None else startup,
                   defaults.warmup if warmup is None else warmup)

    def build(self, cfg: CfgNode) -> optuna.pruners.BasePruner:
        """``median``: stop a trial whose best value so far is worse than the median of the
        complete trials at the same iteration (see the class docstring for when); ``asha``:
        asynchronous successive halving with rungs at 1, 2, 4, ... evaluation periods: a trial
        goes on past a rung only while its value there is in the better half of all trials
        that reached it (pruned ones included); ``hyperband``: several successive-halving
        brackets (reduction factor 3) over iterations, from one evaluation period to the whole
        schedule; ``none``. What each saves, and when it loses the best trial:
        bench/RESULTS.md "tune: stale BatchNorm statistics"."""
        period = cfg.TEST.EVAL_PERIOD
        if self.name == "median":
            # Evaluations are reported at iteration k * period: those up to warmup * period wait.
            return optuna.pruners.MedianPruner(n_startup_trials=self.startup,
                                               n_warmup_steps=self.warmup * period + 1)
        if self.name == "asha":
            # Halving (not Optuna's default quartering): a 24-iteration trial evaluated every 3
            # then has rungs at 3, 6, 12 and 24 instead of only 3 and 12.
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=max(1, period), reduction_factor=2, min_early_stopping_rate=0
            )
        if self.name == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=max(1, period), max_resource=cfg.SOLVER.MAX_ITER
            )
        return optuna.pruners.NopPruner()
