"""FCN head: torchvision's ``FCNHead`` (3×3 conv to in/4 channels + BN + ReLU + dropout 0.1 +
1×1 class conv) on one backbone feature, logits upsampled bilinearly to the input — with an
output-stride-8 ResNet-50 (``RES4_DILATION 2``, ``RES5_DILATION 2``) it is torchvision's
``fcn_resnet50`` without the auxiliary head."""

from typing import Optional

from torch import Tensor
from torchvision.models.segmentation.fcn import FCNHead as TorchvisionFCNHead

from d2seg.modeling.heads.sem_seg import SemSegHead, check_feature_count, upsample
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.registry import SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(SemSegHead):
    """One feature → logits at the input resolution (fully convolutional network head).

    Example::

        import torch
        from d2seg.modeling.backbone.resnet import ResNet
        from d2seg.modeling.heads.fcn import FCNHead

        trunk = ResNet(depth=18, in_channels=3, out_features=["res5"], norm="BN")
        head = FCNHead(input_shape=trunk.output_shape(), in_features=["res5"],
                       num_classes=4).eval()
        logits, _ = head(trunk.eval()(torch.zeros(1, 3, 64, 64)))   # 1×4×64×64
    """

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        in_features: list[str],
        num_classes: int,
        loss: Optional[SemSegLoss] = None,
    ):
        """Arguments as :class:`~d2seg.modeling.heads.sem_seg.SemSegHead`; ``in_features``
        names one feature (e.g. ``["res5"]``)."""
        super().__init__(input_shape=input_shape, in_features=in_features,
                         num_classes=num_classes, loss=loss)
        check_feature_count(in_features, 1, "FCNHead", '["res5"]')
        shape = input_shape[in_features[0]]
        # Named as in torchvision's FCN, so its "classifier.*" keys fit.
        self.classifier = TorchvisionFCNHead(shape.channels, num_classes)
        self._output_scale = shape.stride

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        return upsample(self.classifier(features[self.in_features[0]]), self._output_scale)
