"""Detectron2's ``PanopticFPN``: Mask R-CNN + ``SemSegFPNHead`` on the same FPN levels.

The semantic labels, losses, fusion and outputs are :class:`PanopticUNet`'s (class 0 =
things, 1 = background, 2.. = stuff; see :mod:`d2seg.modeling.meta_arch.panoptic`); only the
semantic head's input differs: the pyramid (p2..p5 by default, ``SEM_SEG_HEAD.IN_FEATURES``)
instead of the trunk, as in Detectron2's model-zoo COCO-PanopticSegmentation configs.
"""

from torch import Tensor

from d2seg.modeling.backbone.fpn import FPN
from d2seg.modeling.meta_arch.panoptic import PanopticUNet
from d2seg.modeling.registry import META_ARCH_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


@META_ARCH_REGISTRY.register()
class PanopticFPN(PanopticUNet):
    """Panoptic segmentation with the semantic head on the FPN (Kirillov et al., 2019).

    Example::

        import torch
        from d2seg import build_model, get_cfg

        cfg = get_cfg()
        cfg.merge_from_file("configs/tiny/mask_rcnn_R_18_tiny.yaml")
        cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "PanopticFPN",
                             "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3,
                             "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32])
        model = build_model(cfg).eval()
        with torch.no_grad():
            output = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])[0]
        segments, info = output["panoptic_seg"]   # 64×64 int32 segment ids
    """

    @classmethod
    def sem_seg_input_shape(cls, backbone: FPN) -> dict[str, ShapeSpec]:
        return backbone.output_shape()

    def sem_seg_features(
        self, pyramid: dict[str, Tensor], trunk: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        return pyramid
