"""What every training script shares: Detectron2's command line and the run-folder setup."""

import argparse
import os
import sys

import torch

from d2seg.config import CfgNode, get_cfg, validate_cfg
from d2seg.engine.run_metadata import resolve_from_data
from d2seg.errors import ConfigError
from d2seg.utils import comm
from d2seg.utils.env import seed_all_rng
from d2seg.utils.io import atomic_open
from d2seg.utils.logger import setup_logger

# Files whose presence means OUTPUT_DIR already holds a training run.
_RUN_MARKERS = ("last_checkpoint", "metrics.json")


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """Detectron2's flags: ``--config-file --resume --eval-only --num-gpus --num-machines
    --machine-rank --dist-url`` and trailing ``KEY VALUE`` config overrides."""
    parser = argparse.ArgumentParser(
        epilog=epilog
        or (
            "Examples:\n"
            f"  {sys.argv[0]} --config-file cfg.yaml MODEL.WEIGHTS /path/to/weight.pth\n"
            f"  {sys.argv[0]} --config-file cfg.yaml --resume\n"
            f"  {sys.argv[0]} --config-file cfg.yaml --eval-only "
            f"MODEL.WEIGHTS run/model_final.pth\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUTPUT_DIR from its last checkpoint (model, optimizer, "
        "scheduler, iteration, RNG state)",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="processes per machine (one per GPU; gloo on CPU)"
    )
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="initialisation URL of the process group, e.g. tcp://host:port; 'auto' picks a "
        "free local port (single machine only)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01",
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Defaults ← ``--config-file`` ← ``KEY VALUE`` overrides, validated and frozen."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    opts = list(args.opts or [])
    flags = [o for o in opts if o.startswith("--")]
    if flags:
        raise ConfigError(
            f"{flags[0]} comes after the KEY VALUE overrides, where it reads as a config key; "
            f"fix: put every --flag before the overrides, e.g. --config-file F {flags[0]} "
            f"KEY VALUE"
        )
    cfg.merge_from_list(opts)
    validate_cfg(cfg)
    cfg.freeze()
    return cfg


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> CfgNode:
    """Prepare ``OUTPUT_DIR``: refuse to overwrite a previous run, log to ``log.txt``, fill the
    class names and 0 class counts from ``DATASETS.TRAIN``
    (:func:`~d2seg.engine.run_metadata.resolve_from_data`; a count the data cannot fit stops
    here, before any training), save that ``config.yaml``, seed every RNG (``SEED + rank``
    when ``SEED >= 0``). Returns the resolved config (Detectron2's returns nothing: use this
    one from here on)."""
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if rank == 0 and not args.resume and not args.eval_only:
        existing = [m for m in _RUN_MARKERS if os.path.exists(os.path.join(output_dir, m))]
        if existing:
            raise ConfigError(
                f"OUTPUT_DIR {output_dir} already holds a run ({', '.join(existing)}); fix: add "
                f"--resume to continue it, or set OUTPUT_DIR to a new folder"
            )
    logger = setup_logger(output_dir, rank)
    logger.info(f"Rank {rank} of {comm.get_world_size()}; torch {torch.__version__}")
    logger.info(f"Command line arguments: {args}")
    cfg = resolve_from_data(cfg)
    if rank == 0:
        with atomic_open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        logger.info(f"Full config saved to {os.path.join(output_dir, 'config.yaml')}")
    seed = seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    logger.info(f"Seeded all RNGs with {seed}")
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    return cfg
