"""Optimizers, parameter groups, gradient clipping and LR schedules."""

from d2seg.solver.build import build_gradient_clipper, build_optimizer, get_default_optimizer_params
from d2seg.solver.lr_scheduler import LRMultiplier, build_lr_scheduler, linear_scaling_warning

__all__ = [
    "LRMultiplier",
    "build_gradient_clipper",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
    "linear_scaling_warning",
]
