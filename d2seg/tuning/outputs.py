"""What a study leaves in ``OUTPUT``: ``best.yaml``, ``trials.csv``, plots and a table.

* ``best.yaml``: the base config (with the fixed ``KEY VALUE`` opts and its own full schedule)
  merged with the best trial's parameters, ``OUTPUT_DIR`` = ``OUTPUT/final``; train it with
  ``tools/train_net.py --config-file OUTPUT/best.yaml``.
* ``trials.csv``: one row per trial: number, state, value, iterations, seconds, reason,
  retry_of, one column per searched key, start and end times (UTC).
* ``optimization_history.png``, ``param_importances.png``, ``parallel_coordinate.png``:
  Optuna's matplotlib plots (importances need two complete trials, the others one).

Example::

    write_outputs(job, study)
    print(top_trials_table(job, study))
"""

import csv
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Optuna's plots go through pyplot; no display on servers

import optuna  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from d2seg.config import CfgNode  # noqa: E402
from d2seg.tuning.job import TuneJob  # noqa: E402
from d2seg.tuning.space import apply_values  # noqa: E402
from d2seg.utils.io import atomic_open  # noqa: E402
from d2seg.utils.plotting import DPI  # noqa: E402

PLOTS = {
    "optimization_history.png": (optuna.visualization.matplotlib.plot_optimization_history, 1),
    "param_importances.png": (optuna.visualization.matplotlib.plot_param_importances, 2),
    "parallel_coordinate.png": (optuna.visualization.matplotlib.plot_parallel_coordinate, 1),
}


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def best_config(job: TuneJob, trial: FrozenTrial) -> CfgNode:
    """``job.final_cfg`` with ``trial``'s parameters, writing to ``OUTPUT/final``."""
    cfg = apply_values(job.final_cfg, job.space.config_values(trial.params), "best trial")
    cfg.OUTPUT_DIR = str(job.output / "final")
    return cfg


def write_outputs(job: TuneJob, study: optuna.Study) -> list[Path]:
    """Write ``best.yaml`` (when a trial completed), ``trials.csv`` and the plots; returns the
    paths written."""
    written = [_write_csv(job, study)]
    best = best_trial(study)
    if best is None:
        return written
    path = job.output / "best.yaml"
    with atomic_open(path, "w") as f:
        f.write(f"# d2seg tune: best of {len(study.trials)} trials, trial {best.number} "
                f"{job.metric} = {best.value:.4f}\n")
        f.write(best_config(job, best).dump())
    written.append(path)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    for name, (plot, needed) in PLOTS.items():
        if complete >= needed:
            written.append(_save_plot(plot, study, job, job.output / name))
    return written


def _save_plot(plot, study: optuna.Study, job: TuneJob, path: Path) -> Path:
    """One of Optuna's matplotlib plots, written atomically."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot(study, target_name=job.metric)
    figure = axes.figure
    figure.set_size_inches(9, 5.5)
    figure.tight_layout()
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=DPI)
    pyplot.close(figure)
    return path


def _reason(trial: FrozenTrial, retried_as: dict[int, int]) -> str:
    if trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values, default=0)
        return f"pruned at iteration {last}"
    if trial.state != TrialState.FAIL:
        return ""
    if "fail_reason" in trial.user_attrs:
        return trial.user_attrs["fail_reason"]
    again = f"; retried as trial {retried_as[trial.number]}" if trial.number in retried_as else ""
    return f"stopped without finishing (interrupted, or its process was killed){again}"


def _write_csv(job: TuneJob, study: optuna.Study) -> Path:
    trials = study.get_trials(deepcopy=False)
    retried_as = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    keys = [d.key for d in job.space.dimensions]
    path = job.output / "trials.csv"
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", job.metric, "iterations", "seconds", "reason",
                         "retry_of", *keys, "start", "end"])
        for t in trials:
            writer.writerow([
                t.number, t.state.name, "" if t.value is None else t.value,
                t.user_attrs.get("iterations", ""), t.user_attrs.get("seconds", ""),
                _reason(t, retried_as), t.user_attrs.get("retry_of", ""),
                *(t.params.get(k, "") for k in keys),
                t.datetime_start.isoformat() if t.datetime_start else "",
                t.datetime_complete.isoformat() if t.datetime_complete else "",
            ])
    return path


def trial_line(job: TuneJob, trial: FrozenTrial) -> str:
    """One line about a finished trial, e.g. ``trial 3 COMPLETE sem_seg/mIoU=45.2 ...``."""
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    head = f"trial {trial.number} {trial.state.name}"
    if trial.state == TrialState.COMPLETE:
        head += f" {job.metric}={trial.value:.4g}"
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        step = max(trial.intermediate_values)
        head += f" at iteration {step} ({job.metric}={trial.intermediate_values[step]:.4g})"
    elif trial.state == TrialState.FAIL:
        head += f": {_reason(trial, {})}"
    return f"{head}  [{params}]"


def top_trials_table(job: TuneJob, study: optuna.Study, top: int = 5) -> str:
    """A fixed-width table of the ``top`` complete trials, best first, and the state counts."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=job.direction == "maximize")[:top]
    if not complete:
        return f"{len(trials)} trials ({summary}); none completed"
    keys = [d.key for d in job.space.dimensions]
    header = ["trial", job.metric, "iters", "seconds", *keys]
    rows = [[str(t.number), f"{t.value:.4f}", str(t.user_attrs.get("iterations", "")),
             f"{t.user_attrs.get('seconds', 0):.1f}", *(_short(t.params.get(k, "")) for k in keys)]
            for t in complete]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join([f"{len(trials)} trials ({summary}); top {len(complete)}:", *lines])


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
