"""One trial: the sampled config trained as a normal run in ``OUTPUT/trial_NNNN/``.

The trial's folder holds what ``tools/train_net.py`` writes (``config.yaml``, ``metrics.json``,
``log.txt``, checkpoints, ``inference/`` reports) except figures: no report PNGs, no training
curves (a user reads the study's plots and ``trials.csv``, then trains ``best.yaml``). Its
value is the best evaluation of the tuned metric (the value of its ``model_best.pth``). What
can go wrong in a trial is recorded on it as the user attribute ``fail_reason`` and the study
goes on:

* a config that cannot build or train (a d2seg error: its one-line message),
* a non-finite loss (the engine's message, naming the iteration and the loss),
* out of GPU memory,
* a metric that never became finite (e.g. no detections at any evaluation),
* any other exception (its type and message; the traceback is in the trial's ``log.txt``).

Each trial also records ``iterations`` (steps trained) and ``seconds``: its training time as the
trainer measures it (``trainer.train_seconds``: the training loop with its evaluations and
checkpoints; building the model and data before it is not included, 0 when that failed).

Example::

    study.optimize(lambda trial: run_trial(job, trial), n_trials=1, catch=(TrialFailed,))
"""

import argparse
import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import optuna
import torch

from d2seg.config import CfgNode
from d2seg.engine.defaults import default_setup
from d2seg.errors import D2SegError
from d2seg.tuning.job import DIRECTIONS, TuneJob
from d2seg.tuning.reporter import TrialTrainer
from d2seg.tuning.space import apply_values
from d2seg.utils.cli import Interrupted, user_message
from d2seg.utils.logger import setup_logger

logger = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A trial that could not produce a value; the message is its recorded reason."""


def run_trial(job: TuneJob, trial: optuna.Trial, keep_best: int = 1) -> float:
    """Train ``trial``'s config; return its best metric value (``keep_best``: how many of the
    best trials keep checkpoints, so that the others need not write ``model_best.pth``). Raises
    :class:`optuna.TrialPruned`, :class:`TrialFailed`, or :class:`Interrupted` /
    ``KeyboardInterrupt`` (the study stops; the trial is retried when it resumes)."""
    values = job.space.sample(trial)
    trainer: TrialTrainer | None = None
    iterations = 0
    best: float | None = None
    folder = job.trial_dir(trial.number)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        cfg = apply_values(job.cfg, values, source=f"trial {trial.number}")
        cfg.OUTPUT_DIR = str(folder)
        cfg.freeze()
        with _quiet_console(folder / "stderr.txt"):
            trainer = _build_trainer(job, trial, cfg, keep_best)
            trainer.train()
        iterations = trainer.iter + 1
        best = trainer.reporter.best
    except optuna.TrialPruned:
        iterations = trainer.iter + 1 if trainer else 0
        raise
    except (Interrupted, KeyboardInterrupt):
        raise
    except torch.OutOfMemoryError as e:
        raise TrialFailed(
            f"out of memory ({' '.join(str(e).split())[:160]}); fix: a smaller "
            f"SOLVER.IMS_PER_BATCH or INPUT size range in the space"
        ) from None
    except D2SegError as e:
        raise TrialFailed(user_message(e)) from None
    except Exception as e:
        raise TrialFailed(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    finally:
        if trainer is not None and not iterations:
            iterations = trainer.iter - trainer.start_iter  # steps before the failing one
        trial.set_user_attr("iterations", iterations)
        trial.set_user_attr("seconds", round(trainer.train_seconds if trainer else 0.0, 3))
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if best is None:
        raise TrialFailed(
            f"{job.metric} was never finite at any evaluation (e.g. no detections); fix: "
            f"train longer per trial or narrow the space"
        )
    return best


def _build_trainer(job: TuneJob, trial: optuna.Trial, cfg: CfgNode, keep_best: int
                   ) -> TrialTrainer:
    cfg = default_setup(cfg, argparse.Namespace(resume=False, eval_only=False))
    trainer = TrialTrainer(cfg, trial=trial, metric=job.metric, mode=DIRECTIONS[job.direction],
                           keep_best=keep_best)
    trainer.resume_or_load(resume=False)
    return trainer


@contextlib.contextmanager
def _quiet_console(stderr_path: Path) -> Iterator[None]:
    """The trial's console output off the study's console: its log lines are in ``log.txt``
    already (with the traceback of an unexpected error), its stderr (warnings, inference
    bars) goes to ``stderr_path``."""
    with open(os.devnull, "w") as null, open(stderr_path, "a", encoding="utf-8") as err:
        try:
            with contextlib.redirect_stdout(null), contextlib.redirect_stderr(err):
                yield
        except Exception as e:
            if not isinstance(e, (optuna.TrialPruned, D2SegError)):  # a bug: keep its traceback
                logger.exception("the trial failed")
            raise
        finally:
            setup_logger()  # its console handler wrote to the closed null stream
