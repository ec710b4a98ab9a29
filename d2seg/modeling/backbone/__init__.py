"""Backbones; importing this package registers them in BACKBONE_REGISTRY."""

from d2seg.modeling.backbone.backbone import Backbone  # noqa: F401
from d2seg.modeling.backbone.build import build_backbone  # noqa: F401
from d2seg.modeling.backbone.efficientnet import build_efficientnet_backbone  # noqa: F401
from d2seg.modeling.backbone.fpn import FPN, build_resnet_fpn_backbone  # noqa: F401
from d2seg.modeling.backbone.mobilenet import build_mobilenet_v3_backbone  # noqa: F401
from d2seg.modeling.backbone.resnet import ResNet, build_resnet_backbone  # noqa: F401
from d2seg.modeling.backbone.sequential import SequentialBackbone  # noqa: F401
from d2seg.modeling.backbone.vgg import build_vgg_backbone  # noqa: F401
