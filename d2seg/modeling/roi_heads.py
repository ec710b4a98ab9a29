"""Box + mask RoI heads: torchvision's ``RoIHeads`` with Detectron2's box losses and a pluggable
mask head.

torchvision hard-wires its mask branch as RoIAlign → head → predictor; PointRend needs the raw
feature maps and the ground-truth bitmasks instead. :class:`MaskRoIHeads` keeps torchvision's
proposal sampling, box head and detection post-processing, scores boxes as Detectron2's
``FastRCNNOutputLayers`` (``SMOOTH_L1_BETA``, GIoU, ``BBOX_REG_LOSS_WEIGHT``), and hands the
positive proposals (training; their refined boxes with ``TRAIN_ON_PRED_BOXES``) or the
detections (inference) to any head with the interface described in
:mod:`d2seg.modeling.heads.mask_head`. :class:`Res5ROIHeads` is Detectron2's C4 variant: the
trunk's res5 stage runs on 14×14 RoI features of res4 and feeds both predictors.
"""

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from d2seg.modeling.box_head import box_regression_loss


class MaskRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` whose mask branch is ``mask_head`` (None = boxes only).

    Takes torchvision's ``RoIHeads`` keyword arguments except the three ``mask_*`` modules,
    plus Detectron2's box-loss settings. Targets per image: ``{"boxes": G×4 XYXY pixels,
    "labels": G (1..K), "masks": G×H×W}``. Training returns losses ``loss_cls``,
    ``loss_box_reg`` and the mask head's; inference returns per image ``{"boxes", "scores",
    "labels"}`` plus ``"masks"`` (R×1×M×M probabilities in box coordinates) when there is a
    mask head.
    """

    def __init__(
        self,
        *,
        mask_head: Optional[nn.Module],
        box_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
        box_loss_weight: float = 1.0,
        train_on_pred_boxes: bool = False,
        **roi_heads_kwargs,
    ):
        """
        Args:
            mask_head: a :class:`~d2seg.modeling.heads.mask_head.MaskHead`, or None.
            box_loss_type: "smooth_l1" or "giou" (``ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE``).
            smooth_l1_beta: the smooth L1 transition point; 0 = L1 (Detectron2's default).
            box_loss_weight: factor of ``loss_box_reg``.
            train_on_pred_boxes: the mask head trains on the box head's refined boxes of the
                positive proposals (detached) instead of the proposals.
        """
        super().__init__(**roi_heads_kwargs)
        self.mask_head = mask_head
        self.box_loss_type = box_loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.box_loss_weight = box_loss_weight
        self.train_on_pred_boxes = train_on_pred_boxes

    def box_features(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """R×D features per box for the box predictor."""
        return self.box_head(self.box_roi_pool(features, boxes, image_shapes))

    def box_losses(
        self, class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> dict[str, Tensor]:
        """Detectron2's ``loss_cls`` (mean cross-entropy) and ``loss_box_reg`` (summed over the
        foreground, divided by the number of sampled proposals)."""
        labels_all = torch.cat(labels)
        targets = torch.cat(regression_targets)
        foreground = torch.where(labels_all > 0)[0]
        deltas = box_regression.reshape(len(labels_all), -1, 4)[foreground, labels_all[foreground]]
        box_loss = box_regression_loss(
            deltas, targets[foreground], self.box_coder, self.box_loss_type, self.smooth_l1_beta
        )
        return {
            "loss_cls": F.cross_entropy(class_logits, labels_all),
            "loss_box_reg": box_loss / max(labels_all.numel(), 1) * self.box_loss_weight,
        }

    def refined_boxes(
        self, box_regression: Tensor, proposals: list[Tensor], labels: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[Tensor]:
        """Per image the proposals moved by their predicted deltas for their own label."""
        decoded = self.box_coder.decode(box_regression.detach(), proposals)
        labels_all = torch.cat(labels)
        boxes = decoded[torch.arange(len(labels_all), device=labels_all.device), labels_all]
        per_image = boxes.split([len(p) for p in proposals])
        return [box_ops.clip_boxes_to_image(b, s) for b, s in zip(per_image, image_shapes)]

    def mask_training_boxes(
        self, proposals: list[Tensor], box_regression: Tensor, labels: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[Tensor]:
        if self.train_on_pred_boxes:
            return self.refined_boxes(box_regression, proposals, labels, image_shapes)
        return proposals

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        class_logits, box_regression = self.box_predictor(
            self.box_features(features, proposals, image_shapes)
        )

        if self.training:
            losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
            if self.mask_head is not None:
                boxes = self.mask_training_boxes(proposals, box_regression, labels, image_shapes)
                positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
                losses.update(
                    self.mask_head.losses(
                        features,
                        [b[i] for b, i in zip(boxes, positive)],
                        image_shapes,
                        [t["masks"] for t in targets],
                        [t["labels"] for t in targets],
                        [m[i] for m, i in zip(matched_idxs, positive)],
                    )
                )
            return [], losses

        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        results = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        if self.mask_head is not None:
            masks = self.mask_head.predict(features, boxes, image_shapes, labels)
            for result, image_masks in zip(results, masks):
                result["masks"] = image_masks
        return results, {}


class Res5ROIHeads(MaskRoIHeads):
    """Detectron2's C4 RoI heads: RoIAlign on res4 (14×14) → ``res5`` → mean → box predictor.

    ``box_head`` is the res5 stage (torchvision's ``layer4``, stride 2: 14×14 → 7×7) followed by
    a spatial mean. The mask head (``MaskRCNNConvUpsampleHead`` with ``NUM_CONV`` 0) reads the
    res5 output of the same boxes: in training that of the positive proposals, computed once for
    both heads; at inference that of the detections.
    """

    def __init__(self, *, res5: nn.Module, **kwargs):
        super().__init__(box_head=nn.Identity(), **kwargs)
        self.res5 = res5

    def res5_features(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """R×C5×7×7 res5 features of the boxes (per image R_n×4 XYXY pixels)."""
        return self.res5(self.box_roi_pool(features, boxes, image_shapes))

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        res5 = self.res5_features(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(res5.mean(dim=(2, 3)))
        if self.training:
            losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
            if self.mask_head is not None:
                labels_all = torch.cat(labels)
                positive = torch.where(labels_all > 0)[0]
                per_image = [torch.where(image_labels > 0)[0] for image_labels in labels]
                losses.update(
                    self.mask_head.losses_from_features(
                        res5[positive],
                        [p[i] for p, i in zip(proposals, per_image)],
                        [t["masks"] for t in targets],
                        [t["labels"] for t in targets],
                        [m[i] for m, i in zip(matched_idxs, per_image)],
                    )
                )
            return [], losses
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        results = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        if self.mask_head is not None:
            masks = self.mask_head.predict_from_features(
                self.res5_features(features, boxes, image_shapes), labels
            )
            for result, image_masks in zip(results, masks):
                result["masks"] = image_masks
        return results, {}
