"""Trials run by a worker: real training runs of a tiny U-Net, reported to an Optuna study."""

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from d2seg.tuning.job import build_job
from d2seg.tuning.worker import census, work

from .conftest import UNET


@pytest.fixture
def job(tmp_path, unet_opts, space_file):
    space = space_file("SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}\n")
    return build_job(UNET, str(space), opts=unet_opts, output=tmp_path / "study")


def test_a_trial_the_pruner_stops_is_recorded_as_pruned_at_its_first_evaluation(job):
    # A threshold no mIoU reaches: the pruner stops every trial at its first report.
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=101.0))
    work(job, study, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [2]  # TEST.EVAL_PERIOD 2 of SOLVER.MAX_ITER 4
    assert trial.user_attrs["iterations"] == 2
    folder = job.trial_dir(0)
    rows = [json.loads(line) for line in (folder / "metrics.json").read_text().splitlines()]
    assert max(r["iteration"] for r in rows) == 1  # the run stopped after its second step
    assert not list(folder.glob("*.pth"))  # a pruned trial keeps no checkpoint
    assert census(study).counted == 1


def test_a_complete_trial_is_a_training_run_valued_by_its_best_evaluation(job):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    work(job, study, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [2, 4]
    assert trial.value == max(trial.intermediate_values.values())
    folder = job.trial_dir(0)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["SOLVER"]["BASE_LR"] == pytest.approx(trial.params["SOLVER.BASE_LR"])
    assert cfg["SOLVER"]["EARLY_STOP"]["METRIC"] == "sem_seg/mIoU"
    rows = [json.loads(line) for line in (folder / "metrics.json").read_text().splitlines()]
    evaluated = {r["iteration"] + 1: r["sem_seg/mIoU"] for r in rows if "sem_seg/mIoU" in r}
    assert evaluated == pytest.approx(trial.intermediate_values)
    assert (folder / "model_best.pth").is_file()  # the best trial keeps its checkpoints


def test_a_config_that_cannot_train_fails_with_its_reason_and_the_study_goes_on(
        tmp_path, unet_opts, space_file):
    # A learning rate this large makes the loss non-finite within the first steps.
    space = space_file("SOLVER.BASE_LR: {loguniform: [1.0e+20, 1.0e+30]}\n")
    job = build_job(UNET, str(space), opts=unet_opts + ["SOLVER.OPTIMIZER", "SGD"],
                    output=tmp_path / "study")
    study = optuna.create_study(direction="maximize")
    work(job, study, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    for trial in study.trials:
        assert "loss became non-finite at iteration" in trial.user_attrs["fail_reason"]
