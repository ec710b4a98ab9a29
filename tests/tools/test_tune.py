"""``tools/tune.py`` as a user runs it: bad inputs, a killed study resumed, two workers on one
journal file, and the best.yaml it writes trained by ``tools/train_net.py``."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

REPO_ROOT = Path(__file__).resolve().parents[2]
UNET = str(REPO_ROOT / "configs" / "tiny" / "unet_R_18_tiny.yaml")
SPACE = "SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}\n"


@pytest.fixture(scope="module")
def opts(car_split) -> list[str]:
    """The car split at 64 px, one iteration then one evaluation (all a trial needs to have a
    value), no periodic checkpoint."""
    return [
        "DATASETS.TRAIN", f"('{car_split['train']}',)", "DATASETS.TEST", f"('{car_split['val']}',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "1", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "100",
    ]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tune_command(space: Path, output: Path, opts: list[str], *flags: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "tools" / "tune.py"), "--config-file", UNET,
            "--space", str(space), "--output", str(output), *flags, *opts]


# This checkout's d2seg first on the tool's path.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                 os.environ.get("PYTHONPATH")]))}


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
                            env=ENV)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return result


@pytest.mark.parametrize("space, flags, message", [
    ("SOLVER.BASE_LR: {uniform: [0.1, 0.2]\n", [], r"space.yaml line 2: not valid YAML"),
    ("# no keys yet\n", [], r"the search space is empty"),
    ("SOLVER.BASE_LRR: {uniform: [0.1, 0.2]}\n", [], r"unknown config key SOLVER.BASE_LRR; did "
     r"you mean SOLVER.BASE_LR"),
    ("SOLVER.IMS_PER_BATCH: {uniform: [2, 8]}\n", [], r"SOLVER.IMS_PER_BATCH expects a int"),
    (SPACE, ["--metric", "segm/AP"], r"--metric segm/AP: the model never reports it on .*; fix: "
     r"use one of .*sem_seg/mIoU"),
    (SPACE, ["--storage", "postgresql://nobody@127.0.0.1:9/none"],
     r"--storage postgresql://nobody@127.0.0.1:9/none: cannot be opened"),
    (SPACE, ["--storage", "journal:///no/such/folder/study.log"],
     r"folder /no/such/folder does not exist"),
    (SPACE, ["--storage", "redis://127.0.0.1/0"], r"unknown kind of storage"),
    (SPACE, ["--pruner", "median", "--", "TEST.EVAL_PERIOD", "0"], r"--pruner median has "
     r"nothing to compare; fix: set TEST.EVAL_PERIOD"),
    (SPACE, ["--pruner", "none", "--pruner-warmup", "1"], r"--pruner-warmup sets the median "
     r"pruner, not --pruner none; fix: drop --pruner-warmup or use --pruner median"),
    (SPACE, ["--pruner-startup", "-1"], r"--pruner-startup -1: must be at least 0"),
    (SPACE, ["--pruner-warmup", "3", "--", "SOLVER.MAX_ITER", "4"], r"--pruner-warmup 3: a "
     r"trial is evaluated every 1 of its 4 iterations.*fix: give --pruner-warmup 2 or less"),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(run_tool, tmp_path, opts, space,
                                                          flags, message):
    space_file = write(tmp_path / "space.yaml", space)
    output = tmp_path / "study"
    options, _, overrides = " ".join(flags).partition(" -- ")  # "--" starts KEY VALUE overrides
    code, _, err = run_tool("tune", "--config-file", UNET, "--space", space_file, "--trials", 2,
                            "--output", output, *options.split(), *opts, *overrides.split())
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert not output.exists()


def finished(storage_url: str) -> list:
    try:
        study = optuna.load_study(study_name="d2seg-tune", storage=storage_url)
    except Exception:  # not created yet
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


@pytest.mark.slow
def test_study_killed_in_trial_3_resumes_to_4_trials_and_best_yaml_trains(tmp_path, opts,
                                                                          train_run):
    space = write(tmp_path / "space.yaml", SPACE)
    output = tmp_path / "study"
    command = tune_command(space, output, opts, "--trials", "4", "--pruner", "none")
    url = f"sqlite:///{output / 'study.db'}"
    first_log = tmp_path / "first_run.log"
    with open(first_log, "wb") as log:
        first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 env=ENV)
    # One worker runs trials in order: trial 2's log means trials 0 and 1 are finished. (The
    # storage is not polled meanwhile: opening it while the tool creates it races the schema.)
    deadline = time.monotonic() + 600
    while (not (output / "trial_0002" / "log.txt").exists() and first.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.2)
    assert first.poll() is None, first_log.read_text()[-3000:]
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = {n: (output / f"trial_{n:04d}" / "metrics.json").read_bytes() for n in (0, 1)}
    values = {t.number: t.value for t in finished(url)}
    assert sorted(values) == [0, 1]

    result = run(command)
    study = optuna.load_study(study_name="d2seg-tune", storage=url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    # Trials 0 and 1 are untouched; the killed trial 2 failed and ran again with its parameters.
    assert {t.number: t.value for t in trials if t.number < 2} == values
    assert {n: (output / f"trial_{n:04d}" / "metrics.json").read_bytes() for n in (0, 1)} == before
    killed = trials[2]
    assert killed.state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 2]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    # The resumed run samples anew: no parameters of the first run come back.
    sampled = [t.params["SOLVER.BASE_LR"] for t in trials if "retry_of" not in t.user_attrs]
    assert len(set(sampled)) == len(sampled)
    csv = (output / "trials.csv").read_text()
    assert f"stopped without finishing (interrupted, or its process was killed); retried as " \
           f"trial {retry.number}" in csv
    assert "top 4" in result.stdout and "trials: 100%" in result.stderr
    # Only the best trial keeps checkpoints.
    kept = sorted(p.parent.name for p in output.glob("trial_*/model_final.pth"))
    assert kept == [f"trial_{study.best_trial.number:04d}"]
    for plot in ("optimization_history.png", "param_importances.png", "parallel_coordinate.png"):
        assert (output / plot).stat().st_size > 10_000

    train_run(str(output / "best.yaml"), tmp_path / "final")
    assert (tmp_path / "final" / "model_final.pth").is_file()
    trained = (tmp_path / "final" / "config.yaml").read_text()
    assert f"BASE_LR: {study.best_params['SOLVER.BASE_LR']}" in trained


@pytest.mark.slow
def test_two_workers_share_one_journal_study_without_duplicate_trial_numbers(tmp_path, opts):
    space = write(tmp_path / "space.yaml", SPACE)
    output = tmp_path / "study"
    url = f"journal://{tmp_path / 'study.log'}"
    run(tune_command(space, output, opts, "--trials", "4", "--pruner", "none", "--workers", "2",
                     "--storage", url))
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    trials = optuna.load_study(study_name="d2seg-tune", storage=storage).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and len(numbers) >= 4
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 4
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2
    assert sorted(p.name for p in output.glob("trial_*")) == [f"trial_{n:04d}" for n in numbers]


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study_and_a_rerun_continues_it(tmp_path, opts,
                                                                        postgres_url):
    space = write(tmp_path / "space.yaml", SPACE)
    output = tmp_path / "study"

    def tune(trials: int) -> list:
        run(tune_command(space, output, opts, "--trials", str(trials), "--pruner", "none",
                         "--workers", "2", "--storage", postgres_url))
        return optuna.load_study(study_name="d2seg-tune", storage=postgres_url).trials

    first = tune(4)
    numbers = [t.number for t in first]
    assert len(numbers) == len(set(numbers)) and len(numbers) >= 4
    assert sum(t.state == TrialState.COMPLETE for t in first) >= 4
    assert len({t.user_attrs["worker"]["pid"] for t in first}) == 2
    assert not (output / "study.db").exists()  # the study lives on the server

    again = tune(5)
    assert [(t.number, t.params, t.value) for t in again[:len(first)]] == [
        (t.number, t.params, t.value) for t in first]
    numbers = [t.number for t in again]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state == TrialState.COMPLETE for t in again) >= 5
    assert sorted(p.name for p in output.glob("trial_*")) == [f"trial_{n:04d}" for n in numbers]


def test_then_train_trains_best_yaml_into_output_final(tmp_path, opts):
    space = write(tmp_path / "space.yaml", SPACE)
    output = tmp_path / "study"
    result = run(tune_command(space, output, opts, "--trials", "2", "--pruner", "none",
                              "--then-train"))
    # one evaluation after one iteration: the BatchNorm statistics are mostly their start
    assert result.stderr.count("warning: TEST.EVAL_PERIOD 1: ") == 1
    study = optuna.load_study(study_name="d2seg-tune", storage=f"sqlite:///{output / 'study.db'}")
    final = output / "final"
    assert (final / "model_final.pth").is_file()
    trained = (final / "config.yaml").read_text()
    assert f"BASE_LR: {study.best_params['SOLVER.BASE_LR']}" in trained
    assert f"OUTPUT_DIR: {final}" in trained
