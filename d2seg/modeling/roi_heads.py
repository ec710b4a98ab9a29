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
:class:`CascadeROIHeads` is Cascade R-CNN: several box stages, each refining the boxes of the
one before at a higher IoU.
"""

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection._utils import BoxCoder, Matcher
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
        regression_targets: list[Tensor], box_coder: Optional[BoxCoder] = None,
    ) -> dict[str, Tensor]:
        """Detectron2's ``loss_cls`` (mean cross-entropy) and ``loss_box_reg`` (summed over the
        foreground, divided by the number of sampled proposals); ``box_coder`` (default: the
        heads' own) encoded ``regression_targets``."""
        labels_all = torch.cat(labels)
        targets = torch.cat(regression_targets)
        foreground = torch.where(labels_all > 0)[0]
        deltas = box_regression.reshape(len(labels_all), -1, 4)[foreground, labels_all[foreground]]
        box_loss = box_regression_loss(
            deltas, targets[foreground], box_coder or self.box_coder, self.box_loss_type,
            self.smooth_l1_beta,
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
                losses.update(self.mask_losses(
                    features, proposals, box_regression, labels, matched_idxs, image_shapes,
                    targets,
                ))
            return [], losses

        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        return self.results_with_masks(features, boxes, scores, labels, image_shapes), {}

    def mask_losses(
        self, features: dict[str, Tensor], proposals: list[Tensor], box_regression: Tensor,
        labels: list[Tensor], matched_idxs: list[Tensor], image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """The mask head's losses on the positive sampled proposals (or, with
        ``train_on_pred_boxes``, their boxes refined by ``box_regression``)."""
        boxes = self.mask_training_boxes(proposals, box_regression, labels, image_shapes)
        positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
        return self.mask_head.losses(
            features,
            [b[i] for b, i in zip(boxes, positive)],
            image_shapes,
            [t["masks"] for t in targets],
            [t["labels"] for t in targets],
            [m[i] for m, i in zip(matched_idxs, positive)],
        )

    def results_with_masks(
        self, features: dict[str, Tensor], boxes: list[Tensor], scores: list[Tensor],
        labels: list[Tensor], image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes", "scores", "labels"}`` of the detections, plus the mask head's
        ``"masks"`` for them."""
        results = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        if self.mask_head is not None:
            masks = self.mask_head.predict(features, boxes, image_shapes, labels)
            for result, image_masks in zip(results, masks):
                result["masks"] = image_masks
        return results


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


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the incoming gradient times ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class CascadeROIHeads(MaskRoIHeads):
    """Detectron2's Cascade R-CNN heads (Cai & Vasconcelos, 2018): S box stages, each with its
    own box head, class-agnostic box predictor, foreground IoU and box-coder weights
    (``ROI_BOX_CASCADE_HEAD.IOUS``, ``.BBOX_REG_WEIGHTS``).

    Stage 0 scores the sampled proposals exactly as :class:`MaskRoIHeads` does; stage k+1 scores
    the boxes stage k refined (detached, clipped; in training the non-empty ones, all of them,
    labelled at stage k+1's IoU and not sampled again). Training returns ``loss_cls_stage{k}``
    and ``loss_box_reg_stage{k}`` for every stage plus the mask head's losses on stage 0's
    positive proposals, as Detectron2; the pooled features' gradient is scaled by 1/S, so the
    summed stage losses train the trunk as their mean would. Inference averages the S stages'
    class probabilities, keeps the last stage's boxes and runs the mask head on the detections.
    ``box_head`` and ``box_predictor`` are ``nn.ModuleList`` objects indexed by stage.
    """

    def __init__(
        self,
        *,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        stage_ious: Sequence[float],
        stage_reg_weights: Sequence[Sequence[float]],
        **kwargs,
    ):
        """
        Args:
            box_heads: per stage, pooled C×P×P RoI features → R×D.
            box_predictors: per stage, a class-agnostic :class:`BoxPredictor` over D features.
            stage_ious: per stage, the IoU with a ground-truth box from which a box is
                foreground; stage 0 matches with ``fg_iou_thresh``/``bg_iou_thresh`` (given
                among ``kwargs``), which should equal ``stage_ious[0]``.
            stage_reg_weights: per stage, the (wx, wy, ww, wh) weights of its box deltas.
            kwargs: :class:`MaskRoIHeads`'s arguments except ``box_head``, ``box_predictor``
                and ``bbox_reg_weights``.
        """
        counts = {len(box_heads), len(box_predictors), len(stage_ious), len(stage_reg_weights)}
        if len(counts) != 1:
            raise ValueError(f"one box head, predictor, IoU and weight set per stage: {counts}")
        super().__init__(
            box_head=nn.ModuleList(box_heads),
            box_predictor=nn.ModuleList(box_predictors),
            bbox_reg_weights=tuple(stage_reg_weights[0]),
            **kwargs,
        )
        self.stage_coders = [BoxCoder(tuple(w)) for w in stage_reg_weights]
        # Stage 0 samples with torchvision's proposal_matcher; the later stages match by stage.
        self.stage_matchers = {
            stage: Matcher(iou, iou, allow_low_quality_matches=False)
            for stage, iou in enumerate(stage_ious) if stage > 0
        }

    @property
    def num_stages(self) -> int:
        return len(self.box_predictor)

    def stage_predictions(
        self, features: dict[str, Tensor], boxes: list[Tensor],
        image_shapes: list[tuple[int, int]], stage: int,
    ) -> tuple[Tensor, Tensor]:
        """Stage ``stage``'s class logits R×(K+1) and deltas R×(K+1)·4 for the boxes."""
        pooled = self.box_roi_pool(features, boxes, image_shapes)
        if self.training:
            pooled = _ScaleGradient.apply(pooled, 1.0 / self.num_stages)
        return self.box_predictor[stage](self.box_head[stage](pooled))

    def stage_boxes(
        self, box_regression: Tensor, boxes: list[Tensor], image_shapes: list[tuple[int, int]],
        stage: int,
    ) -> list[Tensor]:
        """Per image the boxes moved by stage ``stage``'s class-agnostic deltas, clipped."""
        decoded = self.stage_coders[stage].decode_single(
            box_regression.detach()[:, :4], torch.cat(boxes)
        )
        # shape[0], not len(): the split sizes stay symbolic when traced for ONNX.
        per_image = decoded.split([b.shape[0] for b in boxes])
        return [box_ops.clip_boxes_to_image(b, s) for b, s in zip(per_image, image_shapes)]

    def stage_training_samples(
        self, boxes: list[Tensor], targets: list[dict[str, Tensor]], stage: int
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The non-empty boxes, their labels at stage ``stage``'s IoU (0 = background) and their
        regression targets in that stage's coding, per image."""
        kept, labels, regression_targets = [], [], []
        for image_boxes, target in zip(boxes, targets):
            widths, heights = (image_boxes[:, 2:] - image_boxes[:, :2]).unbind(1)
            image_boxes = image_boxes[(widths > 0) & (heights > 0)]
            gt_boxes = target["boxes"].to(image_boxes.dtype)
            if len(gt_boxes) and len(image_boxes):
                matched = self.stage_matchers[stage](box_ops.box_iou(gt_boxes, image_boxes))
                image_labels = target["labels"][matched.clamp(min=0)].to(torch.int64)
                image_labels[matched < 0] = 0
                matched_boxes = gt_boxes[matched.clamp(min=0)]
            else:
                image_labels = image_boxes.new_zeros(len(image_boxes), dtype=torch.int64)
                matched_boxes = torch.zeros_like(image_boxes)
            kept.append(image_boxes)
            labels.append(image_labels)
            regression_targets.append(
                self.stage_coders[stage].encode_single(matched_boxes, image_boxes)
            )
        return kept, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            sampled_labels = labels
        losses, predictions, boxes = {}, [], proposals  # predictions: per stage (logits, deltas)
        for stage in range(self.num_stages):
            if stage > 0:
                boxes = self.stage_boxes(predictions[-1][1], boxes, image_shapes, stage - 1)
                if self.training:
                    boxes, labels, regression_targets = self.stage_training_samples(
                        boxes, targets, stage
                    )
            predictions.append(self.stage_predictions(features, boxes, image_shapes, stage))
            if self.training:
                stage_losses = self.box_losses(
                    *predictions[-1], labels, regression_targets, self.stage_coders[stage]
                )
                losses.update({f"{k}_stage{stage}": v for k, v in stage_losses.items()})
        if self.training:
            if self.mask_head is not None:
                losses.update(self.mask_losses(
                    features, proposals, predictions[0][1], sampled_labels, matched_idxs,
                    image_shapes, targets,
                ))
            return [], losses

        final = self.stage_boxes(predictions[-1][1], boxes, image_shapes, self.num_stages - 1)
        scores = torch.stack([F.softmax(logits, -1) for logits, _ in predictions]).mean(dim=0)
        # torchvision's detection selection (per-class NMS, score threshold, top k) on decoded
        # boxes and probabilities: zero deltas decode to the boxes themselves, and the softmax
        # of log-probabilities gives the probabilities back.
        boxes, scores, labels = self.postprocess_detections(
            scores.log(), scores.new_zeros(scores.shape[0], 4 * scores.shape[1]), final,
            image_shapes,
        )
        return self.results_with_masks(features, boxes, scores, labels, image_shapes), {}
