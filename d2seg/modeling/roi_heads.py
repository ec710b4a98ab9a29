"""Box + mask RoI heads: torchvision's ``RoIHeads`` with a pluggable mask head.

torchvision hard-wires its mask branch as RoIAlign → head → predictor; PointRend needs the raw
feature maps and the ground-truth bitmasks instead. :class:`MaskRoIHeads` keeps torchvision's
proposal sampling, box head, box loss and detection post-processing, and hands the positive
proposals (training) or the detections (inference) to any head with the interface described in
:mod:`d2seg.modeling.heads.mask_head`.
"""

from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss


class MaskRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` whose mask branch is ``mask_head`` (None = boxes only).

    Takes torchvision's ``RoIHeads`` keyword arguments except the three ``mask_*`` modules.
    Targets per image: ``{"boxes": G×4 XYXY pixels, "labels": G (1..K), "masks": G×H×W}``.
    Training returns losses ``loss_cls``, ``loss_box_reg`` and the mask head's; inference
    returns per image ``{"boxes", "scores", "labels"}`` plus ``"masks"`` (R×1×M×M
    probabilities in box coordinates) when there is a mask head.
    """

    def __init__(self, *, mask_head: Optional[nn.Module], **roi_heads_kwargs):
        super().__init__(**roi_heads_kwargs)
        self.mask_head = mask_head

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
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_cls, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}
            if self.mask_head is not None:
                positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
                losses.update(
                    self.mask_head.losses(
                        features,
                        [p[i] for p, i in zip(proposals, positive)],
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
