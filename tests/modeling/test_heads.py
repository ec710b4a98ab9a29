"""Semantic heads: torchvision's FCN and LR-ASPP models as oracles, the DeepLab heads' shapes
and errors, the U-Net decoder against its plain NCHW definition, every loss through every
head, and a non-U-Net head under PanopticUNet."""

from pathlib import Path

import pytest
import torch
import torchvision

from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.modeling import build_model
from d2seg.modeling.backbone.resnet import ResNet
from d2seg.modeling.heads import DeepLabV3PlusHead, UNetHead
from d2seg.modeling.heads.deeplab import build_aspp

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_HEADS = ["deeplabv3_MNV3_tiny", "deeplabv3plus_MNV3_tiny", "fcn_MNV3_tiny",
              "lraspp_MNV3_tiny", "unet_MNV3_small_gray_tiny"]


def _cfg(path: Path, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    return cfg


def _torchvision_pair(config: str, reference):
    torch.manual_seed(0)
    model = build_model(_cfg(CONFIGS / "Semantic" / f"{config}.yaml",
                             "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5)).eval()
    tv = reference(weights=None, weights_backbone=None, num_classes=5).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in tv.parameters())
    result = model.load_state_dict(model.map_external_state_dict(tv.state_dict()))
    assert not result.missing_keys and not result.unexpected_keys
    return model, tv


def test_fcn_is_torchvisions_fcn_resnet50():
    """A torchvision fcn_resnet50 state dict loads key for key and gives the same logits."""
    model, tv = _torchvision_pair("fcn_R_50", torchvision.models.segmentation.fcn_resnet50)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    normalised = (image.float() - model.preprocessor.pixel_mean) / model.preprocessor.pixel_std
    with torch.no_grad():
        ours = model([{"image": image}])[0]["sem_seg"]
        theirs = tv(normalised[None])["out"][0]
    # d2seg's inference folds each BatchNorm into its conv: float32 rounding differs (~1e-6).
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_lraspp_is_torchvisions_lraspp_mobilenet_v3_large_on_the_same_taps():
    """Same parameters key for key; torchvision taps "low" after the first stride-8 block where
    d2seg's c3 is the last one, so the head is compared on torchvision's own taps."""
    model, tv = _torchvision_pair(
        "lraspp_MNV3_large", torchvision.models.segmentation.lraspp_mobilenet_v3_large)
    normalised = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        taps = tv.backbone(normalised)
        torch.testing.assert_close(model.backbone(normalised)["c5"], taps["high"])
        ours = model.sem_seg_head.layers({"c3": taps["low"], "c5": taps["high"]})
        torch.testing.assert_close(ours, tv(normalised)["out"])


def test_deeplabv3plus_joins_the_stride_4_projection_at_output_stride_16():
    trunk = ResNet(depth=50, in_channels=3, out_features=["res2", "res5"], norm="BN",
                   res5_dilation=2)
    head = DeepLabV3PlusHead(input_shape=trunk.output_shape(), in_features=["res5"],
                             project_features=["res2"], project_channels=[48], num_classes=4,
                             aspp_dilations=[6, 12, 18]).eval()
    assert head.projections[0][0].out_channels == 48
    fuse_convs = [m for m in head.fusions[0] if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.kernel_size) for c in fuse_convs] == [(256 + 48, (3, 3)),
                                                                     (256, (3, 3))]
    with torch.no_grad():
        features = trunk.eval()(torch.randn(1, 3, 64, 96))
        assert features["res5"].shape[-2:] == (4, 6)
        assert head.layers(features).shape == (1, 4, 64, 96)
    with pytest.raises(ConfigError, match="PROJECT_FEATURES.*strides"):
        DeepLabV3PlusHead(input_shape=trunk.output_shape(), in_features=["res2"],
                          project_features=["res5"], project_channels=[48], num_classes=4)
    with pytest.raises(ConfigError, match="PROJECT_CHANNELS"):
        DeepLabV3PlusHead(input_shape=trunk.output_shape(), in_features=["res5"],
                          project_features=["res2"], project_channels=[48, 8], num_classes=4)


def test_separable_aspp_keeps_torchvisions_branches():
    plain, separable = build_aspp(64, [2, 4, 6], 32), build_aspp(64, [2, 4, 6], 32, separable=True)
    depthwise = separable.convs[1][0][0]
    assert depthwise.groups == 64 and depthwise.dilation == (2, 2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separable) < count(plain)
    with torch.no_grad():
        assert separable.eval()(torch.randn(1, 64, 5, 7)).shape == (1, 32, 5, 7)
    with pytest.raises(ConfigError, match="ASPP_DILATIONS"):
        build_aspp(64, [2, 4], 32)


@pytest.mark.parametrize(
    "name, in_features, match",
    [("DeepLabV3Head", ["c3", "c5"], "exactly 1"), ("FCNHead", ["c3", "c5"], "exactly 1"),
     ("LRASPPHead", ["c5"], "exactly 2"), ("UNetHead", ["c1", "c9"], "c9")],
)
def test_feature_mistakes_name_the_key(name, in_features, match):
    cfg = _cfg(CONFIGS / "tiny" / "lraspp_MNV3_tiny.yaml", "MODEL.SEM_SEG_HEAD.NAME", name,
               "MODEL.SEM_SEG_HEAD.IN_FEATURES", str(in_features),
               "MODEL.MOBILENET_V3.OUT_FEATURES", '["c1", "c3", "c5"]')
    with pytest.raises(ConfigError, match=f"MODEL.SEM_SEG_HEAD.IN_FEATURES.*{match}"):
        build_model(cfg)


def test_old_unet_head_name_still_builds():
    cfg = _cfg(CONFIGS / "tiny" / "unet_R_18_tiny.yaml", "MODEL.SEM_SEG_HEAD.NAME",
               "ResNetUNetHead")
    assert isinstance(build_model(cfg).sem_seg_head, UNetHead)


@pytest.mark.parametrize("config", TINY_HEADS)
@pytest.mark.parametrize("loss, class_weights", [("ce", "[]"), ("dice", "[1.0, 2.0, 1.0]"),
                                                 ("ce+dice", "[1.0, 2.0, 1.0]")])
def test_every_loss_trains_every_head_and_ignores_255(config, loss, class_weights):
    cfg = _cfg(CONFIGS / "tiny" / f"{config}.yaml", "MODEL.SEM_SEG_HEAD.LOSS", loss)
    binary = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1
    if not binary:
        cfg.merge_from_list(["MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS", class_weights])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    channels = len(cfg.MODEL.PIXEL_MEAN)
    labels = torch.randint(0, 2 if binary else 3, (64, 64))
    image = torch.randint(0, 256, (channels, 64, 64), dtype=torch.uint8)
    loss_value = model([{"image": image, "sem_seg": labels}])["loss_sem_seg"]
    loss_value.backward()
    assert torch.isfinite(loss_value) and loss_value > 0
    grads = [p.grad for p in model.sem_seg_head.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    ignored = torch.full_like(labels, 255)
    model.zero_grad()
    assert model([{"image": image, "sem_seg": ignored}])["loss_sem_seg"].item() == pytest.approx(
        0.0, abs=1e-6)


def test_binary_bce_head_under_a_deeplab_config():
    cfg = _cfg(CONFIGS / "tiny" / "deeplabv3plus_MNV3_tiny.yaml",
               "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1, "MODEL.SEM_SEG_HEAD.LOSS", "bce")
    model = build_model(cfg).train()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    loss = model([{"image": image, "sem_seg": torch.randint(0, 2, (64, 64))}])["loss_sem_seg"]
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        assert model([{"image": image}])[0]["sem_seg"].shape == (1, 64, 64)


def test_panoptic_unet_runs_a_deeplabv3plus_stuff_head():
    cfg = _cfg(CONFIGS / "tiny" / "panoptic_unet_R_18_tiny.yaml",
               "MODEL.SEM_SEG_HEAD.NAME", "DeepLabV3PlusHead",
               "MODEL.SEM_SEG_HEAD.IN_FEATURES", '["res5"]',
               "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", '["res2"]',
               "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 32, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 16,
               "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", "[1, 2, 3]")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 16:48] = 1
    item = {"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
            "instances": {"boxes": torch.tensor([[16.0, 8.0, 48.0, 40.0]]),
                          "classes": torch.tensor([0]), "masks": masks},
            "sem_seg": masks[0].long() * 0 + (1 - masks[0].long())}
    losses = model([item])
    assert "loss_sem_seg" in losses and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        output = model([{"image": item["image"]}])[0]
    assert output["sem_seg"].shape == (2, 64, 64) and "panoptic_seg" in output


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_unet_decoder_layout_leaves_the_logits_as_defined(upsample):
    """The channels-last decoder computes upsample → concat skip → block, stage by stage, as
    the plain NCHW float64 computation of the same modules does; logits come back NCHW."""
    torch.manual_seed(0)
    trunk = ResNet(depth=18, in_channels=3, out_features=["stem", "res2", "res3", "res4", "res5"],
                   norm="BN").eval()
    head = UNetHead(input_shape=trunk.output_shape(), in_features=list(trunk.output_shape()),
                    decoder_channels=[32, 16, 16, 8, 8], num_classes=3, upsample=upsample).eval()
    with torch.no_grad():
        features = trunk(torch.randn(2, 3, 64, 96))
        logits = head.layers(features)
        double = {name: f.double() for name, f in features.items()}
        head.double()
        x = double["res5"]
        for block, skip in zip(head.blocks, ["res4", "res3", "res2", "stem", None]):
            x = torch.nn.functional.interpolate(
                x, scale_factor=2, mode=upsample,
                **({"align_corners": False} if upsample == "bilinear" else {}))
            x = block(x if skip is None else torch.cat([x, double[skip]], dim=1))
        expected = head.predictor(x)
    assert logits.shape == (2, 3, 64, 96) and logits.is_contiguous()
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-4)
