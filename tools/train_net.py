#!/usr/bin/env python
"""Train or evaluate a d2seg model, as Detectron2's ``tools/train_net.py``.

    python tools/train_net.py --config-file configs/balloon/mask_rcnn_R_50_FPN.yaml \\
        OUTPUT_DIR runs/balloon
    python tools/train_net.py --config-file CFG --resume                      # continue a run
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS runs/x/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 2                  # DDP (gloo on CPU)
    torchrun --nproc_per_node 2 tools/train_net.py --config-file CFG          # under torchrun

With ``--eval-only``, ``TEST.EXPECTED_RESULTS`` ([[task, metric, expected, tolerance], ...]) is
checked as Detectron2 does: a miss prints one line per metric and exits 1.

Exit codes: 0 done; 1 a TEST.EXPECTED_RESULTS miss; 2 a user mistake (one line on stderr); 130 / 143 stopped by SIGINT (Ctrl-C)
/ SIGTERM after saving a checkpoint, with one line naming it and the ``--resume`` command (a
second Ctrl-C aborts at once without saving, also 130).
"""

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2seg.checkpoint import D2SegCheckpointer  # noqa: E402
from d2seg.engine import default_argument_parser, default_setup, launch, setup_cfg  # noqa: E402
from d2seg.engine.trainer import DefaultTrainer, auto_scale_workers  # noqa: E402
from d2seg.errors import ConfigError  # noqa: E402
from d2seg.evaluation.testing import verify_results  # noqa: E402
from d2seg.modeling import build_model  # noqa: E402
from d2seg.utils import comm  # noqa: E402
from d2seg.utils.cli import Interrupted, run_cli  # noqa: E402


def main(args: argparse.Namespace) -> dict:
    cfg = auto_scale_workers(setup_cfg(args), comm.get_world_size())
    if args.eval_only and not cfg.MODEL.WEIGHTS:
        raise ConfigError(
            "--eval-only needs weights; fix: add MODEL.WEIGHTS path/to/model_final.pth"
        )
    cfg = default_setup(cfg, args)
    if args.eval_only:
        model = build_model(cfg)
        D2SegCheckpointer(model, cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
        results = DefaultTrainer.test(cfg, model, cfg.MODEL.WEIGHTS)
        misses = verify_results(cfg, results) if comm.is_main_process() else []
        if misses:
            for miss in misses:
                print(f"TEST.EXPECTED_RESULTS: {miss}", file=sys.stderr)
            sys.exit(1)
        return results
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    try:
        trainer.train()
    except Interrupted as stop:
        raise Interrupted(stop.signum, f"{stop}; continue with: {resume_command()}") from None
    return {}


def resume_command() -> str:
    """This command line with ``--resume`` (before the KEY VALUE overrides, which take all
    arguments after them)."""
    rest = [a for a in sys.argv[1:] if a != "--resume"]
    return shlex.join(["python", sys.argv[0], "--resume", *rest])


def cli() -> None:
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    run_cli(cli)
