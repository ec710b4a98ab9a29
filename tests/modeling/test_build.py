"""``build_model``: where the model is built."""

import argparse
from pathlib import Path

import pytest

from d2seg.engine.defaults import setup_cfg
from d2seg.modeling import build_model

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny"


@pytest.mark.parametrize("config", ["unet_R_18_tiny.yaml", "mask_rcnn_R_18_tiny.yaml"])
def test_a_meta_build_has_the_real_models_layers_and_no_weights(config):
    cfg = setup_cfg(argparse.Namespace(config_file=str(TINY / config), opts=[]))
    real, meta = build_model(cfg), build_model(cfg, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert [(n, p.shape) for n, p in meta.named_parameters()] == \
        [(n, p.shape) for n, p in real.named_parameters()]
    assert [type(m) for m in meta.modules()] == [type(m) for m in real.modules()]
