"""Training engine: command line, run setup, process launch, trainer and hooks."""

from d2seg.engine.defaults import default_argument_parser, default_setup, setup_cfg
from d2seg.engine.launch import launch

__all__ = ["default_argument_parser", "default_setup", "launch", "setup_cfg"]
