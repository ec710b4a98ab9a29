"""``TEST.EXPECTED_RESULTS``: Detectron2's check of evaluation results against expected values."""

import logging
import math
from typing import Any

from d2seg.config import CfgNode
from d2seg.errors import ConfigError

logger = logging.getLogger(__name__)


def verify_results(cfg: CfgNode, results: dict[str, dict[str, Any]]) -> list[str]:
    """The misses of ``results`` (``{task: {metric: value}}``) against ``TEST.EXPECTED_RESULTS``
    (``[[task, metric, expected, tolerance], ...]``), as Detectron2's ``verify_results``: a
    metric that is absent, not finite, or further than ``tolerance`` from ``expected`` is a miss.
    Returns one line per miss (empty: all match, or nothing is expected).

    Example::

        from d2seg.config import get_cfg
        from d2seg.evaluation.testing import verify_results

        cfg = get_cfg()
        cfg.TEST.EXPECTED_RESULTS = [["segm", "AP", 38.5, 0.5]]
        assert verify_results(cfg, {"segm": {"AP": 38.7}}) == []
        assert verify_results(cfg, {"segm": {"AP": 30.0}})
    """
    misses = []
    for entry in cfg.TEST.EXPECTED_RESULTS:
        if not isinstance(entry, (list, tuple)) or len(entry) != 4:
            raise ConfigError(
                f"TEST.EXPECTED_RESULTS entry {entry!r}; fix: give [task, metric, expected, "
                "tolerance], e.g. ['segm', 'AP', 38.5, 0.2]"
            )
        task, metric, expected, tolerance = entry
        actual = results.get(task, {}).get(metric)
        if not isinstance(actual, (int, float)) or not math.isfinite(actual):
            misses.append(f"{task}/{metric} is {actual!r}, expected {expected} ± {tolerance}")
        elif abs(actual - expected) > tolerance:
            misses.append(f"{task}/{metric} = {actual:.4f}, expected {expected} ± {tolerance}")
    for miss in misses:
        logger.error(f"TEST.EXPECTED_RESULTS: {miss}")
    if cfg.TEST.EXPECTED_RESULTS and not misses:
        logger.info("TEST.EXPECTED_RESULTS: all results match")
    return misses
