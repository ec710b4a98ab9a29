"""TEST.EXPECTED_RESULTS as Detectron2's verify_results: absolute tolerance; absent or non-finite
metrics are misses."""

import pytest

from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.evaluation.testing import verify_results


def _cfg(expected):
    cfg = get_cfg()
    cfg.merge_from_list(["TEST.EXPECTED_RESULTS", repr(expected)])
    return cfg


def test_results_within_tolerance_pass_and_nothing_expected_passes():
    assert verify_results(_cfg([["segm", "AP", 38.5, 0.2]]), {"segm": {"AP": 38.65}}) == []
    assert verify_results(get_cfg(), {"segm": {"AP": 1.0}}) == []


def test_misses_name_the_metric():
    cfg = _cfg([["segm", "AP", 38.5, 0.2], ["bbox", "AP", 41.0, 0.5], ["segm", "AP50", 60, 1]])
    misses = verify_results(cfg, {"segm": {"AP": 38.0, "AP50": float("nan")}})
    assert len(misses) == 3
    assert misses[0].startswith("segm/AP = 38.0000, expected 38.5")
    assert misses[1].startswith("bbox/AP is None") and misses[2].startswith("segm/AP50 is nan")


def test_a_malformed_entry_is_a_config_error():
    with pytest.raises(ConfigError, match="TEST.EXPECTED_RESULTS"):
        verify_results(_cfg([["segm", "AP", 38.5]]), {})
