"""VGG-11/13/16/19 with BatchNorm (torchvision ``vgg*_bn``) as a backbone.

Maps ``c0`` (stride 1, the first block before any pooling) .. ``c4`` (stride 16) are the
blocks' outputs before their max-pool, and ``c5`` (stride 32) is the last max-pool's output,
as segmentation_models_pytorch's VGG encoder taps them.
"""

import torchvision

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.sequential import SequentialBackbone
from d2seg.modeling.registry import BACKBONE_REGISTRY

_DEPTHS = {
    11: torchvision.models.vgg11_bn,
    13: torchvision.models.vgg13_bn,
    16: torchvision.models.vgg16_bn,
    19: torchvision.models.vgg19_bn,
}


def vgg_backbone(
    *, depth: int, in_channels: int, out_features: list[str], freeze_at: int = 0
) -> SequentialBackbone:
    """torchvision ``vgg<depth>_bn``'s ``features`` as a backbone.

    Example::

        from d2seg.modeling.backbone.vgg import vgg_backbone

        backbone = vgg_backbone(depth=11, in_channels=3, out_features=["c1", "c5"])
        print(backbone.output_shape())   # c1: 128 channels stride 2, c5: 512 stride 32
    """
    if depth not in _DEPTHS:
        raise ConfigError(f"MODEL.VGG.DEPTH = {depth}; fix: use one of {sorted(_DEPTHS)}")
    # weights=None: nothing is ever downloaded; pretrained weights come from MODEL.WEIGHTS.
    net = _DEPTHS[depth](weights=None)
    return SequentialBackbone(
        features=net.features, in_channels=in_channels, out_features=out_features,
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
