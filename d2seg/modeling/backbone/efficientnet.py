"""EfficientNet-B0..B3 (torchvision) as a backbone.

Maps ``c1`` (stride 2) .. ``c5`` (stride 32: 320 channels for B0) after the last MBConv stage
of each stride. The final 1×1 conv to 1280+ channels feeds only the classifier and is left out,
as timm's and segmentation_models_pytorch's EfficientNet encoders do.
"""

import torchvision

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.sequential import SequentialBackbone
from d2seg.modeling.registry import BACKBONE_REGISTRY

_VARIANTS = {
    "b0": torchvision.models.efficientnet_b0,
    "b1": torchvision.models.efficientnet_b1,
    "b2": torchvision.models.efficientnet_b2,
    "b3": torchvision.models.efficientnet_b3,
}


def efficientnet_backbone(
    *, variant: str, in_channels: int, out_features: list[str], freeze_at: int = 0
) -> SequentialBackbone:
    """torchvision ``efficientnet_<variant>``'s ``features`` (without the head conv).

    Stochastic depth stays as torchvision sets it (training only).

    Example::

        from d2seg.modeling.backbone.efficientnet import efficientnet_backbone

        backbone = efficientnet_backbone(variant="b0", in_channels=3,
                                         out_features=["c2", "c3", "c4", "c5"])
        print(backbone.output_shape()["c5"])   # ShapeSpec(channels=320, stride=32)
    """
    if variant not in _VARIANTS:
        raise ConfigError(
            f"MODEL.EFFICIENTNET.VARIANT = {variant!r}; fix: use one of {sorted(_VARIANTS)}"
        )
    # weights=None: nothing is ever downloaded; pretrained weights come from MODEL.WEIGHTS.
    net = _VARIANTS[variant](weights=None)
    return SequentialBackbone(
        features=net.features[:-1], in_channels=in_channels, out_features=out_features,
        freeze_at=freeze_at, config_key="MODEL.EFFICIENTNET",
    )


@BACKBONE_REGISTRY.register()
def build_efficientnet_backbone(cfg: CfgNode) -> SequentialBackbone:
    """``MODEL.BACKBONE.NAME: build_efficientnet_backbone`` (MODEL.EFFICIENTNET.*)."""
    return efficientnet_backbone(
        variant=cfg.MODEL.EFFICIENTNET.VARIANT,
        in_channels=len(cfg.MODEL.PIXEL_MEAN),
        out_features=list(cfg.MODEL.EFFICIENTNET.OUT_FEATURES),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
