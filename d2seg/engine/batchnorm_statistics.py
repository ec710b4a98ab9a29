"""Whether a run's evaluations would judge stale BatchNorm statistics.

At evaluation a BatchNorm layer normalises with its running mean and variance, an exponential
average (``momentum``, PyTorch's default 0.1) of the training batches' statistics that starts
from mean 0 and variance 1. After ``k`` training steps the starting values still weigh
``(1 - momentum) ** k``: 73 % after 3 steps, 35 % after 10, 4 % after 30. Evaluations that come
that early measure a half-initialised normalisation, not the weights, and every decision taken
on them (``model_best.pth``, early stopping, a tuning pruner) ranks models by how fast their
statistics moved. bench/RESULTS.md "tune: stale BatchNorm statistics": with evaluations every 3
iterations the tiny U-Net's best learning rates read 11 mIoU (the "all foreground" value) until
iteration 12, and 54-82 with ``TEST.PRECISE_BN``, which recomputes the statistics before each
evaluation (Detectron2's remedy).

Example::

    message = stale_statistics_warning(model, cfg)
    if message:
        logger.warning(message)
"""

import math

from fvcore.nn.precise_bn import get_bn_modules
from torch import nn

from d2seg.config import CfgNode

STALE_SHARE = 0.05  # the largest weight of the starting statistics that is not worth a warning


def stale_statistics_warning(model: nn.Module, cfg: CfgNode) -> str | None:
    """A one-line warning with the fix when ``cfg`` evaluates ``model`` (every
    ``TEST.EVAL_PERIOD`` iterations, on ``DATASETS.TEST``, without ``TEST.PRECISE_BN``) while
    its training BatchNorm layers' running statistics still weigh their starting values more
    than :data:`STALE_SHARE` at the first evaluation; ``None`` otherwise."""
    period = cfg.TEST.EVAL_PERIOD
    if period <= 0 or not cfg.DATASETS.TEST or cfg.TEST.PRECISE_BN.ENABLED:
        return None
    # momentum None is a cumulative average: no starting value left after the first batch
    momenta = [m.momentum for m in get_bn_modules(model) if m.momentum is not None]
    if not momenta:
        return None
    momentum = min(momenta)  # the slowest layer keeps its starting values longest
    share = (1 - momentum) ** period
    if share <= STALE_SHARE:
        return None
    enough = math.ceil(math.log(STALE_SHARE) / math.log(1 - momentum))
    return (
        f"TEST.EVAL_PERIOD {period}: at the first evaluation the BatchNorm running statistics "
        f"(momentum {momentum:g}) still weigh their starting values {share:.0%}, so early "
        f"evaluations, and the best-model, early-stopping and pruning decisions taken on them, "
        f"judge stale statistics rather than the weights; fix: add TEST.PRECISE_BN.ENABLED True "
        f"TEST.PRECISE_BN.NUM_ITER N (N training batches, e.g. one pass over the training set), "
        f"or evaluate every {enough} iterations or more"
    )
