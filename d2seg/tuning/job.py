"""What a tuning run searches, checked before anything is created.

:func:`build_job` turns the command line (base config, fixed ``KEY VALUE`` opts, search space,
metric) into a :class:`TuneJob`: every check a user mistake can fail — config keys and types,
the space, whether the model reports the metric on ``DATASETS.TEST``, whether the pruner has
evaluations to compare — runs here, so a bad input costs no trial and leaves no folder.

Example::

    from d2seg.tuning.job import build_job

    job = build_job("configs/tiny/unet_R_18_tiny.yaml", "configs/tune/unet.yaml",
                    opts=["DATASETS.TRAIN", "('train.json',)", "DATASETS.TEST", "('val.json',)"],
                    output="runs/tune")
    print(job.metric, [d.key for d in job.space.dimensions])
"""

import argparse
import contextlib
import hashlib
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d2seg.config import CfgNode
from d2seg.engine.batchnorm_statistics import stale_statistics_warning
from d2seg.engine.defaults import setup_cfg
from d2seg.engine.run_metadata import resolve_from_data
from d2seg.errors import ConfigError
from d2seg.modeling.meta_arch.declarations import headline_metric
from d2seg.tuning.pruner import PrunerSpec
from d2seg.tuning.space import SearchSpace

DIRECTIONS = {"maximize": "max", "minimize": "min"}


@dataclass
class TuneJob:
    """``cfg``: every trial's starting config (base file + fixed opts, with
    ``SOLVER.EARLY_STOP.METRIC/MODE`` set to the tuned metric, and the trial schedule);
    ``final_cfg``: the same with the config's own schedule (best.yaml's base); ``direction``:
    ``"maximize"`` or ``"minimize"``; ``warnings``: what is allowed but will make the
    trials' evaluations misleading, each a line with its fix, for the user to read first."""

    cfg: CfgNode
    final_cfg: CfgNode
    space: SearchSpace
    metric: str
    direction: str
    output: Path
    warnings: tuple[str, ...] = ()

    def trial_dir(self, number: int) -> Path:
        return self.output / f"trial_{number:04d}"

    def signature(self) -> dict[str, Any]:
        """What makes two runs the same study (stored with it; a rerun must match)."""
        return {
            "config_sha256": hashlib.sha256(self.cfg.dump().encode()).hexdigest(),
            "space": self.space.describe(),
            "metric": self.metric,
            "direction": self.direction,
        }


def build_job(
    config_file: str,
    space_file: str,
    *,
    opts: list[str] | None = None,
    output: str | os.PathLike,
    metric: str | None = None,
    direction: str = "maximize",
    pruner: PrunerSpec = PrunerSpec(),
    trial_iters: int = 0,
) -> TuneJob:
    """Load and check everything a study needs; raise :class:`ConfigError` on the first
    mistake (see the module docstring). ``trial_iters`` > 0 trains each trial that many
    iterations, with the schedule's steps shrunk in proportion."""
    cfg = setup_cfg(argparse.Namespace(config_file=config_file, opts=list(opts or [])))
    if not cfg.DATASETS.TEST:
        raise ConfigError(
            "DATASETS.TEST is empty: trials are compared on a validation set; fix: set "
            "DATASETS.TEST, e.g. DATASETS.TEST \"('val.json',)\""
        )
    space = SearchSpace.from_file(space_file, cfg)
    fixed = set(opts[0::2]) if opts else set()
    both = sorted(fixed & {d.key for d in space.dimensions})
    if both:
        raise ConfigError(
            f"{both[0]} is both searched in {space_file} and fixed on the command line; fix: "
            f"remove one of them"
        )
    if pruner.name != "none" and cfg.TEST.EVAL_PERIOD <= 0:
        raise ConfigError(
            f"TEST.EVAL_PERIOD is {cfg.TEST.EVAL_PERIOD}: trials are evaluated only at the end, "
            f"so --pruner {pruner.name} has nothing to compare; fix: set TEST.EVAL_PERIOD (e.g. "
            f"a fifth of SOLVER.MAX_ITER) or use --pruner none"
        )
    metric = metric or headline_metric(cfg)
    _check_metric(cfg, metric)
    final = cfg.clone()
    final.defrost()
    final.SOLVER.EARLY_STOP.METRIC = metric
    final.SOLVER.EARLY_STOP.MODE = DIRECTIONS[direction]
    final.freeze()
    trial_cfg = shorten_schedule(final, trial_iters) if trial_iters else final
    _check_warmup(trial_cfg, pruner)
    return TuneJob(trial_cfg, final, space, metric, direction, Path(output).resolve(),
                   warnings=_evaluation_warnings(trial_cfg))


