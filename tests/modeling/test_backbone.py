"""ResNet trunk and FPN: feature shapes, any input channels, pretrained-weight adaptation,
freezing."""

from functools import partial

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
    # Detectron2's defaults are the bare C4 trunk: name the FPN and its inputs.
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
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


DETECTRON2_RESNETS_KEYS = {
    "DEPTH", "OUT_FEATURES", "NUM_GROUPS", "NORM", "WIDTH_PER_GROUP", "STRIDE_IN_1X1",
    "RES5_DILATION", "RES2_OUT_CHANNELS", "STEM_OUT_CHANNELS", "DEFORM_ON_PER_STAGE",
    "DEFORM_MODULATED", "DEFORM_NUM_GROUPS",
}


def test_every_detectron2_resnets_key_exists_and_reaches_the_trunk():
    cfg = get_cfg()
    assert DETECTRON2_RESNETS_KEYS <= set(cfg.MODEL.RESNETS)
    assert cfg.MODEL.RESNETS.NUM_GROUPS == 1 and cfg.MODEL.RESNETS.WIDTH_PER_GROUP == 64
    assert cfg.MODEL.RESNETS.RES5_DILATION == 1 and cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 256
    kwargs = ResNet.from_config(cfg)
    assert {"num_groups", "stride_in_1x1", "res5_dilation", "deform_on_per_stage"} <= set(kwargs)


def _torchvision_trunk_outputs(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


@pytest.mark.parametrize(
    "reference, options, res5_stride",
    [
        (partial(torchvision.models.resnext50_32x4d), dict(num_groups=32, width_per_group=4), 32),
        (partial(torchvision.models.resnet50, replace_stride_with_dilation=[False, True, True]),
         dict(res4_dilation=2, res5_dilation=2), 8),
        (partial(torchvision.models.resnet50, replace_stride_with_dilation=[False, False, True]),
         dict(res5_dilation=2), 16),
    ],
    ids=["resnext50_32x4d", "output_stride_8", "output_stride_16"],
)
def test_resnext_and_dilated_trunks_are_torchvision_models(reference, options, res5_stride):
    torch.manual_seed(0)
    net = reference(weights=None).eval()
    trunk = ResNet(depth=50, in_channels=3, out_features=ALL_STAGES, norm="BN", **options).eval()
    result = trunk.load_state_dict(net.state_dict(), strict=False)
    assert result.missing_keys == [] and set(result.unexpected_keys) == {"fc.weight", "fc.bias"}
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = trunk(image)
        torch.testing.assert_close(features["res5"], _torchvision_trunk_outputs(net, image))
    assert trunk.output_shape()["res5"].stride == res5_stride
    assert features["res5"].shape[-1] == 64 // res5_stride


def test_channels_last_stem_leaves_the_features_as_torchvision_computes_them():
    """The stem runs channels-last for speed: every feature equals torchvision's NCHW
    computation of the same weights, and the stages run in the input's layout."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    trunk = ResNet(depth=18, in_channels=3, out_features=ALL_STAGES, norm="BN").eval()
    trunk.load_state_dict(net.state_dict(), strict=False)
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = trunk(image)
        stem = net.relu(net.bn1(net.conv1(image)))
        res2 = net.layer1(net.maxpool(stem))
        torch.testing.assert_close(features["stem"], stem)
        torch.testing.assert_close(features["res2"], res2)
        torch.testing.assert_close(features["res5"], _torchvision_trunk_outputs(net, image))
    assert all(features[name].is_contiguous() for name in ALL_STAGES[1:])
    # A caller that hands in a channels-last batch (R-CNN at CPU inference) keeps that layout
    # through every stage (values to float rounding: other conv kernels).
    with torch.no_grad():
        last = trunk(image.contiguous(memory_format=torch.channels_last))
    for name in ALL_STAGES[1:]:
        assert last[name].is_contiguous(memory_format=torch.channels_last), name
        torch.testing.assert_close(last[name], features[name], rtol=1e-4, atol=1e-4)


def test_stride_in_1x1_moves_the_stride_and_keeps_the_shapes():
    trunk = _resnet(depth=50, stride_in_1x1=True).eval()
    block = trunk.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 64, 64))["res3"].shape == (1, 512, 8, 8)


def test_widths_norms_and_what_basic_blocks_refuse():
    trunk = _resnet(depth=50, stem_out_channels=32, res2_out_channels=128, num_groups=2,
                    width_per_group=16, norm="GN")
    assert [s.channels for s in trunk.output_shape().values()] == [32, 128, 256, 512, 1024]
    assert trunk.layer1[0].conv2.out_channels == 32  # Detectron2: NUM_GROUPS × WIDTH_PER_GROUP
    assert isinstance(trunk.bn1, torch.nn.GroupNorm)
    assert trunk(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 1024, 2, 2)
    sync = _resnet(norm="SyncBN").train()
    assert isinstance(sync.bn1, torch.nn.SyncBatchNorm)
    sync(torch.randn(2, 3, 64, 64))["res5"].mean().backward()  # BatchNorm in one process
    for key, option in [("RES5_DILATION", dict(res5_dilation=2)),
                        ("NUM_GROUPS", dict(num_groups=32)),
                        ("DEFORM_ON_PER_STAGE", dict(deform_on_per_stage=[True] * 4))]:
        with pytest.raises(ConfigError, match=f"MODEL.RESNETS.{key}.*basic blocks"):
            _resnet(depth=18, **option)
    with pytest.raises(ConfigError, match="RES4_DILATION 2 needs RES5_DILATION 2"):
        _resnet(depth=50, res4_dilation=2)


def test_deformable_stages_start_as_the_plain_convs_and_learn_offsets():
    torch.manual_seed(0)
    plain = _resnet(depth=50).eval()
    deform = _resnet(depth=50, deform_on_per_stage=[False, False, True, True]).eval()
    result = deform.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all("conv_offset" in k for k in result.missing_keys)
    assert isinstance(deform.layer3[0].conv2, torchvision.ops.DeformConv2d)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # zero offsets sample the regular grid
        torch.testing.assert_close(deform(image)["res5"], plain(image)["res5"])
    modulated = _resnet(depth=50, deform_on_per_stage=[False, False, False, True],
                        deform_modulated=True, deform_num_groups=2).train()
    modulated(image)["res5"].square().mean().backward()
    assert modulated.layer4[0].conv2.conv_offset.weight.grad.abs().sum() > 0
