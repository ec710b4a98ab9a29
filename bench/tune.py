#!/usr/bin/env python
"""Tuning cost: the same study with ``--pruner median`` and with ``--pruner none``, per seed.

Workload: the tiny U-Net on synthetic 64 px cars (16 images, 12 train / 4 val), CPU, one
process; ``--trials`` trials (default 16) of ``--iters`` (``SOLVER.MAX_ITER``, default 24)
evaluated every ``--eval-period`` (default 3) iterations, over ``SOLVER.BASE_LR`` (log
1e-5..1e-1) and ``MODEL.SEM_SEG_HEAD.LOSS``, each evaluation after ``TEST.PRECISE_BN`` over
``--precise-bn-iters`` batches (default 6: the 12 training images once). Why precise BN: with
evaluations every 3 iterations the running BatchNorm statistics still weigh their starting
values 73 % at the first one, and the configurations that end best read the untrained value
until iteration 12 (bench/RESULTS.md "tune: stale BatchNorm statistics"); ``tools/tune.py``
warns about such a study and names this fix. ``--precise-bn-iters 0`` runs the earlier
workload (sessions 5-7's figures). Why 24 iterations: on the earlier workload configurations
ranked only from about iteration 9 on (bench/RESULTS.md "tune pruning over seeds"). For each of
``--seeds`` (default 0 1 2 3 4) both studies run with that TPE seed, so they sample the same
random start-up trials; each study is ``tools/tune.py``'s ``main`` in this process. One seeded
pair is one sample of what pruning saves on this space, hence several. Prints per seed, then
the mean, standard deviation and range over the seeds:

* ``pruning_iteration_ratio``: training iterations of all trials with median pruning ÷
  without (target <= 0.6), and ``best_metric_gap``: the best ``sem_seg/mIoU`` with pruning
  minus without (target: within 2 points);
* ``tune_overhead[P]``: wall time of the study (``main`` from argument parsing to the written
  plots) ÷ the sum of its trials' training times (each trial's ``seconds``: the trainer's
  training loop with its evaluations and checkpoints; building each trial's model and data,
  sampling, the storage and the study's plots are overhead; target <= 1.1), for each pruner
  ``P``.

``--pruner-startup`` / ``--pruner-warmup`` pass those options of ``tools/tune.py`` to the median
study (default: the tool's defaults); ``--pruner asha`` / ``--pruner hyperband`` runs that
pruner instead of the median one against ``none``.
"""

import argparse
import contextlib
import importlib.util
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.synthetic import make_carvana

ROOT = Path(__file__).resolve().parents[1]
SPACE = ("SOLVER.BASE_LR: {loguniform: [1.0e-5, 1.0e-1]}\n"
         "MODEL.SEM_SEG_HEAD.LOSS: {choice: [ce, dice, ce+dice]}\n")


