"""Lite R-ASPP head (Searching for MobileNetV3): torchvision's ``LRASPPHead`` on a low-level
(stride 8) and a high-level (stride 16 or 32) feature, logits upsampled bilinearly to the input.
With a dilated MobileNetV3-Large (``c3``, ``c5``) it has the parameters of torchvision's
``lraspp_mobilenet_v3_large`` key for key; torchvision taps its low feature after the first
stride-8 block, d2seg's ``c3`` after the last one (two more 40-channel blocks)."""

from typing import Optional

from torch import Tensor
from torchvision.models.segmentation.lraspp import LRASPPHead as TorchvisionLRASPPHead

from d2seg.config import CfgNode
from d2seg.modeling.heads.sem_seg import SemSegHead, check_feature_count, upsample
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.registry import SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


@SEM_SEG_HEADS_REGISTRY.register()
class LRASPPHead(SemSegHead):
    """(low, high) features → logits at the input resolution.

    The high feature goes through a 1×1 conv + BN + ReLU gated by a global-pooling sigmoid
    branch, is upsampled to the low feature's size, and both are classified by 1×1 convs and
    summed.

    Example::

        import torch
        from d2seg.modeling.backbone.mobilenet import mobilenet_v3_backbone
        from d2seg.modeling.heads.lraspp import LRASPPHead

        backbone = mobilenet_v3_backbone(size="large", in_channels=3, dilated=True,
                                         out_features=["c3", "c5"])
        head = LRASPPHead(input_shape=backbone.output_shape(), in_features=["c3", "c5"],
                          num_classes=4).eval()
        logits, _ = head(backbone.eval()(torch.zeros(1, 3, 64, 64)))   # 1×4×64×64
    """

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        in_features: list[str],
        num_classes: int,
        inter_channels: int = 128,
        loss: Optional[SemSegLoss] = None,
    ):
        """
        Args:
            in_features: ``[low, high]``, e.g. ``["c3", "c5"]``.
            inter_channels: channels of the high branch (torchvision's 128).
            Others as :class:`~d2seg.modeling.heads.sem_seg.SemSegHead`.
        """
        super().__init__(input_shape=input_shape, in_features=in_features,
                         num_classes=num_classes, loss=loss)
        check_feature_count(in_features, 2, "LRASPPHead", '["c3", "c5"] (low, high)')
        low, high = (input_shape[f] for f in in_features)
        # Named as in torchvision's LRASPP, so its "classifier.*" keys fit.
        self.classifier = TorchvisionLRASPPHead(low.channels, high.channels, num_classes,
                                                inter_channels)
        self._output_scale = low.stride

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return {**super().from_config(cfg, input_shape),
                "inter_channels": cfg.MODEL.SEM_SEG_HEAD.LRASPP_CHANNELS}

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        low, high = (features[f] for f in self.in_features)
        return upsample(self.classifier({"low": low, "high": high}), self._output_scale)
