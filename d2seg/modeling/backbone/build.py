"""``build_backbone(cfg)``: the backbone named by ``MODEL.BACKBONE.NAME``."""

from d2seg.config import CfgNode
from d2seg.modeling.backbone.backbone import Backbone
from d2seg.modeling.build import build_from_registry
from d2seg.modeling.registry import BACKBONE_REGISTRY


def build_backbone(cfg: CfgNode) -> Backbone:
    """Build ``MODEL.BACKBONE.NAME`` from BACKBONE_REGISTRY (e.g. build_resnet_fpn_backbone)."""
    return build_from_registry(BACKBONE_REGISTRY, "MODEL.BACKBONE.NAME", cfg)
