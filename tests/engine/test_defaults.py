"""The command line as Detectron2 users type it, and the hints when they type it wrong."""

import pytest

from d2seg.engine import default_argument_parser, setup_cfg
from d2seg.errors import ConfigError


def test_a_flag_after_the_overrides_gets_a_hint():
    args = default_argument_parser().parse_args(
        ["--config-file", "configs/tiny/unet_R_18_tiny.yaml", "SOLVER.MAX_ITER", "5", "--resume"]
    )
    with pytest.raises(ConfigError, match="--resume comes after the KEY VALUE overrides.*fix: put"):
        setup_cfg(args)


def test_flags_before_the_overrides_work():
    args = default_argument_parser().parse_args(
        ["--config-file", "configs/tiny/unet_R_18_tiny.yaml", "--resume", "SOLVER.MAX_ITER", "5"]
    )
    assert args.resume and setup_cfg(args).SOLVER.MAX_ITER == 5
