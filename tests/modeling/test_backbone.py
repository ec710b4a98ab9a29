"""ResNet trunk and FPN: feature shapes, any input channels, pretrained-weight adaptation,
freezing."""

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.modeling.backbone import FPN, ResNet, build_backbone
from d2seg.modeling.backbone.stem import adapt_input_channels, map_torchvision_backbone_keys
from d2seg.modeling.heads import UNetHead

ALL_STAGES = ["stem", "res2", "res3", "res4", "res5"]


def _resnet(**overrides) -> ResNet:
    kwargs = dict(depth=18, in_channels=3, out_features=ALL_STAGES, norm="BN", freeze_at=0)
    kwargs.update(overrides)
    return ResNet(**kwargs)


@pytest.mark.parametrize(
    "depth, norm, channels",
    [(18, "BN", [64, 64, 128, 256, 512]), (50, "FrozenBN", [64, 256, 512, 1024, 2048]),
     (34, "GN", [64, 64, 128, 256, 512])],
)
def test_resnet_features_match_output_shape(depth, norm, channels):
    model = _resnet(depth=depth, norm=norm, in_channels=1).eval()
    with torch.no_grad():
        features = model(torch.randn(2, 1, 64, 96))
    shapes = model.output_shape()
    assert list(features) == ALL_STAGES == list(shapes)
    assert [s.channels for s in shapes.values()] == channels
    assert [s.stride for s in shapes.values()] == [2, 4, 8, 16, 32]
    for name, feature in features.items():
        stride = shapes[name].stride
        assert feature.shape == (2, shapes[name].channels, 64 // stride, 96 // stride)
    assert model.size_divisibility == 32


def test_resnet_builds_only_requested_stages():
    model = _resnet(out_features=["res3"])
    assert list(model(torch.randn(1, 3, 64, 64))) == ["res3"]
    assert not hasattr(model, "layer3")


def test_unknown_stage_is_a_config_error():
    with pytest.raises(ConfigError, match="MODEL.RESNETS.OUT_FEATURES"):
        _resnet(out_features=["res6"])


@pytest.mark.parametrize("in_channels", [1, 4])
def test_rgb_torchvision_weights_adapt_conv1(in_channels):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    model = _resnet(in_channels=in_channels)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == []
    assert set(result.unexpected_keys) == {"fc.weight", "fc.bias"}
    rgb = state["conv1.weight"]
    expected = rgb.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * (3 / in_channels)
    assert model.conv1.weight.shape == (64, in_channels, 7, 7)
    torch.testing.assert_close(model.conv1.weight.detach(), expected)
    layer2_conv = model.layer2[0].conv1.weight.detach()
    torch.testing.assert_close(layer2_conv, state["layer2.0.conv1.weight"])


def test_grayscale_model_matches_rgb_model_on_replicated_gray_image():
    """The adapted conv1 keeps activations: gray input == RGB model on (g, g, g)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    rgb, gray = _resnet().eval(), _resnet(in_channels=1).eval()
    rgb.load_state_dict(state, strict=False)
    gray.load_state_dict(state, strict=False)
    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(image)["res5"], rgb(image.repeat(1, 3, 1, 1))["res5"])


def test_adaptation_works_nested_and_before_shape_filtering_loaders():
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    fpn = FPN(bottom_up=_resnet(in_channels=1), in_features=ALL_STAGES[1:], out_channels=32)
    nested = {f"bottom_up.{k}": v for k, v in state.items()}
    fpn.load_state_dict(nested, strict=False)
    expected = state["conv1.weight"].mean(dim=1, keepdim=True) * 3
    torch.testing.assert_close(fpn.bottom_up.conv1.weight.detach(), expected)

    # fvcore's Checkpointer drops keys whose shape differs from the model's: adapt first.
    adapt_input_channels(fpn, nested)
    key = "bottom_up.conv1.weight"
    assert nested[key].shape == fpn.state_dict()[key].shape


def test_freeze_at_keeps_frozen_stages_unchanged_by_training():
    torch.manual_seed(0)
    model = _resnet(freeze_at=2).train()
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    assert isinstance(model.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(model.layer2[0].bn1, torch.nn.BatchNorm2d)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = sum(f.square().mean() for f in model(torch.randn(2, 3, 64, 64)).values())
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        frozen = key.startswith(("conv1.", "bn1.", "layer1."))
        assert torch.equal(value, after[key]) == frozen, key
    assert all(not p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())


def test_frozen_bn_statistics_never_change_in_train_mode():
    model = _resnet(norm="FrozenBN", freeze_at=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "bn" in k}
    model(torch.randn(2, 3, 64, 64) * 5 + 3)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.conv1.weight.requires_grad  # only the norm layers are fixed


def test_fpn_levels_strides_and_trunk_features_from_one_pass():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["stem"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [0.0], [1.0]
    fpn = build_backbone(cfg).eval()
    assert isinstance(fpn, FPN) and fpn.out_channels == 32 and fpn.size_divisibility == 32
    shapes = fpn.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    image = torch.randn(1, 1, 64, 128)
    with torch.no_grad():
        levels, trunk = fpn.forward_with_trunk(image)
        assert list(fpn(image)) == list(shapes)
        torch.testing.assert_close(trunk["stem"], fpn.bottom_up(image)["stem"])
    for name, level in levels.items():
        stride = shapes[name].stride
        assert level.shape == (1, 32, 64 // stride, 128 // stride)
    assert set(trunk) == set(ALL_STAGES)


def test_backbone_name_selects_the_bare_trunk():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    assert isinstance(build_backbone(cfg), ResNet)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_unet"
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.NAME"):
        build_backbone(cfg)


def test_torchvision_keys_map_into_a_whole_model():
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    model = torch.nn.Module()
    model.backbone = _resnet(in_channels=1)
    model.head = UNetHead(
        input_shape=model.backbone.output_shape(), in_features=ALL_STAGES,
        decoder_channels=[16] * 5, num_classes=2,
    )
    result = model.load_state_dict(map_torchvision_backbone_keys(state, model), strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith("head.") for k in result.missing_keys)
    expected = state["conv1.weight"].mean(dim=1, keepdim=True) * 3
    torch.testing.assert_close(model.backbone.conv1.weight.detach(), expected)
    running_var = model.backbone.layer4[1].bn2.running_var
    torch.testing.assert_close(running_var, state["layer4.1.bn2.running_var"])
