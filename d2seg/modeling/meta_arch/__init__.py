"""Meta-architectures; importing this package registers them in META_ARCH_REGISTRY."""

from d2seg.modeling.meta_arch.panoptic import PanopticUNet  # noqa: F401
from d2seg.modeling.meta_arch.panoptic_fpn import PanopticFPN  # noqa: F401
from d2seg.modeling.meta_arch.rcnn import GeneralizedRCNN  # noqa: F401
from d2seg.modeling.meta_arch.semantic import SemanticSegmentor  # noqa: F401
