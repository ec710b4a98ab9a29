"""VGG-11/13/16/19 with BatchNorm (torchvision ``vgg*_bn``) as a backbone.

Maps ``c0`` (stride 1, the first block before any pooling) .. ``c4`` (stride 16) are the
blocks' outputs before their max-pool, and ``c5`` (stride 32) is the last max-pool's output,
as segmentation_models_pytorch's VGG encoder taps them.
"""

from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.sequential import SequentialBackbone
from d2seg.modeling.registry import BACKBONE_REGISTRY

# torchvision's layer lists ("A" = VGG-11 .. "E" = VGG-19).
_DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}


def vgg_backbone(
    *, depth: int, in_channels: int, out_features: list[str], freeze_at: int = 0
) -> SequentialBackbone:
    """torchvision ``vgg<depth>_bn``'s ``features`` (same layers, same state-dict keys) as a
    backbone.

    Example::

        from d2seg.modeling.backbone.vgg import vgg_backbone

        backbone = vgg_backbone(depth=11, in_channels=3, out_features=["c1", "c5"])
        print(backbone.output_shape())   # c1: 128 channels stride 2, c5: 512 stride 32
    """
    if depth not in _DEPTHS:
        raise ConfigError(f"MODEL.VGG.DEPTH = {depth}; fix: use one of {sorted(_DEPTHS)}")
    # torchvision's own builder of vgg*_bn's ``features``, without the 120 M-parameter
    # classifier that vgg16_bn() would allocate and initialise only to be dropped; initialised as
    # torchvision's VGG initialises them. Pretrained weights come from MODEL.WEIGHTS.
    features = make_layers(cfgs[_DEPTHS[depth]], batch_norm=True)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return SequentialBackbone(
        features=features, in_channels=in_channels, out_features=out_features,
        freeze_at=freeze_at, config_key="MODEL.VGG",
    )


@BACKBONE_REGISTRY.register()
def build_vgg_backbone(cfg: CfgNode) -> SequentialBackbone:
    """``MODEL.BACKBONE.NAME: build_vgg_backbone`` (MODEL.VGG.*)."""
    return vgg_backbone(
        depth=cfg.MODEL.VGG.DEPTH,
        in_channels=len(cfg.MODEL.PIXEL_MEAN),
        out_features=list(cfg.MODEL.VGG.OUT_FEATURES),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
