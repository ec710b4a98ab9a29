"""VGG, MobileNetV3 and EfficientNet backbones (torchvision ``features``): maps by stride, any
input channels, torchvision state dicts, freezing."""

from functools import lru_cache

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.modeling import build_model
from d2seg.modeling.backbone import build_backbone
from d2seg.modeling.backbone.efficientnet import efficientnet_backbone
from d2seg.modeling.backbone.mobilenet import mobilenet_v3_backbone
from d2seg.modeling.backbone.vgg import vgg_backbone

FIVE = ["c1", "c2", "c3", "c4", "c5"]
# (builder, kwargs, torchvision model, channels of c1..c5)
FAMILIES = {
    "vgg11_bn": (vgg_backbone, {"depth": 11}, torchvision.models.vgg11_bn,
                 [128, 256, 512, 512, 512]),
    "mobilenet_v3_small": (mobilenet_v3_backbone, {"size": "small"},
                           torchvision.models.mobilenet_v3_small, [16, 16, 24, 48, 576]),
    "mobilenet_v3_large": (mobilenet_v3_backbone, {"size": "large"},
                           torchvision.models.mobilenet_v3_large, [16, 24, 40, 112, 960]),
    "efficientnet_b0": (efficientnet_backbone, {"variant": "b0"},
                        torchvision.models.efficientnet_b0, [16, 24, 40, 112, 320]),
}


@lru_cache(maxsize=None)
def _torchvision_state(family: str) -> dict:
    torch.manual_seed(0)
    return FAMILIES[family][2](weights=None).state_dict()


def _backbone(family: str, **overrides):
    build, kwargs, _, _ = FAMILIES[family]
    return build(**{**kwargs, "in_channels": 3, "out_features": FIVE, **overrides})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_maps_have_the_reported_channels_and_strides(family):
    backbone = _backbone(family, in_channels=1).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 1, 64, 96))
    shapes = backbone.output_shape()
    assert list(features) == FIVE == list(shapes)
    assert [s.channels for s in shapes.values()] == FAMILIES[family][3]
    assert [s.stride for s in shapes.values()] == [2, 4, 8, 16, 32]
    for name, feature in features.items():
        stride = shapes[name].stride
        assert feature.shape == (2, shapes[name].channels, 64 // stride, 96 // stride)
    assert backbone.size_divisibility == 32


def test_vgg_has_a_stride_1_map_and_builds_only_what_is_asked():
    backbone = vgg_backbone(depth=16, in_channels=3, out_features=["c0", "c2"])
    assert backbone.output_shape()["c0"].stride == 1
    assert backbone.size_divisibility == 4
    last = backbone.features[-1]
    assert isinstance(last, torch.nn.ReLU)  # cut before the second max-pool
    with pytest.raises(ConfigError, match=r"MODEL.VGG.OUT_FEATURES.*c6"):
        vgg_backbone(depth=16, in_channels=3, out_features=["c6"])
    with pytest.raises(ConfigError, match="MODEL.VGG.DEPTH"):
        vgg_backbone(depth=12, in_channels=3, out_features=["c1"])


def test_dilated_mobilenet_keeps_the_stage_name_at_stride_16():
    backbone = mobilenet_v3_backbone(size="large", in_channels=3, dilated=True,
                                     out_features=["c3", "c5"]).eval()
    shapes = backbone.output_shape()
    assert (shapes["c3"].stride, shapes["c5"].stride, shapes["c5"].channels) == (8, 16, 960)
    assert backbone.size_divisibility == 16
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 64, 64))["c5"].shape == (1, 960, 4, 4)


def test_width_multiplier_narrows_every_map():
    half = mobilenet_v3_backbone(size="small", in_channels=3, width_mult=0.5, out_features=FIVE)
    assert [s.channels for s in half.output_shape().values()] == [8, 8, 16, 24, 288]
    with pytest.raises(ConfigError, match="WIDTH_MULT"):
        mobilenet_v3_backbone(size="small", in_channels=3, width_mult=0, out_features=FIVE)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("in_channels", [1, 4])
