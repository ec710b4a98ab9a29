"""Trials run by a worker: real training runs of a tiny U-Net, reported to an Optuna study."""

import gc
import json
import os
import socket
import subprocess
import sys

import optuna
import psutil
import pytest
import yaml
from optuna.trial import TrialState

from d2seg.errors import ConfigError
from d2seg.tuning.job import build_job
from d2seg.tuning.pruner import PrunerSpec
from d2seg.tuning.study import open_study
from d2seg.tuning.worker import Census, census, fail_orphans, retry_lost_trials, work

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


@pytest.mark.parametrize("startup, warmup, state, evaluated", [
    (1, 0, TrialState.PRUNED, [2]),  # pruned at its first evaluation
    (1, 1, TrialState.PRUNED, [2, 4]),  # the first evaluation is warm-up: pruned at the second
    (2, 0, TrialState.COMPLETE, [2, 4, 6]),  # one complete trial is fewer than the start-up 2
])
def test_the_median_pruner_waits_for_its_startup_trials_and_warmup_evaluations(
        tmp_path, unet_opts, space_file, startup, warmup, state, evaluated):
    space = space_file("SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}\n")
    spec = PrunerSpec.from_flags("median", startup=startup, warmup=warmup)
    job = build_job(UNET, str(space), opts=unet_opts + ["SOLVER.MAX_ITER", "6"],
                    output=tmp_path / "study", pruner=spec)
    study = open_study(job, optuna.storages.InMemoryStorage(), name="s", pruner=spec, seed=0)
    # A complete trial no mIoU reaches at any evaluation: the median every trial is below.
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=101.0, params={"SOLVER.BASE_LR": 1e-3},
        distributions={"SOLVER.BASE_LR": optuna.distributions.FloatDistribution(1e-4, 1e-2,
                                                                                log=True)},
        intermediate_values={2: 101.0, 4: 101.0, 6: 101.0}))
    work(job, study, n_trials=2)
    trial = study.trials[1]
    assert trial.state == state
    assert sorted(trial.intermediate_values) == evaluated
    assert trial.user_attrs["iterations"] == evaluated[-1]


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
    # A trial draws no figures; its evaluation reports keep their tables and results.
    assert not list(folder.rglob("*.png"))
    (report,) = folder.glob("inference/*/report.md")
    assert "| all |" in report.read_text()
    assert (report.parent / "results.json").is_file()
    assert 0 < trial.user_attrs["seconds"]
    assert gc.get_freeze_count() == 0  # the objects work() kept out of collections are back


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


def _add(study, state, params=None, **user_attrs):
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(
        state=state, value=0.5 if state == TrialState.COMPLETE else None,
        params=params or {"x": 0.5}, distributions=distributions, user_attrs=user_attrs))


def test_lost_trials_are_retried_with_their_parameters_and_not_counted():
    study = optuna.create_study()
    _add(study, TrialState.COMPLETE)
    _add(study, TrialState.FAIL, fail_reason="loss became non-finite")  # a result: counted
    _add(study, TrialState.FAIL, {"x": 0.25})  # lost (Ctrl-C, killed): retried
    _add(study, TrialState.FAIL, attempt=3)  # lost a third time: counted as failed
    assert census(study) == Census(counted=3, running=0, waiting=0)
    retry_lost_trials(study)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    assert waiting[0].user_attrs == {"retry_of": 2, "attempt": 2}
    assert waiting[0].system_attrs["fixed_params"] == {"x": 0.25}
    assert census(study) == Census(counted=3, running=0, waiting=1)
    retry_lost_trials(study)  # a trial is retried once
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


def test_a_running_trial_whose_process_is_gone_fails_and_is_queued_again():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(gone.stdout)
    study = optuna.create_study()
    worker = {"host": socket.gethostname(), "pid": pid, "started": 0.0, "trial": 0}
    _add(study, TrialState.RUNNING, {"x": 0.75}, worker=worker)
    alive = {**worker, "pid": os.getpid(), "started": psutil.Process().create_time(), "trial": 1}
    _add(study, TrialState.RUNNING, worker=alive)
    fail_orphans(study)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[2].system_attrs["fixed_params"] == {"x": 0.75}


def test_a_study_refuses_to_continue_with_another_search(job, tmp_path, unet_opts, space_file):
    storage = optuna.storages.InMemoryStorage()
    open_study(job, storage, name="s", pruner=PrunerSpec("median"), seed=0)
    assert open_study(job, storage, name="s", pruner=PrunerSpec("median"), seed=0).user_attrs
    other = build_job(UNET, str(space_file("SOLVER.BASE_LR: {uniform: [0.001, 0.01]}\n")),
                      opts=unet_opts, output=tmp_path / "study")
    with pytest.raises(ConfigError, match=r"study 's' in this storage searches something else "
                                          r"\(space differs\); fix: rerun with the same"):
        open_study(other, storage, name="s", pruner=PrunerSpec("median"), seed=0)


@pytest.mark.slow
def test_hyperband_reports_every_evaluation_and_ends_each_trial_complete_or_pruned(job):
    study = open_study(job, optuna.storages.InMemoryStorage(), name="s",
                       pruner=PrunerSpec("hyperband"), seed=0)
    work(job, study, n_trials=2)
    for trial in study.trials:
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert 2 in trial.intermediate_values


@pytest.mark.parametrize("keep_best, written", [(1, False), (2, True)])
def test_a_trial_that_cannot_be_among_the_kept_best_writes_no_best_checkpoint(
        job, monkeypatch, keep_best, written):
    monkeypatch.setattr("d2seg.tuning.worker.remove_checkpoints", lambda *args: None)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    # A complete trial no mIoU reaches: with --keep-best 1 the new trial cannot be kept.
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=101.0, params={"SOLVER.BASE_LR": 1e-3},
        distributions={"SOLVER.BASE_LR": optuna.distributions.FloatDistribution(1e-4, 1e-2,
                                                                                log=True)}))
    work(job, study, n_trials=2, keep_best=keep_best)
    folder = job.trial_dir(1)
    assert study.trials[1].state == TrialState.COMPLETE
    assert (folder / "model_best.pth").is_file() == written
    assert (folder / "model_final.pth").is_file()  # written at the end, deleted after the trial
