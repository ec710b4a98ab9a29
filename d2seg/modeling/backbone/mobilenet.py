"""MobileNetV3 small/large (torchvision) as a backbone, any width multiplier.

Maps ``c1`` (stride 2) .. ``c5`` (stride 32; 16 with ``dilated``), each after the last layer of
its stride; ``c5`` includes the final 1×1 conv (576 channels for small, 960 for large at width
1.0), the "high" feature of torchvision's LR-ASPP and DeepLabV3 MobileNet models.
"""

import torchvision

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.sequential import SequentialBackbone
from d2seg.modeling.registry import BACKBONE_REGISTRY

_ARCHS = {
    "small": torchvision.models.mobilenet_v3_small,
    "large": torchvision.models.mobilenet_v3_large,
}


def mobilenet_v3_backbone(
    *,
    size: str,
    in_channels: int,
    out_features: list[str],
    width_mult: float = 1.0,
    dilated: bool = False,
    freeze_at: int = 0,
) -> SequentialBackbone:
    """torchvision ``mobilenet_v3_<size>(width_mult, dilated)``'s ``features`` as a backbone.

    Args:
        size: "small" or "large".
        in_channels: input image channels (1 for grayscale).
        out_features: maps to return, from ``c1`` .. ``c5``.
        width_mult: channel multiplier (torchvision rounds channels to multiples of 8).
        dilated: the last stage keeps stride 16 and dilates its convs (output stride 16).
        freeze_at: as :class:`SequentialBackbone`.

    Example::

        from d2seg.modeling.backbone.mobilenet import mobilenet_v3_backbone

        backbone = mobilenet_v3_backbone(size="small", in_channels=1, width_mult=0.5,
                                         out_features=["c1", "c2", "c3", "c4", "c5"])
        print(backbone.output_shape()["c5"])   # ShapeSpec(channels=288, stride=32)
    """
    if size not in _ARCHS:
        raise ConfigError(
            f"MODEL.MOBILENET_V3.SIZE = {size!r}; fix: use one of {sorted(_ARCHS)}"
        )
    if width_mult <= 0:
        raise ConfigError(
            f"MODEL.MOBILENET_V3.WIDTH_MULT = {width_mult}; fix: use a positive multiplier"
        )
    # weights=None: nothing is ever downloaded; pretrained weights come from MODEL.WEIGHTS.
    net = _ARCHS[size](weights=None, width_mult=width_mult, dilated=dilated)
    return SequentialBackbone(
        features=net.features, in_channels=in_channels, out_features=out_features,
        freeze_at=freeze_at, config_key="MODEL.MOBILENET_V3",
    )


@BACKBONE_REGISTRY.register()
def build_mobilenet_v3_backbone(cfg: CfgNode) -> SequentialBackbone:
    """``MODEL.BACKBONE.NAME: build_mobilenet_v3_backbone`` (MODEL.MOBILENET_V3.*)."""
    node = cfg.MODEL.MOBILENET_V3
    return mobilenet_v3_backbone(
        size=node.SIZE,
        in_channels=len(cfg.MODEL.PIXEL_MEAN),
        out_features=list(node.OUT_FEATURES),
        width_mult=node.WIDTH_MULT,
        dilated=node.DILATED,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
