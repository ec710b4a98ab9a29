"""The ResNet bottleneck's stride placement: Detectron2's default (in the 1×1, MSRA weights),
d2seg's base configs (in the 3×3, torchvision weights), and the warning when weights trained
with the other placement are loaded."""

import logging
import pickle

import numpy as np
import pytest
import torch
import torchvision

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.modeling import build_model

BASE_CONFIGS = ("configs/Base-RCNN-FPN.yaml", "configs/Semantic/Base-UNet.yaml")
WARNING = "set MODEL.RESNETS.STRIDE_IN_1X1"


def _unet_r50(repo_root, stride_in_1x1: bool):
    cfg = get_cfg()
    cfg.merge_from_file(str(repo_root / "configs/Semantic/Base-UNet.yaml"))
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def _first_bottleneck_of_res3(model):
    return model.backbone.layer2[0]


def test_detectron2s_default_strides_in_the_1x1_and_d2segs_base_configs_in_the_3x3(repo_root):
    cfg = get_cfg()
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is True
    assert list(cfg.MODEL.RESNETS.OUT_FEATURES) == ["res4"]
    for config in BASE_CONFIGS:
        cfg = get_cfg()
        cfg.merge_from_file(str(repo_root / config))
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False, config
    msra = _first_bottleneck_of_res3(_unet_r50(repo_root, True))
    torchvision_style = _first_bottleneck_of_res3(_unet_r50(repo_root, False))
    assert (msra.conv1.stride, msra.conv2.stride) == ((2, 2), (1, 1))
    assert (torchvision_style.conv1.stride, torchvision_style.conv2.stride) == ((1, 1), (2, 2))


@pytest.mark.parametrize("stride_in_1x1, warned", [(True, True), (False, False)])
def test_torchvision_weights_into_an_msra_trunk_warn(tmp_path, repo_root, caplog,
                                                      stride_in_1x1, warned):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    model = _unet_r50(repo_root, stride_in_1x1)
    with caplog.at_level(logging.WARNING):
        D2SegCheckpointer(model).load(str(path))
    assert (WARNING + " False" in caplog.text) is warned, caplog.text
    torch.testing.assert_close(  # the weights load either way
        model.backbone.layer2[0].conv1.weight,
        torch.load(path, weights_only=True)["layer2.0.conv1.weight"],
    )


@pytest.mark.parametrize("stride_in_1x1, warned", [(False, True), (True, False)])
def test_msra_weights_into_a_torchvision_trunk_warn(tmp_path, repo_root, caplog,
                                                     stride_in_1x1, warned):
    path = tmp_path / "R-50.pkl"
    blob = np.ones((64, 64, 1, 1), np.float32)  # one Caffe2-named blob: read as MSRA weights
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"res2_0_branch2a_w": blob}}, f)
    model = _unet_r50(repo_root, stride_in_1x1)
    with caplog.at_level(logging.WARNING):
        D2SegCheckpointer(model).load(str(path))
    assert (WARNING + " True" in caplog.text) is warned, caplog.text
    assert bool((model.backbone.layer1[0].conv1.weight == 1).all())
