#!/usr/bin/env python
"""Tuning cost: the same study with ``--pruner median`` and with ``--pruner none``.

Workload: the tiny U-Net on synthetic 64 px cars (16 images, 12 train / 4 val), CPU, one
process; ``--trials`` trials (default 16) of ``SOLVER.MAX_ITER`` 12 evaluated every 3
iterations, over ``SOLVER.BASE_LR`` (log 1e-5..1e-1) and ``MODEL.SEM_SEG_HEAD.LOSS``; TPE
seeded 0 in both studies. Each study is ``tools/tune.py``'s ``main`` in this process. Prints:

* ``pruning_iteration_ratio: X``: training iterations of all trials with median pruning ÷
  without (target <= 0.6), and the best ``sem_seg/mIoU`` of each (within 2 points);
* ``tune_overhead: X``: wall time of the study (``main`` from argument parsing to the written
  plots) ÷ the sum of its trials' run times (each trial's ``seconds``: build, training,
  evaluations; target <= 1.1), for each study.
"""

import argparse
import contextlib
import importlib.util
import io
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


def study(tool, work: Path, data: Path, pruner: str, trials: int) -> dict[str, float]:
    """Run one study; its best value, total iterations, wall and summed trial seconds."""
    output = work / pruner
    sys.argv = [
        "tune.py", "--config-file", str(ROOT / "configs" / "tiny" / "unet_R_18_tiny.yaml"),
        "--space", str(work / "space.yaml"), "--trials", str(trials), "--output", str(output),
        "--pruner", pruner, "--seed", "0",
        "DATASETS.TRAIN", f"('{data / 'train.json'}',)", "DATASETS.TEST",
        f"('{data / 'val.json'}',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.MAX_ITER", "12", "TEST.EVAL_PERIOD", "3", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "100",
    ]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        tool.main()
    wall = time.perf_counter() - start
    print(out.getvalue().split("\nwrote")[0])
    done = optuna.load_study(study_name="d2seg-tune", storage=f"sqlite:///{output / 'study.db'}")
    trials_ = done.get_trials(deepcopy=False)
    return {
        "best": done.best_value,
        "iterations": sum(t.user_attrs["iterations"] for t in trials_),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials_),
        "wall": wall,
        "trial_seconds": sum(t.user_attrs["seconds"] for t in trials_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    tool = load_tool()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_carvana(work / "raw", 16, size=(64, 96), seed=0)
        convert_dataset(work / "raw", work / "coco", fmt="masks", splits={"val": 0.25}, seed=0)
        (work / "space.yaml").write_text(SPACE, encoding="utf-8")
        data = work / "coco" / "annotations"
        results = {p: study(tool, work, data, p, args.trials) for p in ("median", "none")}
    for pruner, r in results.items():
        print(f"[{pruner}] best sem_seg/mIoU {r['best']:.2f}, {r['iterations']} iterations, "
              f"{r['pruned']} pruned, study {r['wall']:.1f} s, trials {r['trial_seconds']:.1f} s")
        print(f"tune_overhead[{pruner}]: {r['wall'] / r['trial_seconds']:.3f}")
    median, none = results["median"], results["none"]
    print(f"best_metric_gap: {median['best'] - none['best']:+.2f} points (median - none)")
    print(f"pruning_iteration_ratio: {median['iterations'] / none['iterations']:.3f}")


if __name__ == "__main__":
    main()
