"""The stale-BatchNorm warning: when it is given, what it says, and that its share is what
PyTorch's own BatchNorm keeps of its starting statistics."""

import argparse
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from d2seg.config import get_cfg
from d2seg.engine.batchnorm_statistics import stale_statistics_warning
from d2seg.engine.defaults import setup_cfg
from d2seg.engine.run_metadata import resolve_from_data
from d2seg.engine.trainer import DefaultTrainer

UNET = str(Path(__file__).resolve().parents[2] / "configs" / "tiny" / "unet_R_18_tiny.yaml")


def config(period: int, precise_bn: bool = False, test: tuple[str, ...] = ("val.json",)):
    cfg = get_cfg()
    cfg.TEST.EVAL_PERIOD = period
    cfg.TEST.PRECISE_BN.ENABLED = precise_bn
    cfg.DATASETS.TEST = test
    return cfg


def bn_model(momentum: float | None = 0.1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=momentum), nn.ReLU())


@pytest.mark.parametrize("period", [1, 3, 10])
def test_the_share_is_what_torch_batchnorm_keeps_of_its_starting_statistics(period):
    """After ``period`` training batches whose mean is 5, running_mean is 5 * (1 - share): the
    starting mean (0) still weighs ``share``."""
    norm = nn.BatchNorm2d(1)
    for _ in range(period):
        norm(torch.full((2, 1, 4, 4), 5.0))
    kept = 1 - norm.running_mean.item() / 5.0
    message = stale_statistics_warning(norm, config(period))
    assert f"weigh their starting values {kept:.0%}" in message


def test_the_warning_names_the_period_momentum_and_both_fixes():
    message = stale_statistics_warning(bn_model(), config(3))
    assert message.startswith("TEST.EVAL_PERIOD 3: ")
    assert "momentum 0.1" in message and "73%" in message
    assert "TEST.PRECISE_BN.ENABLED True TEST.PRECISE_BN.NUM_ITER N" in message
    # 0.9 ** 28 = 5.2 % > 5 %, 0.9 ** 29 = 4.7 %: the advised period is the first one quiet
    assert "evaluate every 29 iterations or more" in message
    assert stale_statistics_warning(bn_model(), config(29)) is None
    assert stale_statistics_warning(bn_model(), config(28)) is not None


@pytest.mark.parametrize("model, cfg", [
    (bn_model(), config(3, precise_bn=True)),  # the statistics are recomputed: nothing stale
    (bn_model(), config(0)),  # no evaluation during training
    (bn_model(), config(3, test=())),  # nothing to evaluate on
    (bn_model(momentum=None), config(3)),  # a cumulative average keeps no starting value
    (bn_model().eval(), config(3)),  # frozen BatchNorm: its statistics never change
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), config(3)),  # no BatchNorm
])
def test_no_warning_when_the_evaluations_do_not_read_stale_statistics(model, cfg):
    assert stale_statistics_warning(model, cfg) is None


def test_the_trainer_logs_the_warning_once_when_it_builds_its_hooks(caplog, car_split, tmp_path):
    cfg = setup_cfg(argparse.Namespace(config_file=UNET, opts=[
        "DATASETS.TRAIN", f"('{car_split['train']}',)", "DATASETS.TEST",
        f"('{car_split['val']}',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0",
        "TEST.EVAL_PERIOD", "5", "OUTPUT_DIR", str(tmp_path),
    ]))
    with caplog.at_level(logging.WARNING, logger="d2seg.engine.trainer"):
        DefaultTrainer(resolve_from_data(cfg))
    stale = [r for r in caplog.records if "BatchNorm running statistics" in r.getMessage()]
    assert len(stale) == 1 and "TEST.EVAL_PERIOD 5: " in stale[0].getMessage()