def shorten_schedule(cfg: CfgNode, iters: int) -> CfgNode:
    """``cfg`` trained ``iters`` iterations: LR steps, warm-up, evaluation and checkpoint
    periods scaled by ``iters / SOLVER.MAX_ITER`` (at least 1 where they were set)."""
    scale = iters / cfg.SOLVER.MAX_ITER
    cfg = cfg.clone()
    cfg.defrost()
    solver = cfg.SOLVER
    solver.STEPS = tuple(max(1, round(s * scale)) for s in solver.STEPS)
    solver.WARMUP_ITERS = round(solver.WARMUP_ITERS * scale)
    solver.CHECKPOINT_PERIOD = max(1, round(solver.CHECKPOINT_PERIOD * scale))
    if cfg.TEST.EVAL_PERIOD > 0:
        cfg.TEST.EVAL_PERIOD = max(1, round(cfg.TEST.EVAL_PERIOD * scale))
    solver.MAX_ITER = iters
    cfg.freeze()
    return cfg


def _check_warmup(cfg: CfgNode, pruner: PrunerSpec) -> None:
    """A warm-up must leave an evaluation before the end of a trial that can prune it."""
    period, iters = cfg.TEST.EVAL_PERIOD, cfg.SOLVER.MAX_ITER
    if pruner.warmup and (pruner.warmup + 1) * period >= iters:
        raise ConfigError(
            f"--pruner-warmup {pruner.warmup}: a trial is evaluated every {period} of its "
            f"{iters} iterations, so the warm-up leaves no evaluation before its end that could "
            f"stop it early; fix: give --pruner-warmup {max(0, (iters - 1) // period - 1)} or "
            f"less, or a smaller TEST.EVAL_PERIOD"
        )


def _evaluation_warnings(cfg: CfgNode) -> tuple[str, ...]:
    """The trial config's stale-BatchNorm warning, if any (its architecture is built on the
    meta device: no weights, ~0.1 s)."""
    from d2seg.modeling import build_model

    message = stale_statistics_warning(build_model(resolve_from_data(cfg), device="meta"), cfg)
    return (message,) if message else ()


def reported_metrics(cfg: CfgNode) -> set[str]:
    """The ``task/metric`` keys the config's model reports on ``DATASETS.TEST[0]``: the
    evaluators' results after one validation image through the untrained model (exact,
    including keys that depend on the model's outputs, e.g. a binary model's ``IoU``)."""
    from d2seg.data.build import build_detection_test_loader
    from d2seg.data.datasets import resolve_dataset
    from d2seg.evaluation import build_evaluator, inference_on_dataset
    from d2seg.modeling import build_model

    cfg = resolve_from_data(cfg)
    name = resolve_dataset(cfg.DATASETS.TEST[0])
    loader = build_detection_test_loader(cfg, name)
    with contextlib.redirect_stderr(io.StringIO()):  # its one-image progress bar
        results = inference_on_dataset(
            build_model(cfg), itertools.islice(loader, 1), build_evaluator(cfg, name),
            num_warmup=0,
        )
    keys = {f"{task}/{k}" for task, values in results.items() for k in values}
    if cfg.TEST.VALIDATION_LOSS:
        keys.add("validation_loss")
    return keys


def _check_metric(cfg: CfgNode, metric: str) -> None:
    if metric == headline_metric(resolve_from_data(cfg)):
        return  # the meta-architecture declares it: no model to build and probe
    keys = reported_metrics(cfg)
    if metric not in keys:
        shown = sorted(k for k in keys if "-" not in k.rsplit("/", 1)[-1])
        raise ConfigError(
            f"--metric {metric}: the model never reports it on {cfg.DATASETS.TEST[0]}; fix: use "
            f"one of {', '.join(shown)} (or a per-class key such as "
            f"{next((k for k in sorted(keys) if '-' in k), shown[0])})"
        )
