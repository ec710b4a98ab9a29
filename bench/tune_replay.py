#!/usr/bin/env python
"""Replay bench/tune.py's studies on recorded learning curves: what each pruner would stop.

bench/tune.py's trials train deterministically (``SEED 0``, one thread), so a configuration's
evaluations depend only on its parameters, and a pruned trial's evaluations are the first ones
of its full run. One full training per configuration, kept in ``--cache`` (JSON), therefore
lets any pruner be replayed exactly: each study is opened by ``tools/tune.py``'s own
``open_study`` (the same seeded TPE sampler and the ``--pruner`` of ``PrunerSpec``) in memory,
and each trial reports its recorded curve until the pruner stops it. A configuration not in the
cache is trained once, for the whole schedule, by the tool's ``TrialTrainer``. Checked against
bench/tune.py on seeds 0-4: the same iterations, pruned steps and best values for ``median`` and
``asha`` (bench/RESULTS.md "tune: stale BatchNorm statistics"). A replay of 5 seeds and 3
pruners on a warm cache takes seconds; a cold one costs one training per new configuration
(121 for that replay, ~15 minutes).

Prints, per seed and pruner: training iterations, their ratio to ``none`` (the
``pruning_iteration_ratio`` of bench/tune.py), the best value and its gap to ``none``, and the
iterations at which trials were pruned; then the mean ratio and the worst gap per pruner.

    python bench/tune_replay.py --pruners median asha hyperband --seeds 0 1 2 3 4
    python bench/tune_replay.py --pruners median --pruner-startup 3 --precise-bn-iters 0
"""

import argparse
import contextlib
import io
import json
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune import CONFIG, make_data, workload_opts  # noqa: E402  (bench/tune.py)

from d2seg.engine.defaults import default_setup  # noqa: E402
from d2seg.tuning.job import DIRECTIONS, TuneJob, build_job  # noqa: E402
from d2seg.tuning.pruner import PRUNERS, PrunerSpec  # noqa: E402
from d2seg.tuning.reporter import TrialTrainer  # noqa: E402
from d2seg.tuning.space import apply_values  # noqa: E402
from d2seg.tuning.study import open_study  # noqa: E402
from d2seg.utils.io import atomic_write_json  # noqa: E402


class _NoTrials:
    def get_trials(self, **_):
        return []


class _CurveRecorder:
    """Stands in for the Optuna trial of a full training: records what would be reported."""

    def __init__(self):
        self.curve: list[tuple[int, float]] = []
        self.study = _NoTrials()  # TrialTrainer.may_be_kept asks it (keep_best 0: nothing kept)

    def report(self, value: float, step: int) -> None:
        self.curve.append((step, float(value)))

    def should_prune(self) -> bool:
        return False


class CurveCache:
    """``curve(values)``: the (step, value) evaluations of a full training of ``values``."""

    def __init__(self, job: TuneJob, path: Path, workload: str):
        self.job, self.path, self.workload = job, path, workload
        self.curves = json.loads(path.read_text()) if path.exists() else {}
        self.trained = 0

    def curve(self, values: dict) -> list[tuple[int, float]]:
        key = json.dumps({"workload": self.workload, **values}, sort_keys=True, default=str)
        if key not in self.curves:
            self.curves[key] = self._train(values)
            self.trained += 1
            atomic_write_json(self.path, self.curves)
        return [tuple(point) for point in self.curves[key]]

    def _train(self, values: dict) -> list[tuple[int, float]]:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = apply_values(self.job.cfg, values, source="replay")
            cfg.OUTPUT_DIR = str(Path(tmp) / "run")
            cfg.freeze()
            recorder = _CurveRecorder()
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                cfg = default_setup(cfg, argparse.Namespace(resume=False, eval_only=False))
                trainer = TrialTrainer(cfg, trial=recorder, metric=self.job.metric,
                                       mode=DIRECTIONS[self.job.direction], keep_best=0)
                trainer.resume_or_load(resume=False)
                trainer.train()
        return recorder.curve


def replay(job: TuneJob, cache: CurveCache, pruner: PrunerSpec, seed: int, trials: int
           ) -> dict:
    """One study of ``trials`` trials as tools/tune.py runs it, on recorded curves."""
    study = open_study(job, optuna.storages.InMemoryStorage(), name="replay", pruner=pruner,
                       seed=seed)
    spent: list[int] = []
    pruned_at: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        best = None
        curve = cache.curve(job.space.sample(trial))
        for i, (step, value) in enumerate(curve):
            trial.report(value, step)
            best = value if best is None else (max if job.direction == "maximize" else min)(
                best, value)
            # the last value is the closing evaluation (after training), which TrialReporter
            # reports without asking the pruner
            if i < len(curve) - 1 and trial.should_prune():
                spent.append(step)
                pruned_at.append(step)
                raise optuna.TrialPruned()
        spent.append(step)
        return best

    study.optimize(objective, n_trials=trials)
    return {"iterations": sum(spent), "best": study.best_value, "pruned_at": pruned_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pruners", nargs="+", choices=[p for p in PRUNERS if p != "none"],
                        default=["median", "asha"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--iters", type=int, default=24)
    parser.add_argument("--eval-period", type=int, default=3)
    parser.add_argument("--precise-bn-iters", type=int, default=6)
    parser.add_argument("--pruner-startup", type=int, metavar="N", help="median only")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "d2seg_tune_curves.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tune_replay_"))
    data = make_data(work)
    opts = workload_opts(data, args.iters, args.eval_period, args.precise_bn_iters)
    job = build_job(str(CONFIG), str(work / "space.yaml"), opts=opts, output=work / "study")
    logging.disable(logging.WARNING)  # each training's own log lines
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    workload = f"iters={args.iters},period={args.eval_period},precise_bn={args.precise_bn_iters}"
    cache = CurveCache(job, args.cache, workload)
    ratios: dict[str, list[float]] = {p: [] for p in args.pruners}
    gaps: dict[str, list[float]] = {p: [] for p in args.pruners}
    for seed in args.seeds:
        none = replay(job, cache, PrunerSpec("none"), seed, args.trials)
        for name in args.pruners:
            startup = args.pruner_startup if name == "median" else None
            result = replay(job, cache, PrunerSpec.from_flags(name, startup=startup), seed,
                            args.trials)
            ratios[name].append(result["iterations"] / none["iterations"])
            gaps[name].append(result["best"] - none["best"])
            print(f"[seed {seed}, {name}] {result['iterations']} / {none['iterations']} "
                  f"iterations, ratio {ratios[name][-1]:.3f}, best {result['best']:.2f} (none "
                  f"{none['best']:.2f}, gap {gaps[name][-1]:+.2f}), pruned at "
                  f"{result['pruned_at']}", flush=True)
    for name in args.pruners:
        print(f"{name}: pruning_iteration_ratio mean {statistics.mean(ratios[name]):.3f} (min "
              f"{min(ratios[name]):.3f}, max {max(ratios[name]):.3f}), worst best_metric_gap "
              f"{min(gaps[name]):+.2f} over {len(args.seeds)} seeds")
    print(f"{cache.trained} configurations trained for this replay; cache {args.cache}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
