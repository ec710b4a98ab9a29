"""Heads; importing this package registers them in their registries."""

from d2seg.modeling.heads.deeplab import DeepLabV3Head, DeepLabV3PlusHead  # noqa: F401
from d2seg.modeling.heads.fcn import FCNHead  # noqa: F401
from d2seg.modeling.heads.implicit_point_rend import (  # noqa: F401
    ImplicitPointHead,
    ImplicitPointRendMaskHead,
)
from d2seg.modeling.heads.lraspp import LRASPPHead  # noqa: F401
from d2seg.modeling.heads.mask_head import MaskRCNNConvUpsampleHead  # noqa: F401
from d2seg.modeling.heads.point_rend import PointRendMaskHead, StandardPointHead  # noqa: F401
from d2seg.modeling.heads.point_rend_semantic import PointRendSemSegHead  # noqa: F401
from d2seg.modeling.heads.sem_seg import SemSegHead  # noqa: F401
from d2seg.modeling.heads.semantic_fpn import SemSegFPNHead  # noqa: F401
from d2seg.modeling.heads.unet import ResNetUNetHead, UNetHead  # noqa: F401
