#!/usr/bin/env python
"""Training speed: ``DefaultTrainer`` (what ``tools/train_net.py`` runs) against a bare loop.

The reference is a plain torchvision-style loop: the same model built by ``build_model`` from
the same seed, the same optimizer and LR schedule, the same batches from the same training loader,
and only ``loss.backward()`` / ``optimizer.step()`` / ``scheduler.step()`` around them. The
trainer adds everything a run needs (hooks, loss logging, metric writers, TensorBoard, the
progress log); checkpoints and evaluation are left out of both (periods beyond the run).

Workloads: the tiny Mask R-CNN on synthetic 96 px balloons and the tiny grayscale U-Net on
synthetic cars, CPU, one process. Each path runs ``--repeats`` times, alternating; for every
iteration the fastest of its repeats counts (the machine may be shared). Prints per workload and
overall (the worst workload):

* ``train_speed_ratio: X``: trainer iterations/s ÷ bare-loop iterations/s (target >= 0.95);
* ``data_wait_fraction: X``: time the trainer waited for the loader ÷ its step time (< 0.10).
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

from d2seg.config import CfgNode, get_cfg
from d2seg.data.build import build_detection_train_loader
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.synthetic import make_balloons, make_carvana
from d2seg.engine.train_loop import HookBase
from d2seg.engine.trainer import DefaultTrainer
from d2seg.modeling import build_model
from d2seg.solver import build_lr_scheduler, build_optimizer
from d2seg.utils.env import seed_all_rng

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


class _IterationEnds(HookBase):
    """Wall-clock time at the end of every iteration, registered last so that every other
    hook's per-iteration work falls inside the iteration it belongs to."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def after_step(self) -> None:
        self.times.append(time.perf_counter())


def workload_cfgs(data_dir: Path) -> dict[str, CfgNode]:
    """The two workloads' configs on synthetic data written into ``data_dir``."""
    make_balloons(data_dir / "balloons", 32, size=(96, 96), seed=0)
    convert_dataset(data_dir / "balloons", data_dir / "balloons_coco", outputs=("instances",))
    make_carvana(data_dir / "cars", 16, size=(96, 144), seed=0)
    convert_dataset(data_dir / "cars", data_dir / "cars_coco", fmt="masks")
    balloons = data_dir / "balloons_coco" / "annotations" / "all.json"
    cars = data_dir / "cars_coco" / "annotations" / "all.json"
    overrides = {
        "mask_rcnn_R_18_tiny": [
            "DATASETS.TRAIN", f"('{balloons}',)", "MODEL.ROI_HEADS.NUM_CLASSES", "1",
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
        ],
        "unet_R_18_gray_binary_tiny": [
            "DATASETS.TRAIN", f"('{cars}',)",
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "144",
        ],
    }
    cfgs = {}
    for name, opts in overrides.items():
        cfg = get_cfg()
        cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
        cfg.merge_from_list(opts)
        cfg.DATASETS.TEST = ()
        cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
        cfg.TEST.EVAL_PERIOD = 0
        cfgs[name] = cfg
    return cfgs


def time_trainer(cfg: CfgNode, iterations: int, warmup: int, output_dir: str
                 ) -> tuple[list[float], float]:
    """(seconds of each measured iteration, data-wait fraction) of ``DefaultTrainer``."""
    cfg = cfg.clone()
    cfg.SOLVER.MAX_ITER = warmup + iterations
    cfg.OUTPUT_DIR = output_dir
    seed_all_rng(cfg.SEED)
    trainer = DefaultTrainer(cfg)
    ends = _IterationEnds()
    trainer.register_hooks([ends])
    trainer.train()
    measured = range(warmup, warmup + iterations)
    wait = sum(v for v, it in trainer.storage.history("data_time").values() if it in measured)
    step = sum(v for v, it in trainer.storage.history("time").values() if it in measured)
    return _durations(ends.times, warmup), wait / step


def time_bare_loop(cfg: CfgNode, iterations: int, warmup: int) -> list[float]:
    """Seconds of each measured iteration of the reference loop."""
    cfg = cfg.clone()
    cfg.SOLVER.MAX_ITER = warmup + iterations
    seed_all_rng(cfg.SEED)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    batches = iter(build_detection_train_loader(cfg))
    model.train()
    ends = []
    for _ in range(warmup + iterations):
        loss_dict = model(next(batches))
        loss = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ends.append(time.perf_counter())
    return _durations(ends, warmup)


def _durations(ends: list[float], warmup: int) -> list[float]:
    """Iteration ``i``'s time is from the end of iteration ``i - 1`` to its own end."""
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="measured iterations per run")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured first iterations (>= 1)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each path; each iteration's fastest run counts")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the trainer's log lines; the ratios are the output

    ratios, waits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in workload_cfgs(Path(tmp) / "data").items():
            # Both paths see the same batches in the same order, so iteration i costs the same
            # work in each; the fastest of the repeats of each iteration filters out the time
            # other processes on the machine took.
            bare, trainer, fractions = [], [], []
            for repeat in range(args.repeats):
                bare.append(time_bare_loop(cfg, args.iterations, args.warmup))
                durations, fraction = time_trainer(
                    cfg, args.iterations, args.warmup, f"{tmp}/{name}_{repeat}"
                )
                trainer.append(durations)
                fractions.append(fraction)
            bare_s = sum(map(min, zip(*bare)))
            trainer_s = sum(map(min, zip(*trainer)))
            ratio, wait = bare_s / trainer_s, min(fractions)
            print(f"{name}: trainer {args.iterations / trainer_s:.2f} it/s, bare loop "
                  f"{args.iterations / bare_s:.2f} it/s")
            print(f"{name}/train_speed_ratio: {ratio:.3f}")
            print(f"{name}/data_wait_fraction: {wait:.3f}")
            ratios.append(ratio)
            waits.append(wait)
    print(f"train_speed_ratio: {min(ratios):.3f}")
    print(f"data_wait_fraction: {max(waits):.3f}")


if __name__ == "__main__":
    main()
