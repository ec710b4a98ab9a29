"""Feature Pyramid Network over the ResNet trunk (torchvision's FPN + LastLevelMaxPool).

Levels are named by their stride like Detectron2: ``p2`` (stride 4) .. ``p5`` (stride 32) from
``res2`` .. ``res5``, and ``p6`` (stride 64, a stride-2 subsample of ``p5``) for the RPN.
``MODEL.FPN.NORM`` normalises the lateral and output convs as Detectron2 does (they lose their
bias then).
"""

import math
from collections import OrderedDict
from functools import partial

from torch import Tensor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import Backbone, check_in_features
from d2seg.modeling.backbone.norm import NORMS, get_norm
from d2seg.modeling.backbone.resnet import ResNet
from d2seg.modeling.registry import BACKBONE_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


class FPN(Backbone):
    """``bottom_up`` trunk → FPN levels, each with ``out_channels`` channels.

    ``forward`` returns the pyramid only (what torchvision's detection models expect of a
    backbone, together with the ``out_channels`` attribute). :meth:`forward_with_trunk` returns
    the pyramid *and* the trunk's own features from one trunk pass, for models that also feed a
    dense head (PanopticUNet's U-Net) from the trunk.
    """

    def __init__(
        self, *, bottom_up: Backbone, in_features: list[str], out_channels: int, norm: str = ""
    ):
        """
        Args:
            bottom_up: the trunk; it must return every name in ``in_features``.
            in_features: trunk features the pyramid is built on, shallowest first, strides
                doubling from one to the next (e.g. res2..res5).
            out_channels: channels of every pyramid level.
            norm: normalisation after each lateral (1×1) and output (3×3) conv, one of
                ``norm.NORMS`` ("" = none, convs with bias; "SyncBN" is BatchNorm in one
                process).
        """
        super().__init__()
        trunk_shapes = bottom_up.output_shape()
        check_in_features("MODEL.FPN.IN_FEATURES", in_features, trunk_shapes)
        strides = [trunk_shapes[f].stride for f in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ConfigError(
                f"MODEL.FPN.IN_FEATURES = {list(in_features)} have strides {strides}; fix: list "
                f"consecutive stages shallowest first, e.g. res2, res3, res4, res5"
            )
        if norm not in NORMS:
            raise ConfigError(f"MODEL.FPN.NORM = {norm!r}; fix: use one of {list(NORMS)}")
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.out_channels = out_channels
        self.fpn = FeaturePyramidNetwork(
            [trunk_shapes[f].channels for f in in_features],
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=partial(get_norm, norm) if norm else None,
        )
        strides.append(2 * strides[-1])  # LastLevelMaxPool's extra level
        self._shapes = OrderedDict(
            (f"p{int(math.log2(s))}", ShapeSpec(channels=out_channels, stride=s)) for s in strides
        )

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        trunk_cfg = ResNet.from_config(cfg)
        # The trunk returns what the pyramid needs plus MODEL.RESNETS.OUT_FEATURES (e.g. "stem"
        # for a U-Net head that shares the trunk).
        wanted = set(cfg.MODEL.RESNETS.OUT_FEATURES) | set(cfg.MODEL.FPN.IN_FEATURES)
        trunk_cfg["out_features"] = sorted(wanted)
        return {
            "bottom_up": ResNet(**trunk_cfg),
            "in_features": list(cfg.MODEL.FPN.IN_FEATURES),
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
        }

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """``x``: N×C×H×W normalised images → ``{"p2": N×out_channels×H/4×W/4, .. "p6"}``."""
        return self.forward_with_trunk(x)[0]

    def forward_with_trunk(
        self, x: Tensor
    ) -> tuple["OrderedDict[str, Tensor]", dict[str, Tensor]]:
        """One trunk pass → (pyramid levels as :meth:`forward`, all trunk features by name)."""
        trunk = self.bottom_up(x)
        levels = self.fpn(OrderedDict((f, trunk[f]) for f in self.in_features))
        return OrderedDict(zip(self._shapes, levels.values())), trunk

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    @property
    def size_divisibility(self) -> int:
        return self.bottom_up.size_divisibility


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg: CfgNode) -> FPN:
    """``MODEL.BACKBONE.NAME: build_resnet_fpn_backbone``: ResNet trunk + FPN (MODEL.FPN.*)."""
    return FPN(**FPN.from_config(cfg))
