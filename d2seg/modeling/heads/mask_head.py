"""Mask heads of GeneralizedRCNN: the interface, and the standard Mask R-CNN head.

:class:`MaskHead` is what :class:`~d2seg.modeling.roi_heads.MaskRoIHeads` calls;
:class:`MaskRCNNConvUpsampleHead` (RoIAlign + conv stack + deconv predictor) and
:class:`~d2seg.modeling.heads.point_rend.PointRendMaskHead` implement it. Labels are
torchvision's (1..NUM_CLASSES, 0 = background).
"""

from abc import ABCMeta, abstractmethod
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_inference, maskrcnn_loss
from torchvision.ops import roi_align

from d2seg.config import CfgNode
from d2seg.modeling.box_head import head_norm
from d2seg.modeling.poolers import ROIPooler
from d2seg.modeling.registry import ROI_MASK_HEAD_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec
from d2seg.modeling.weight_init import c2_msra_fill


def mask_targets(
    gt_masks: list[Tensor], boxes: list[Tensor], matched_idxs: list[Tensor], side: int
) -> Tensor:
    """Detectron2's mask targets (``BitMasks.crop_and_resize``): each box's matched ground-truth
    mask resampled into the box by aligned RoIAlign (side×side bins, adaptive sampling) and
    thresholded at 0.5.

    Args:
        gt_masks: per image G_n×H×W masks (image pixels).
        boxes: per image R_n×4 XYXY boxes (image pixels).
        matched_idxs: per image R_n indices into that image's ground truth.
    Returns:
        R×side×side float 0/1, R = all boxes, image by image.
    """
    crops = [
        roi_align(
            masks[:, None].float(),
            torch.cat([idxs[:, None].to(image_boxes), image_boxes], dim=1),
            (side, side), spatial_scale=1.0, sampling_ratio=0, aligned=True,
        )[:, 0]
        for masks, image_boxes, idxs in zip(gt_masks, boxes, matched_idxs)
    ]
    return (torch.cat(crops) >= 0.5).float()


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
    """RoIAlign (POOLER_RESOLUTION², 14) → NUM_CONV 3×3 convs (NORM) → ×2 deconv → logits per
    class (one for all with ``CLS_AGNOSTIC_MASK``).

    :meth:`predict` returns 2·POOLER_RESOLUTION-sided (28×28) probabilities per box. With an
    aligned pooler (``POOLER_TYPE: ROIAlignV2``) the targets are Detectron2's
    (:func:`mask_targets`); with ``ROIAlign`` torchvision's soft, unaligned ones. Under
    :class:`~d2seg.modeling.roi_heads.Res5ROIHeads` there is no pooler: the head reads res5
    features (:meth:`losses_from_features`, :meth:`predict_from_features`).
    """

    def __init__(
        self,
        *,
        pooler: Optional[ROIPooler],
        convs: MaskRCNNHeads,
        predictor: nn.Module,
        class_agnostic: bool = False,
        aligned_targets: bool = True,
    ):
        super().__init__()
        self.pooler = pooler
        self.convs = convs
        self.predictor = predictor
        self.class_agnostic = class_agnostic
        self.aligned_targets = aligned_targets

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        head = cfg.MODEL.ROI_MASK_HEAD
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        in_channels = input_shape[in_features[0]].channels
        pooler = ROIPooler.from_pooler_type(
            "MODEL.ROI_MASK_HEAD.POOLER_TYPE", head.POOLER_TYPE, in_features,
            head.POOLER_RESOLUTION, head.POOLER_SAMPLING_RATIO,
        )
        return {
            "pooler": pooler,
            **cls.layers_from_config(cfg, in_channels),
            "aligned_targets": pooler.aligned,
        }

    @classmethod
    def layers_from_config(cls, cfg: CfgNode, in_channels: int) -> dict[str, Any]:
        """The conv stack and predictor over ``in_channels``-channel RoI features."""
        head = cfg.MODEL.ROI_MASK_HEAD
        conv_dims = [head.CONV_DIM] * head.NUM_CONV
        convs = MaskRCNNHeads(in_channels, conv_dims, dilation=1, norm_layer=head_norm(head.NORM))
        for module in convs.modules():
            if isinstance(module, nn.Conv2d):
                c2_msra_fill(module)
        num_masks = 1 if head.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
        return {
            "convs": convs,
            "predictor": MaskRCNNPredictor(
                conv_dims[-1] if conv_dims else in_channels, head.CONV_DIM, num_masks
            ),
            "class_agnostic": head.CLS_AGNOSTIC_MASK,
        }

    def mask_logits(self, roi_features: Tensor) -> Tensor:
        """R×C×S×S RoI features → R×(NUM_CLASSES+1, or 1)×2S×2S mask logits (channels-last
        memory layout)."""
        # oneDNN runs NCHW convs by reordering each input and output to its blocked layout;
        # channels-last skips that: the CPU mask head takes ~35% less time, same values to
        # float rounding (bench/RESULTS.md, "Mask R-CNN RoI heads").
        roi_features = roi_features.contiguous(memory_format=torch.channels_last)
        return self.predictor(self.convs(roi_features))

    def logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Per-class mask logits R×(NUM_CLASSES+1)×28×28 for boxes (per image R_n×4 XYXY)."""
        return self.mask_logits(self.pooler(features, boxes, image_shapes))

    def _labels(self, labels: list[Tensor]) -> list[Tensor]:
        return [torch.zeros_like(l) for l in labels] if self.class_agnostic else labels

    def losses(self, features, proposals, image_shapes, gt_masks, gt_labels, matched_idxs):
        """``loss_mask``: BCE against each matched mask cropped to its proposal (28×28)."""
        roi_features = self.pooler(features, proposals, image_shapes)
        return self.losses_from_features(roi_features, proposals, gt_masks, gt_labels, matched_idxs)

    def losses_from_features(
        self, roi_features: Tensor, proposals: list[Tensor], gt_masks: list[Tensor],
        gt_labels: list[Tensor], matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """``loss_mask`` from the RoI features (R×C×S×S) of the positive ``proposals``."""
        logits = self.mask_logits(roi_features)
        gt_labels = self._labels(gt_labels)
        if not self.aligned_targets:
            return {"loss_mask": maskrcnn_loss(logits, proposals, gt_masks, gt_labels,
                                               matched_idxs)}
        if logits.numel() == 0:
            return {"loss_mask": logits.sum() * 0}
        labels = torch.cat([l[i] for l, i in zip(gt_labels, matched_idxs)])
        targets = mask_targets(gt_masks, proposals, matched_idxs, logits.shape[-1])
        selected = logits[torch.arange(len(labels), device=labels.device), labels]
        return {"loss_mask": F.binary_cross_entropy_with_logits(selected, targets.to(selected))}

    def predict(self, features, boxes, image_shapes, labels):
        """M = 28."""
        return self.predict_from_features(self.pooler(features, boxes, image_shapes), labels)

    def predict_from_features(self, roi_features: Tensor, labels: list[Tensor]) -> list[Tensor]:
        """Per image R_n×1×M×M probabilities from the RoI features of all images' boxes."""
        return maskrcnn_inference(self.mask_logits(roi_features), self._labels(labels))


