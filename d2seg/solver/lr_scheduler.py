"""Learning-rate schedules: fvcore's ParamSchedulers, driven per iteration.

A schedule is a multiplier of the base LR as a function of training progress in [0, 1]
(fvcore's ParamScheduler); :class:`LRMultiplier` applies it to a torch optimizer each iteration.
This is the split Detectron2 uses, so ``WarmupMultiStepLR`` and ``WarmupCosineLR`` behave as there.
"""

import logging
import math
from collections.abc import Sequence

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

from d2seg.config import CfgNode
from d2seg.errors import ConfigError

logger = logging.getLogger(__name__)


def warmup(
    schedule: ParamScheduler, factor: float, length: float, method: str = "linear"
) -> ParamScheduler:
    """Prefix ``schedule`` with a warmup over the first ``length`` fraction of training.

    ``method="linear"`` ramps from ``factor × schedule(0)`` to ``schedule(length)``;
    ``"constant"`` holds ``factor × schedule(0)``. After the warmup, ``schedule`` continues on
    its own time axis (warmup does not stretch it).
    """
    if length <= 0:
        return schedule
    start = factor * schedule(0.0)
    if method == "constant":
        ramp: ParamScheduler = ConstantParamScheduler(start)
    else:
        ramp = LinearParamScheduler(start, schedule(length))
    return CompositeParamScheduler(
        [ramp, schedule], lengths=[length, 1 - length], interval_scaling=["rescaled", "fixed"]
    )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """LR of each param group = its base LR × ``multiplier(iteration / max_iter)``.

    Call :meth:`step` once per iteration. Its state dict holds plain numbers only, so it loads
    with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ):
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._last_lr = self.get_lr()

    def get_lr(self) -> list[float]:
        progress = min(max(self.last_epoch, 0) / self._max_iter, 1.0)
        multiplier = self._multiplier(progress)
        return [base_lr * multiplier for base_lr in self.base_lrs]


def multistep_milestones(steps: Sequence[int], max_iter: int) -> list[int]:
    """The ``SOLVER.STEPS`` that fall inside training (``< max_iter``), in iterations.

    A step at or beyond ``SOLVER.MAX_ITER`` would never lower the LR (a common leftover of
    shortening a run); it is dropped with one warning instead of failing in fvcore.
    """
    steps = list(steps)
    if any(b <= a for a, b in zip([0, *steps], steps)):
        raise ConfigError(
            f"SOLVER.STEPS {steps} must be positive and increasing iterations; "
            f"fix: e.g. SOLVER.STEPS ({int(max_iter * 0.75)},)"
        )
    kept = [s for s in steps if s < max_iter]
    if len(kept) != len(steps):
        logger.warning(
            f"SOLVER.STEPS {steps}: steps {[s for s in steps if s >= max_iter]} are at or beyond "
            f"SOLVER.MAX_ITER {max_iter} and never lower the LR; they are ignored"
        )
    return kept


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """``SOLVER.LR_SCHEDULER_NAME`` with ``SOLVER.WARMUP_*``, as a per-iteration scheduler."""
    max_iter = cfg.SOLVER.MAX_ITER
    if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        steps = multistep_milestones(cfg.SOLVER.STEPS, max_iter)
        schedule: ParamScheduler = MultiStepParamScheduler(
            values=[cfg.SOLVER.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=max_iter,
        )
    else:
        end = cfg.SOLVER.BASE_LR_END / cfg.SOLVER.BASE_LR if cfg.SOLVER.BASE_LR else 0.0
        schedule = CosineParamScheduler(1.0, end)
    schedule = warmup(
        schedule,
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / max_iter, 1.0),
        cfg.SOLVER.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, schedule, max_iter=max_iter)


def linear_scaling_warning(cfg: CfgNode, reference_lr_per_image: float = 0.02 / 16) -> str | None:
    """A warning when BASE_LR / IMS_PER_BATCH is far (> 4×) from Detectron2's 0.02 per 16 images
    for SGD, the linear scaling rule; ``None`` when it is close or the optimizer is AdamW."""
    if cfg.SOLVER.OPTIMIZER != "SGD" or cfg.SOLVER.BASE_LR <= 0:
        return None
    per_image = cfg.SOLVER.BASE_LR / cfg.SOLVER.IMS_PER_BATCH
    ratio = per_image / reference_lr_per_image
    if abs(math.log(ratio)) <= math.log(4):
        return None
    suggested = reference_lr_per_image * cfg.SOLVER.IMS_PER_BATCH
    return (
        f"SOLVER.BASE_LR {cfg.SOLVER.BASE_LR} for SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} "
        f"is {ratio:.2g}x the linear scaling rule (0.02 per 16 images); consider "
        f"SOLVER.BASE_LR {suggested:.4g}"
    )
