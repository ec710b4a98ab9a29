"""Training engine: command line, run setup, process launch, trainer, hooks and predictor."""

from d2seg.engine.defaults import default_argument_parser, default_setup, setup_cfg
from d2seg.engine.launch import launch
from d2seg.engine.predictor import DefaultPredictor

__all__ = ["DefaultPredictor", "default_argument_parser", "default_setup", "launch", "setup_cfg"]
