"""What each ``--pruner`` stops, on trials whose curves are known (no training)."""

import optuna
import pytest

from d2seg.config import get_cfg
from d2seg.tuning.pruner import PrunerSpec


def run_study(name: str, starts: list[float], *, period: int = 3, iters: int = 24
              ) -> list[int | None]:
    """A study of ``len(starts)`` trials, trial i reporting ``starts[i] + step`` at every
    ``period``; the step each was pruned at, ``None`` when it ran to the end."""
    cfg = get_cfg()
    cfg.TEST.EVAL_PERIOD, cfg.SOLVER.MAX_ITER = period, iters
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=PrunerSpec(name).build(cfg))
    for start in starts:
        def objective(trial: optuna.Trial) -> float:
            for step in range(period, iters + 1, period):
                trial.report(start + step, step)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at", step)
                    raise optuna.TrialPruned()
            return start + iters

        study.optimize(objective, n_trials=1)
    return [t.user_attrs.get("pruned_at") for t in study.trials]


def test_asha_keeps_the_better_half_at_each_rung_of_1_2_4_8_periods():
    pruned_at = run_study("asha", [50, 10, 60, 20, 70, 30, 55])
    # rung 3 (1 period): 10, 20 and 30 are each in the worse half of the trials there so far
    assert pruned_at[:6] == [None, 3, None, 3, None, 3]
    # 55 passes rung 3 (3rd of 7) but is 3rd of the 4 trials at rung 6 (2 periods)
    assert pruned_at[6] == 6


def test_median_waits_for_its_startup_trials_then_stops_trials_below_the_median():
    pruned_at = run_study("median", [50, 10, 60, 20, 70, 30, 55])
    assert pruned_at[:5] == [None] * 5  # the 5 start-up trials always complete
    assert pruned_at[5] == 3  # 30 + 3 < the median (50 + 3) at the first evaluation
    assert pruned_at[6] is None  # 55 is above it at every evaluation


@pytest.mark.parametrize("name", ["asha", "hyperband", "median"])
def test_the_best_trial_is_never_stopped(name):
    pruned_at = run_study(name, [40, 30, 20, 10, 35, 25, 90, 15])
    assert pruned_at[6] is None
