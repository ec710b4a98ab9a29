"""The region proposal network: torchvision's, with Detectron2's RPN keys and losses.

torchvision's ``RegionProposalNetwork`` fixes its box loss (smooth L1, beta 1/9, over the
sampled anchors), box coder weights (1, 1, 1, 1) and minimum proposal size (1e-3 px);
:class:`RPN` takes them from ``MODEL.RPN.*`` and ``MODEL.PROPOSAL_GENERATOR.MIN_SIZE`` and
normalises both losses by ``BATCH_SIZE_PER_IMAGE`` × images, as Detectron2.
"""

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.box_head import box_regression_loss
from d2seg.modeling.shape_spec import ShapeSpec


class RPN(RegionProposalNetwork):
    """``RegionProposalNetwork`` with Detectron2's loss: ``loss_objectness`` (summed BCE) and
    ``loss_rpn_box_reg`` (smooth L1 with ``smooth_l1_beta``, or GIoU), each divided by
    ``batch_size_per_image`` × images and scaled by its weight."""

    def __init__(
        self,
        *args,
        box_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
        loss_weights: tuple[float, float] = (1.0, 1.0),
        bbox_reg_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        min_size: float = 0.0,
        **kwargs,
    ):
        """torchvision's arguments, plus: the box loss type and beta, the (objectness, box)
        loss weights, the box coder weights and the smallest proposal side kept (pixels)."""
        super().__init__(*args, **kwargs)
        self.box_loss_type = box_loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weights = loss_weights
        self.box_coder = BoxCoder(weights=tuple(bbox_reg_weights))
        # torchvision's remove_small_boxes keeps sides >= min_size; Detectron2 keeps > MIN_SIZE.
        self.min_size = max(float(min_size), 1e-3)

    def compute_loss(
        self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        positive = torch.where(torch.cat(sampled_pos))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(sampled_neg))[0]])
        labels_all = torch.cat(labels)
        targets = torch.cat(regression_targets)
        normalizer = self.fg_bg_sampler.batch_size_per_image * len(labels)
        box_loss = box_regression_loss(
            pred_bbox_deltas[positive], targets[positive], self.box_coder, self.box_loss_type,
            self.smooth_l1_beta,
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], labels_all[sampled], reduction="sum"
        )
        cls_weight, box_weight = self.loss_weights
        return objectness_loss / normalizer * cls_weight, box_loss / normalizer * box_weight


def build_rpn(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> RPN:
    """torchvision RPN from ``MODEL.ANCHOR_GENERATOR.*`` and ``MODEL.RPN.*``."""
    rpn = cfg.MODEL.RPN
    check_in_features("MODEL.RPN.IN_FEATURES", rpn.IN_FEATURES, input_shape)
    sizes = [tuple(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(r) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS]
    # As Detectron2: one list stands for every feature map.
    if len(sizes) == 1:
        sizes = sizes * len(rpn.IN_FEATURES)
    if len(ratios) == 1:
        ratios = ratios * len(sizes)
    if len(sizes) != len(rpn.IN_FEATURES) or len(ratios) != len(sizes):
        raise ConfigError(
            f"MODEL.ANCHOR_GENERATOR.SIZES has {len(sizes)} entries and ASPECT_RATIOS "
            f"{len(ratios)}, but MODEL.RPN.IN_FEATURES has {len(rpn.IN_FEATURES)} maps; fix: give "
            "one list of sizes per feature map (and one list of ratios, or one per map)"
        )
    anchors_per_cell = {len(s) * len(r) for s, r in zip(sizes, ratios)}
    if len(anchors_per_cell) != 1:
        raise ConfigError(
            "MODEL.ANCHOR_GENERATOR: every feature map must have the same number of anchors "
            "(sizes × aspect ratios), since one RPN head is shared; fix: equalise the lists"
        )
    in_channels = {input_shape[f].channels for f in rpn.IN_FEATURES}
    if len(in_channels) != 1:
        raise ConfigError(
            f"MODEL.RPN.IN_FEATURES {list(rpn.IN_FEATURES)} have different channel counts; fix: "
            "use FPN levels (p2..p6), which share MODEL.FPN.OUT_CHANNELS"
        )
    channels = in_channels.pop()
    if any(d not in (-1, channels) for d in rpn.CONV_DIMS):
        raise ConfigError(
            f"MODEL.RPN.CONV_DIMS = {list(rpn.CONV_DIMS)}: the RPN head's convs keep the "
            f"input's {channels} channels; fix: use -1 (or {channels}) for each conv"
        )
    bg_iou, fg_iou = min(rpn.IOU_THRESHOLDS), max(rpn.IOU_THRESHOLDS)
    return RPN(
        AnchorGenerator(tuple(sizes), tuple(ratios)),
        RPNHead(channels, anchors_per_cell.pop(), conv_depth=len(rpn.CONV_DIMS)),
        fg_iou_thresh=fg_iou,
        bg_iou_thresh=bg_iou,
        batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn.POSITIVE_FRACTION,
        pre_nms_top_n={"training": rpn.PRE_NMS_TOPK_TRAIN, "testing": rpn.PRE_NMS_TOPK_TEST},
        post_nms_top_n={"training": rpn.POST_NMS_TOPK_TRAIN, "testing": rpn.POST_NMS_TOPK_TEST},
        nms_thresh=rpn.NMS_THRESH,
        box_loss_type=rpn.BBOX_REG_LOSS_TYPE,
        smooth_l1_beta=rpn.SMOOTH_L1_BETA,
        loss_weights=(rpn.LOSS_WEIGHT, rpn.LOSS_WEIGHT * rpn.BBOX_REG_LOSS_WEIGHT),
        bbox_reg_weights=tuple(rpn.BBOX_REG_WEIGHTS),
        min_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
    )