def test_torchvision_state_dict_loads_with_the_stem_adapted(family, in_channels):
    state = _torchvision_state(family)
    backbone = _backbone(family, in_channels=in_channels)
    result = backbone.load_state_dict(state, strict=False)
    assert result.missing_keys == []
    assert all(k.startswith(("classifier.", "features.")) for k in result.unexpected_keys)
    key = backbone.stem_weight_key
    expected = state[key].mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * (3 / in_channels)
    torch.testing.assert_close(backbone.state_dict()[key], expected)
    deep = [k for k in backbone.state_dict() if k.endswith("weight")][-1]
    torch.testing.assert_close(backbone.state_dict()[deep], state[deep])


def test_gray_model_matches_the_rgb_model_on_a_replicated_image():
    state = _torchvision_state("mobilenet_v3_small")
    rgb, gray = _backbone("mobilenet_v3_small").eval(), _backbone(
        "mobilenet_v3_small", in_channels=1).eval()
    rgb.load_state_dict(state, strict=False)
    gray.load_state_dict(state, strict=False)
    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(image)["c5"], rgb(image.repeat(1, 3, 1, 1))["c5"])


def test_freeze_at_fixes_the_layers_up_to_that_stride():
    torch.manual_seed(0)
    backbone = _backbone("efficientnet_b0", freeze_at=2).train()
    frozen = {k for k, p in backbone.named_parameters() if not p.requires_grad}
    # features.0 (stem, stride 2), .1 (stride 2) and .2 (stride 4) are frozen; .3 is not.
    assert {k.split(".")[1] for k in frozen} == {"0", "1", "2"}
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.features[2].modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in backbone.features[3].modules())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone(torch.randn(2, 3, 64, 64))  # train mode: BatchNorm statistics update
    after = backbone.state_dict()
    changed = {k.split(".")[1] for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and not changed & {"0", "1", "2"}
    assert all(not p.requires_grad for p in _backbone("vgg11_bn", freeze_at=5).parameters())
    with pytest.raises(ConfigError, match="FREEZE_AT"):
        _backbone("vgg11_bn", freeze_at=6)


def test_config_nodes_select_the_families():
    cfg = get_cfg()
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [0.0], [1.0]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.BACKBONE.NAME = "build_mobilenet_v3_backbone"
    cfg.MODEL.MOBILENET_V3.SIZE = "small"
    cfg.MODEL.MOBILENET_V3.OUT_FEATURES = ["c2", "c4"]
    assert list(build_backbone(cfg).output_shape()) == ["c2", "c4"]
    cfg.MODEL.MOBILENET_V3.SIZE = "medium"
    with pytest.raises(ConfigError, match="MODEL.MOBILENET_V3.SIZE"):
        build_backbone(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_efficientnet_backbone"
    cfg.MODEL.EFFICIENTNET.VARIANT = "b3"
    assert build_backbone(cfg).output_shape()["c5"].channels == 384
    cfg.MODEL.EFFICIENTNET.VARIANT = "b7"
    with pytest.raises(ConfigError, match="MODEL.EFFICIENTNET.VARIANT"):
        build_backbone(cfg)


def test_checkpointer_loads_a_torchvision_file_into_a_whole_model(tmp_path):
    """MODEL.WEIGHTS = a torchvision classification file: keyed under ``backbone.``."""
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_MNV3_small_gray_tiny.yaml")
    torch.manual_seed(0)
    model = build_model(cfg)
    state = torchvision.models.mobilenet_v3_small(weights=None, width_mult=0.5).state_dict()
    torch.save(state, tmp_path / "mnv3.pth")
    D2SegCheckpointer(model).load(str(tmp_path / "mnv3.pth"))
    torch.testing.assert_close(
        model.backbone.features[0][0].weight.detach(),
        state["features.0.0.weight"].mean(dim=1, keepdim=True) * 3,
    )
    torch.testing.assert_close(model.backbone.features[9].block[0][0].weight.detach(),
                               state["features.9.block.0.0.weight"])
