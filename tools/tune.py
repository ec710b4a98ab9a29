#!/usr/bin/env python
"""Hyper-parameter search over a config with Optuna: each trial is a normal training run.

    python tools/tune.py --config-file configs/carvana/unet_R_50_gray_512.yaml \\
        --space configs/tune/unet.yaml --trials 30 --output runs/tune_cars
    python tools/tune.py ... --trials 30 --output runs/tune_cars        # again: continues it
    python tools/tune.py ... --workers 4                                # 4 local processes
    python tools/tune.py ... --storage postgresql://user:pw@db/tune     # same on each machine
    python tools/tune.py ... --then-train                               # then train best.yaml

Writes OUTPUT/trial_NNNN/ (each trial's run folder), study.db (default storage), trials.csv,
best.yaml (for tools/train_net.py --config-file), optimization_history.png,
param_importances.png, parallel_coordinate.png, and with --then-train OUTPUT/final/.

Exit codes: 0 done; 2 a user mistake (one line on stderr, nothing created); 130/143 stopped by
SIGINT/SIGTERM (the running trial is retried when the same command is run again).
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import optuna  # noqa: E402
from tqdm import tqdm  # noqa: E402

from d2seg.engine import default_setup, setup_cfg  # noqa: E402
from d2seg.engine.trainer import DefaultTrainer  # noqa: E402
from d2seg.errors import ConfigError  # noqa: E402
from d2seg.tuning.job import DIRECTIONS, TuneJob, build_job  # noqa: E402
from d2seg.tuning.launch import StudySpec, run_workers  # noqa: E402
from d2seg.tuning.outputs import (  # noqa: E402
    best_trial,
    top_trials_table,
    trial_line,
    write_outputs,
)
from d2seg.tuning.storage import default_storage_url, open_storage  # noqa: E402
from d2seg.tuning.pruner import PRUNERS, PrunerSpec  # noqa: E402
from d2seg.tuning.study import open_study  # noqa: E402
from d2seg.tuning.worker import census, retry_lost_trials, retry_trial, work  # noqa: E402
from d2seg.utils.cli import Interrupted, run_cli  # noqa: E402
from d2seg.utils.io import atomic_write_json  # noqa: E402

MARKER = "tune.json"  # names the storage and study of an OUTPUT folder


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Search space (YAML, keyed by config keys):\n"
               "  SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}\n"
               "  SOLVER.IMS_PER_BATCH: {int: [2, 16, log]}\n"
               "  MODEL.SEM_SEG_HEAD.LOSS: {choice: [ce, dice, ce+dice]}\n"
               "Examples in configs/tune/.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="base config")
    parser.add_argument("--space", required=True, metavar="FILE", help="search space YAML")
    parser.add_argument("--trials", type=int, required=True,
                        help="finished trials (complete, pruned or failed) the study should hold")
    parser.add_argument("--output", required=True, metavar="DIR", help="study folder")
    parser.add_argument("--metric", help="evaluation key to optimise, e.g. segm/AP "
                        "(default: the model's headline metric)")
    parser.add_argument("--direction", choices=sorted(DIRECTIONS), default="maximize")
    parser.add_argument("--pruner", choices=PRUNERS, default="median",
                        help="stop bad trials early at their TEST.EVAL_PERIOD evaluations: median "
                        "(default) stops those below the median of the complete trials, asha "
                        "keeps the better half at 1, 2, 4, ... periods and saves more; both "
                        "need evaluations that rank configurations (TEST.PRECISE_BN with "
                        "BatchNorm and short periods); see bench/RESULTS.md")
    parser.add_argument("--pruner-startup", type=int, metavar="N",
                        help="median: complete trials before any is pruned (default 5)")
    parser.add_argument("--pruner-warmup", type=int, metavar="K",
                        help="median: evaluations of each trial that never prune it (default 0; "
                        "raise it when the first evaluations do not rank configs yet)")
    parser.add_argument("--storage", help="sqlite:////abs/study.db (default OUTPUT/study.db), "
                        "journal:///abs/study.log (several processes, NFS), postgresql://... "
                        "or mysql://... (several machines)")
    parser.add_argument("--study-name", default="d2seg-tune", help="study name in the storage")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes")
    parser.add_argument("--keep-best", type=int, default=1, metavar="K",
                        help="keep the checkpoints of the best K trials only")
    parser.add_argument("--trial-iters", type=int, default=0, metavar="N",
                        help="train each trial N iterations (schedule shrunk in proportion); "
                        "best.yaml keeps the config's SOLVER.MAX_ITER")
    parser.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    parser.add_argument("--then-train", action="store_true",
                        help="train best.yaml for the full schedule into OUTPUT/final")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE pairs fixed for every trial (and in best.yaml)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for flag, value, low in (("--trials", args.trials, 1), ("--workers", args.workers, 1),
                             ("--keep-best", args.keep_best, 0),
                             ("--trial-iters", args.trial_iters, 0)):
        if value < low:
            raise ConfigError(f"{flag} {value}: must be at least {low}; fix: give {flag} {low} "
                              f"or more")
    pruner = PrunerSpec.from_flags(args.pruner, startup=args.pruner_startup,
                                   warmup=args.pruner_warmup)
    output = Path(args.output).resolve()
    marker = _read_marker(output)
    url = args.storage or (marker or {}).get("storage") or default_storage_url(output)
    if marker and marker["storage"] != url:
        raise ConfigError(
            f"--output {output} holds a study in {marker['storage']}, not {url}; fix: drop "
            f"--storage or give that one, or use a new --output"
        )
    job = build_job(
        args.config_file, args.space, opts=args.opts, output=output, metric=args.metric,
        direction=args.direction, pruner=pruner, trial_iters=args.trial_iters,
    )
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = _open_or_create(job, output, url, pruner, args)
    for warning in job.warnings:  # after the last check that can stop the command
        print(f"warning: {warning}", file=sys.stderr)
    spec = StudySpec(url, args.study_name, pruner, args.seed)
    retry_lost_trials(study)
    try:
        _run(job, study, spec, args)
    except Interrupted as stop:
        write_outputs(job, study)
        raise Interrupted(stop.signum, f"{stop}; the study continues with the same command")
    written = write_outputs(job, study)
    print(top_trials_table(job, study))
    print("wrote " + ", ".join(str(p.relative_to(output)) for p in written) + f" in {output}")
    best = best_trial(study)
    if args.then_train:
        if best is None:
            raise ConfigError("--then-train: no trial completed, so there is no best config; "
                              "fix: look at the reasons in trials.csv")
        _train_best(output / "best.yaml")
    return 0


def _read_marker(output: Path) -> dict | None:
    if not output.exists():
        return None
    if not (output / MARKER).is_file():
        raise ConfigError(
            f"--output {output} exists and holds no study ({MARKER} missing); fix: choose a new "
            f"--output (a run never overwrites another's outputs)"
        )
    with open(output / MARKER, encoding="utf-8") as f:
        return json.load(f)


def _open_or_create(job: TuneJob, output: Path, url: str, pruner: PrunerSpec,
                    args: argparse.Namespace) -> optuna.Study:
    """Open the storage (before creating OUTPUT when it lives elsewhere) and the study;
    a new OUTPUT is removed again when that fails."""
    in_output = url == default_storage_url(output)
    storage = None if in_output else open_storage(url, on_stale=retry_trial)
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        storage = storage or open_storage(url, on_stale=retry_trial)
        study = open_study(job, storage, name=args.study_name, pruner=pruner, seed=args.seed)
        atomic_write_json(output / MARKER, {"storage": url, "study": args.study_name}, indent=2)
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
    return study


def _run(job: TuneJob, study: optuna.Study, spec: StudySpec, args: argparse.Namespace) -> None:
    """The trials, under a progress bar over ``--trials``; one line per finished trial."""
    bar = tqdm(total=args.trials, initial=min(args.trials, census(study).counted),
               desc="trials", unit="trial", dynamic_ncols=True)
    shown = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def show_new() -> None:
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in shown:
                shown.add(trial.number)
                tqdm.write(trial_line(job, trial), file=sys.stdout)
        bar.n = min(args.trials, census(study).counted)
        bar.refresh()

    try:
        if args.workers == 1:
            work(job, study, args.trials, on_trial=lambda _: show_new(),
                 keep_best=args.keep_best)
        else:
            codes = run_workers(job, spec, workers=args.workers, n_trials=args.trials,
                                keep_best=args.keep_best, on_poll=show_new)
            stopped = [c for c in codes if c in (130, 143)]
            if stopped:
                raise Interrupted(stopped[0] - 128, "workers stopped by a signal")
    finally:
        bar.close()


def _train_best(config: Path) -> None:
    """``tools/train_net.py --config-file best.yaml``, continuing an earlier final run."""
    ns = argparse.Namespace(config_file=str(config), opts=[], resume=False, eval_only=False)
    cfg = setup_cfg(ns)
    ns.resume = os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    cfg = default_setup(cfg, ns)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=ns.resume)
    trainer.train()


if __name__ == "__main__":
    run_cli(main)
