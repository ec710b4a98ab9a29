"""Mask heads of GeneralizedRCNN: the interface, and the standard Mask R-CNN head.

:class:`MaskHead` is what :class:`~d2seg.modeling.roi_heads.MaskRoIHeads` calls;
:class:`MaskRCNNConvUpsampleHead` (torchvision's RoIAlign + conv stack + deconv predictor) and
:class:`~d2seg.modeling.heads.point_rend.PointRendMaskHead` implement it. Labels are
torchvision's (1..NUM_CLASSES, 0 = background).
"""

from abc import ABCMeta, abstractmethod
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_inference, maskrcnn_loss
from torchvision.ops import MultiScaleRoIAlign

from d2seg.config import CfgNode
from d2seg.modeling.registry import ROI_MASK_HEAD_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


class MaskHead(nn.Module, metaclass=ABCMeta):
    """A mask head: training losses on positive proposals, mask probabilities for detections."""

    @abstractmethod
    def losses(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        gt_masks: list[Tensor],
        gt_labels: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """Mask losses by name (``loss_mask``, ...).

        Args:
            features: backbone feature maps by name, N×C×H/stride×W/stride.
            proposals: per image the positive proposals, R_n×4 XYXY pixels.
            image_shapes: per image (height, width) inside the padded batch.
            gt_masks: per image G_n×H×W uint8 ground-truth masks (image pixels).
            gt_labels: per image G_n torchvision labels.
            matched_idxs: per image R_n, the ground truth each proposal was matched to.
        """

    @abstractmethod
    def predict(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
        labels: list[Tensor],
    ) -> list[Tensor]:
        """Per image R_n×1×M×M foreground probabilities of each box's class ``labels``, in box
        coordinates (the box split into M×M cells)."""


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleHead(MaskHead):
    """RoIAlign (POOLER_RESOLUTION², 14) → NUM_CONV 3×3 convs → ×2 deconv → per-class logits.

    :meth:`predict` returns 2·POOLER_RESOLUTION-sided (28×28) probabilities per box.
    """

    def __init__(self, *, pooler: MultiScaleRoIAlign, convs: MaskRCNNHeads, predictor: nn.Module):
        super().__init__()
        self.pooler = pooler
        self.convs = convs
        self.predictor = predictor

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        head = cfg.MODEL.ROI_MASK_HEAD
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        in_channels = input_shape[in_features[0]].channels
        conv_dims = [head.CONV_DIM] * head.NUM_CONV
        return {
            "pooler": MultiScaleRoIAlign(
                in_features, head.POOLER_RESOLUTION, head.POOLER_SAMPLING_RATIO
            ),
            "convs": MaskRCNNHeads(in_channels, conv_dims, dilation=1),
            "predictor": MaskRCNNPredictor(
                conv_dims[-1] if conv_dims else in_channels,
                head.CONV_DIM,
                cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1,
            ),
        }

    def logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Per-class mask logits R×(NUM_CLASSES+1)×28×28 for boxes (per image R_n×4 XYXY)."""
        return self.predictor(self.convs(self.pooler(features, boxes, image_shapes)))

    def losses(self, features, proposals, image_shapes, gt_masks, gt_labels, matched_idxs):
        """``loss_mask``: BCE against each matched mask cropped to its proposal (28×28)."""
        logits = self.logits(features, proposals, image_shapes)
        return {"loss_mask": maskrcnn_loss(logits, proposals, gt_masks, gt_labels, matched_idxs)}

    def predict(self, features, boxes, image_shapes, labels):
        """M = 28."""
        return maskrcnn_inference(self.logits(features, boxes, image_shapes), labels)