def load_tool():
    spec = importlib.util.spec_from_file_location("tune_tool", ROOT / "tools" / "tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = ROOT / "configs" / "tiny" / "unet_R_18_tiny.yaml"


def make_data(work: Path) -> Path:
    """The 16 synthetic cars converted to COCO under ``work``; their annotations folder (and
    ``work/space.yaml``, the searched space)."""
    make_carvana(work / "raw", 16, size=(64, 96), seed=0)
    convert_dataset(work / "raw", work / "coco", fmt="masks", splits={"val": 0.25}, seed=0)
    (work / "space.yaml").write_text(SPACE, encoding="utf-8")
    return work / "coco" / "annotations"


def workload_opts(data: Path, iters: int, eval_period: int, precise_bn_iters: int) -> list[str]:
    """The ``KEY VALUE`` opts every trial of the bench trains with."""
    return [
        "DATASETS.TRAIN", f"('{data / 'train.json'}',)", "DATASETS.TEST",
        f"('{data / 'val.json'}',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.MAX_ITER", str(iters), "TEST.EVAL_PERIOD", str(eval_period),
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "100",
        "TEST.PRECISE_BN.ENABLED", str(precise_bn_iters > 0),
        "TEST.PRECISE_BN.NUM_ITER", str(max(1, precise_bn_iters)),
    ]


def study(tool, work: Path, data: Path, pruner: str, trials: int, seed: int,
          flags: list[str], iters: int, eval_period: int, precise_bn_iters: int
          ) -> dict[str, float]:
    """Run one study; its best value, total iterations, pruned trials (and at which
    iterations), wall and summed trial seconds."""
    output = work / f"seed{seed}_{pruner}"
    sys.argv = [
        "tune.py", "--config-file", str(CONFIG), "--space", str(work / "space.yaml"),
        "--trials", str(trials), "--output", str(output), "--pruner", pruner, "--seed",
        str(seed), *flags, *workload_opts(data, iters, eval_period, precise_bn_iters),
    ]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        tool.main()
    wall = time.perf_counter() - start
    print(f"seed {seed}, --pruner {pruner}:\n" + out.getvalue().split("\nwrote")[0], flush=True)
    done = optuna.load_study(study_name="d2seg-tune", storage=f"sqlite:///{output / 'study.db'}")
    trials_ = done.get_trials(deepcopy=False)
    return {
        "best": done.best_value,
        "iterations": sum(t.user_attrs["iterations"] for t in trials_),
        "pruned_at": sorted(t.user_attrs["iterations"] for t in trials_
                            if t.state == TrialState.PRUNED),
        "wall": wall,
        "trial_seconds": sum(t.user_attrs["seconds"] for t in trials_),
    }


def summary(name: str, values: list[float], unit: str = "") -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{name}: {statistics.mean(values):.3f}{unit} (sd {spread:.3f}, min "
            f"{min(values):.3f}, max {max(values):.3f} over {len(values)} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--iters", type=int, default=24, help="SOLVER.MAX_ITER of a trial")
    parser.add_argument("--eval-period", type=int, default=3, help="TEST.EVAL_PERIOD")
    parser.add_argument("--precise-bn-iters", type=int, default=6,
                        help="TEST.PRECISE_BN.NUM_ITER (0: TEST.PRECISE_BN off)")
    parser.add_argument("--pruner", choices=("median", "asha", "hyperband"), default="median",
                        help="the pruned study's pruner (the other study: none)")
    parser.add_argument("--pruner-startup", type=int, metavar="N")
    parser.add_argument("--pruner-warmup", type=int, metavar="K")
    args = parser.parse_args()
    pruners = (args.pruner, "none")
    flags = []  # for the median study only
    if args.pruner_startup is not None:
        flags += ["--pruner-startup", str(args.pruner_startup)]
    if args.pruner_warmup is not None:
        flags += ["--pruner-warmup", str(args.pruner_warmup)]
    tool = load_tool()
    ratios, gaps, overheads = [], [], {p: [] for p in pruners}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_data(work)
        for seed in args.seeds:
            results = {p: study(tool, work, data, p, args.trials, seed,
                                flags if p == "median" else [], args.iters, args.eval_period,
                                args.precise_bn_iters)
                       for p in pruners}
            for pruner, r in results.items():
                overheads[pruner].append(r["wall"] / r["trial_seconds"])
                print(f"[seed {seed}, {pruner}] best sem_seg/mIoU {r['best']:.2f}, "
                      f"{r['iterations']} iterations, {len(r['pruned_at'])} pruned (at "
                      f"iterations {r['pruned_at']}), study {r['wall']:.1f} s, trials "
                      f"{r['trial_seconds']:.1f} s, tune_overhead {overheads[pruner][-1]:.3f}")
            pruned, none = results[args.pruner], results["none"]
            gaps.append(pruned["best"] - none["best"])
            ratios.append(pruned["iterations"] / none["iterations"])
            print(f"[seed {seed}] pruning_iteration_ratio {ratios[-1]:.3f}, best_metric_gap "
                  f"{gaps[-1]:+.2f} points ({args.pruner} - none)", flush=True)
    print(summary("pruning_iteration_ratio", ratios))
    print(summary("best_metric_gap", gaps, " points"))
    for pruner in pruners:
        print(summary(f"tune_overhead[{pruner}]", overheads[pruner]))


if __name__ == "__main__":
    main()
