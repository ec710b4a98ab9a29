"""PointRend mask head (Kirillov et al., "PointRend: Image Segmentation as Rendering", 2020).

The mask of each box is first predicted coarsely (7×7 by default) from point features pooled on a
regular grid in the box; a small point-wise MLP then re-predicts the logits at chosen points from
fine-grained features (``p2``) and the coarse prediction at those points:

* training: ``TRAIN_NUM_POINTS`` points per box, ``OVERSAMPLE_RATIO``·N random candidates of which
  the ``IMPORTANCE_SAMPLE_RATIO``·N most uncertain (coarse logit closest to 0) are kept, the rest
  uniform random; labels are bilinear samples of the ground-truth bitmask at those points.
* inference: adaptive subdivision. The mask is upsampled ×2 ``SUBDIVISION_STEPS`` times
  (7 → 224); at each resolution the ``SUBDIVISION_NUM_POINTS`` most uncertain cells are
  re-predicted. Steps where that count covers the next map entirely are folded into the next
  step (with 784 points: 14² is skipped, 28² is predicted densely, then 56², 112², 224²).

Coordinates: a "box point" is (x, y) in [0, 1]² relative to its box; sampling uses
``grid_sample`` with ``align_corners=False`` (0 and 1 are the outer edges of the map).

Layout and training as Detectron2's PointRend project, so its checkpoints load: one mask
channel per foreground class (torchvision label l reads channel l - 1; the point MLP takes
fine-grained features + NUM_CLASSES coarse logits, e.g. 256 + 80 = 336 inputs); the coarse
target is the matched mask cropped by aligned RoIAlign and thresholded at 0.5
(:func:`~d2seg.modeling.heads.mask_head.mask_targets`); the coarse head's FCs start from
``c2_xavier_fill``, its convs and the point MLP from ``c2_msra_fill``.

The point sampling, :func:`subdivide` and :class:`StandardPointHead` are shared with
:mod:`~d2seg.modeling.heads.point_rend_semantic` (class-margin uncertainty over K logits) and
:mod:`~d2seg.modeling.heads.implicit_point_rend` (whose parameter head is a
:class:`CoarseMaskHead`).
"""

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.heads.mask_head import MaskHead, mask_targets
from d2seg.modeling.registry import POINT_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec
from d2seg.modeling.weight_init import c2_msra_fill, c2_xavier_fill


def point_sample(features: Tensor, points: Tensor, mode: str = "bilinear") -> Tensor:
    """Samples of ``features`` (N×C×H×W) at ``points`` (N×P×2, (x, y) in [0, 1]).

    Returns N×C×P. ``mode``: "bilinear" or "nearest" (labels). Points outside [0, 1] read zeros.
    """
    grid = 2.0 * points.unsqueeze(2) - 1.0
    return F.grid_sample(features, grid, mode=mode, align_corners=False).squeeze(3)


def uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of foreground logits N×1×...: ``-|logit|`` (highest where the logit is 0)."""
    return -logits.abs()


def class_margin_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of class logits N×K×... → N×1×...: the second-best logit minus the best
    (highest, 0, where two classes tie); for one sigmoid logit (K = 1) :func:`uncertainty`."""
    if logits.shape[1] == 1:
        return uncertainty(logits)
    top2 = logits.topk(2, dim=1).values
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


Uncertainty = Callable[[Tensor], Tensor]


def regular_grid_points(side: int, num_boxes: int, device: torch.device) -> Tensor:
    """Cell centres of a ``side``×``side`` grid as box points, num_boxes×side²×2, row-major."""
    centres = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1).expand(num_boxes, -1, -1)


def uncertain_points_with_randomness(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    uncertainty_of: Uncertainty = uncertainty,
) -> Tensor:
    """Training points for logits R×C×H×W → points R×num_points×2 in [0, 1]² of the map.

    ``importance_sample_ratio``·num_points are the most uncertain (``uncertainty_of``: R×C×P →
    R×1×P; default for foreground logits, C = 1) of ``oversample_ratio``·num_points uniform
    candidates; the remainder are uniform random points (coverage of the whole map).
    """
    num_boxes = logits.shape[0]
    candidates = torch.rand(num_boxes, int(num_points * oversample_ratio), 2, device=logits.device)
    candidate_uncertainty = uncertainty_of(point_sample(logits, candidates))[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    top = candidate_uncertainty.topk(num_uncertain, dim=1).indices
    uncertain = torch.gather(candidates, 1, top.unsqueeze(2).expand(-1, -1, 2))
    uniform = torch.rand(num_boxes, num_points - num_uncertain, 2, device=logits.device)
    return torch.cat([uncertain, uniform], dim=1)


def uncertain_grid_cells(
    logits: Tensor, num_points: int, uncertainty_of: Uncertainty = uncertainty
) -> tuple[Tensor, Tensor]:
    """The ``num_points`` most uncertain cells of logits R×C×H×W (``uncertainty_of`` as in
    :func:`uncertain_points_with_randomness`).

    Returns (flat cell indices R×P into H·W, their centres as points R×P×2 in [0, 1]² of the
    map), P = min(num_points, H·W).
    """
    num_boxes, _, height, width = logits.shape
    num_points = min(num_points, height * width)
    scores = uncertainty_of(logits).reshape(num_boxes, height * width)
    indices = scores.topk(num_points, dim=1).indices
    x = (indices % width).float().add(0.5) / width
    y = torch.div(indices, width, rounding_mode="floor").float().add(0.5) / height
    return indices, torch.stack([x, y], dim=2)


def subdivide(
    logits: Tensor,
    steps: int,
    num_points: int,
    point_logits_at: Callable[[Tensor], Tensor],
    uncertainty_of: Uncertainty = uncertainty,
) -> Tensor:
    """Adaptive subdivision: logits N×C×h×w → N×C×(h·2^steps)×(w·2^steps).

    Each step upsamples ×2 (bilinear) and replaces the ``num_points`` most uncertain cells by
    ``point_logits_at(points)`` (points N×P×2 in [0, 1]² → N×C×P). A step whose successor
    re-predicts every cell is skipped: its predictions could not change the result.
    """
    for step in range(steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        num_maps, channels, height, width = logits.shape
        if num_points >= 4 * height * width and step != steps - 1:
            continue
        indices, points = uncertain_grid_cells(logits, num_points, uncertainty_of)
        logits = (
            logits.reshape(num_maps, channels, height * width)
            .scatter(2, indices.unsqueeze(1).expand(-1, channels, -1), point_logits_at(points))
            .view(num_maps, channels, height, width)
        )
    return logits


def box_points_to_image(points: Tensor, boxes: Tensor) -> Tensor:
    """Box points R×P×2 in [0, 1] → image pixels R×P×2 for boxes R×4 (XYXY, pixels)."""
    origin = boxes[:, None, :2]
    size = boxes[:, None, 2:] - boxes[:, None, :2]
    return origin + points * size


def sample_box_point_features(
    features: list[Tensor], strides: list[int], boxes: list[Tensor], points: Tensor
) -> Tensor:
    """Fine-grained features at box points.

    ``features``: maps N×C_i×H_i×W_i with ``strides`` (pixels); ``boxes``: per image R_n×4 XYXY
    pixels, R = ΣR_n; ``points``: R×P×2 box points. Returns R×ΣC_i×P, the maps concatenated.
    """
    image_points = box_points_to_image(points, torch.cat(boxes))
    per_image = image_points.split([len(b) for b in boxes])
    sampled = []
    for feature_map, stride in zip(features, strides):
        extent = torch.tensor(
            [feature_map.shape[3] * stride, feature_map.shape[2] * stride],
            dtype=points.dtype,
            device=points.device,
        )
        channels, num_points = feature_map.shape[1], points.shape[1]
        sampled.append(
            torch.cat(
                [
                    point_sample(feature_map[n : n + 1], p.reshape(1, -1, 2) / extent)
                    .view(channels, len(p), num_points)
                    .transpose(0, 1)
                    for n, p in enumerate(per_image)
                ]
            )
        )
    return torch.cat(sampled, dim=1)


def grid_pooled_box_features(
    features: list[Tensor], strides: list[int], boxes: list[Tensor], side: int
) -> Tensor:
    """Features sampled at the cell centres of a side×side grid in each box, R×ΣC_i×side×side
    (RoIAlign with one sample per bin, every map of ``features`` concatenated)."""
    num_boxes = sum(len(b) for b in boxes)
    grid = regular_grid_points(side, num_boxes, features[0].device)
    pooled = sample_box_point_features(features, strides, boxes, grid)
    return pooled.view(num_boxes, pooled.shape[1], side, side)


def check_point_head_classes(cfg: CfgNode, head: str) -> None:
    """The per-class masks and class count every PointRend mask head (``head``) needs."""
    point_cfg = cfg.MODEL.POINT_HEAD
    if point_cfg.CLS_AGNOSTIC_MASK:
        raise ConfigError(
            f"MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK True is not supported by {head}; "
            "fix: set it to False (one mask per class)"
        )
    # 0 means "as many as the RoI heads" (which may themselves come from the data).
    if point_cfg.NUM_CLASSES not in (0, cfg.MODEL.ROI_HEADS.NUM_CLASSES):
        raise ConfigError(
            f"MODEL.POINT_HEAD.NUM_CLASSES ({point_cfg.NUM_CLASSES}) differs from "
            f"MODEL.ROI_HEADS.NUM_CLASSES ({cfg.MODEL.ROI_HEADS.NUM_CLASSES}); fix: set both "
            "to the number of foreground classes (or POINT_HEAD.NUM_CLASSES 0 to follow it)"
        )


def sample_mask_point_labels(
    gt_masks: list[Tensor], matched_idxs: list[Tensor], boxes: list[Tensor], points: Tensor
) -> Tensor:
    """Ground-truth mask values at box points, R×P in [0, 1] (bilinear on the bitmask).

    ``gt_masks``: per image G_n×H×W (image pixels); ``matched_idxs``: per image R_n, the ground
    truth each box was matched to; ``boxes``: per image R_n×4; ``points``: R×P×2 box points.
    """
    image_points = box_points_to_image(points, torch.cat(boxes)).split([len(b) for b in boxes])
    labels = []
    for masks, matched, pts in zip(gt_masks, matched_idxs, image_points):
        extent = torch.tensor([masks.shape[2], masks.shape[1]], dtype=pts.dtype, device=pts.device)
        image_labels = pts.new_zeros(pts.shape[:2])
        # One sample call per ground-truth mask: indexing masks[matched] would copy an
        # image-sized mask for every box.
        for gt_index in matched.unique():
            boxes_of_gt = matched == gt_index
            mask = masks[gt_index][None, None].to(pts.dtype)
            sampled = point_sample(mask, pts[boxes_of_gt].reshape(1, -1, 2) / extent)
            image_labels[boxes_of_gt] = sampled.view(int(boxes_of_gt.sum()), -1)
        labels.append(image_labels)
    return torch.cat(labels)


def select_class(logits: Tensor, labels: Tensor) -> Tensor:
    """The channel of each box's class: logits R×K×... (one channel per foreground class) and
    torchvision labels R (1..K) → R×1×..."""
    return logits[torch.arange(len(labels), device=logits.device), labels - 1].unsqueeze(1)


def build_point_head(
    cfg: CfgNode, input_shape: dict[str, ShapeSpec], num_classes: int
) -> nn.Module:
    """``MODEL.POINT_HEAD.NAME`` over the ``POINT_HEAD.IN_FEATURES`` of ``input_shape``, with
    ``num_classes`` logit channels per point."""
    import d2seg.modeling.heads  # noqa: F401  (registers the point heads)
    from d2seg.modeling.build import build_from_registry

    names = cfg.MODEL.POINT_HEAD.IN_FEATURES
    check_in_features("MODEL.POINT_HEAD.IN_FEATURES", names, input_shape)
    fine_channels = sum(input_shape[n].channels for n in names)
    return build_from_registry(
        POINT_HEAD_REGISTRY, "MODEL.POINT_HEAD.NAME", cfg, fine_channels, num_classes
    )


@POINT_HEAD_REGISTRY.register()
class StandardPointHead(nn.Module):
    """Point-wise MLP (1×1 Conv1d) over fine-grained features + coarse logits at each point.

    Input: fine-grained features R×C_f×P and coarse logits R×K×P; output: logits R×K×P.
    With ``coarse_pred_each_layer`` the coarse logits are concatenated to every hidden layer.
    """

    def __init__(
        self,
        *,
        fine_grained_channels: int,
        num_mask_channels: int,
        fc_dim: int,
        num_fc: int,
        coarse_pred_each_layer: bool,
    ):
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        in_channels = fine_grained_channels + num_mask_channels
        self.fc_layers = nn.ModuleList()
        for _ in range(num_fc):
            self.fc_layers.append(nn.Conv1d(in_channels, fc_dim, kernel_size=1))
            in_channels = fc_dim + (num_mask_channels if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(in_channels, num_mask_channels, kernel_size=1)
        for layer in self.fc_layers:
            c2_msra_fill(layer)
        # A near-zero start leaves the coarse prediction in charge until the MLP has learnt.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, fine_grained_channels: int, num_classes: int
    ) -> dict[str, Any]:
        """``num_classes``: the owning head's logit channels (foreground classes for masks)."""
        return {
            "fine_grained_channels": fine_grained_channels,
            "num_mask_channels": num_classes,
            "fc_dim": cfg.MODEL.POINT_HEAD.FC_DIM,
            "num_fc": cfg.MODEL.POINT_HEAD.NUM_FC,
            "coarse_pred_each_layer": cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER,
        }

    def forward(self, fine_grained_features: Tensor, coarse_logits: Tensor) -> Tensor:
        x = torch.cat([fine_grained_features, coarse_logits], dim=1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse_logits], dim=1)
        return self.predictor(x)


class CoarseMaskHead(nn.Module):
    """Box features C×S×S → one output of ``output_shape`` per box: [a 1×1 conv to ``conv_dim``
    when C is wider], a stride-``reduce_stride`` conv, FCs, a linear layer (Detectron2's
    ``ConvFCHead``).

    PointRend predicts coarse logits K×s×s with it; Implicit PointRend the parameters of each
    box's point MLP, ``(num_params,)``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        input_side: int,
        conv_dim: int,
        fc_dim: int,
        num_fc: int,
        output_shape: tuple[int, ...],
        reduce_stride: int,
    ):
        super().__init__()
        self.output_shape = tuple(output_shape)
        # As Detectron2's ConvFCHead, inputs wider than conv_dim first pass a 1×1 conv + ReLU.
        wide = in_channels > conv_dim
        self.reduce_channels = (
            nn.Sequential(nn.Conv2d(in_channels, conv_dim, kernel_size=1), nn.ReLU(inplace=True))
            if wide else nn.Identity()
        )
        self.reduce = nn.Conv2d(conv_dim if wide else in_channels, conv_dim,
                                kernel_size=reduce_stride, stride=reduce_stride)
        layers: list[nn.Module] = [nn.ReLU(inplace=True), nn.Flatten()]
        width = conv_dim * (input_side // reduce_stride) ** 2
        for _ in range(num_fc):
            layers += [nn.Linear(width, fc_dim), nn.ReLU(inplace=True)]
            width = fc_dim
        self.layers = nn.Sequential(*layers)
        self.predictor = nn.Linear(width, math.prod(self.output_shape))
        for conv in [self.reduce, *self.reduce_channels.children()]:
            if isinstance(conv, nn.Conv2d):
                c2_msra_fill(conv)
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                c2_xavier_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, box_features: Tensor) -> Tensor:
        x = self.predictor(self.layers(self.reduce(self.reduce_channels(box_features))))
        return x.view(-1, *self.output_shape)


@ROI_MASK_HEAD_REGISTRY.register()
class PointRendMaskHead(MaskHead):
    """PointRend mask head: coarse head + point head on fine-grained features (``p2``)."""

    def __init__(
        self,
        *,
        coarse_in_features: list[str],
        point_in_features: list[str],
        feature_strides: dict[str, int],
        coarse_pooler_side: int,
        coarse_head: CoarseMaskHead,
        point_head: nn.Module,
        train_num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        subdivision_steps: int,
        subdivision_num_points: int,
    ):
        super().__init__()
        self.coarse_in_features = coarse_in_features
        self.point_in_features = point_in_features
        self.feature_strides = feature_strides
        self.coarse_pooler_side = coarse_pooler_side
        self.coarse_head = coarse_head
        self.point_head = point_head
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        mask_cfg, point_cfg = cfg.MODEL.ROI_MASK_HEAD, cfg.MODEL.POINT_HEAD
        check_point_head_classes(cfg, cls.__name__)
        check_in_features("MODEL.ROI_MASK_HEAD.IN_FEATURES", mask_cfg.IN_FEATURES, input_shape)
        num_mask_channels = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        input_side, output_side = mask_cfg.POOLER_RESOLUTION, mask_cfg.OUTPUT_SIDE_RESOLUTION
        if input_side % output_side:
            raise ConfigError(
                f"MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION ({input_side}) must be a multiple of "
                f"OUTPUT_SIDE_RESOLUTION ({output_side}); fix: e.g. 14 and 7"
            )
        coarse_head = CoarseMaskHead(
            in_channels=sum(input_shape[n].channels for n in mask_cfg.IN_FEATURES),
            input_side=input_side,
            conv_dim=mask_cfg.CONV_DIM,
            fc_dim=mask_cfg.FC_DIM,
            num_fc=mask_cfg.NUM_FC,
            output_shape=(num_mask_channels, output_side, output_side),
            reduce_stride=input_side // output_side,
        )
        point_head = build_point_head(cfg, input_shape, num_mask_channels)
        if not isinstance(point_head, StandardPointHead):
            raise ConfigError(
                f"MODEL.POINT_HEAD.NAME = {point_cfg.NAME!r} does not take coarse predictions, "
                "which PointRendMaskHead gives it; fix: StandardPointHead (or ROI_MASK_HEAD.NAME "
                "ImplicitPointRendMaskHead for ImplicitPointHead)"
            )
        return {
            "coarse_in_features": list(mask_cfg.IN_FEATURES),
            "point_in_features": list(point_cfg.IN_FEATURES),
            "feature_strides": {k: v.stride for k, v in input_shape.items()},
            "coarse_pooler_side": mask_cfg.POOLER_RESOLUTION,
            "coarse_head": coarse_head,
            "point_head": point_head,
            "train_num_points": point_cfg.TRAIN_NUM_POINTS,
            "oversample_ratio": point_cfg.OVERSAMPLE_RATIO,
            "importance_sample_ratio": point_cfg.IMPORTANCE_SAMPLE_RATIO,
            "subdivision_steps": point_cfg.SUBDIVISION_STEPS,
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
        }

    def _point_features(
        self, names: list[str], features: dict[str, Tensor], boxes: list[Tensor], points: Tensor
    ) -> Tensor:
        maps = [features[n] for n in names]
        strides = [self.feature_strides[n] for n in names]
        return sample_box_point_features(maps, strides, boxes, points)

    def coarse_logits(self, features: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
        """Coarse logits R×K×s×s from features pooled on a regular grid in each box."""
        names = self.coarse_in_features
        pooled = grid_pooled_box_features(
            [features[n] for n in names], [self.feature_strides[n] for n in names], boxes,
            self.coarse_pooler_side,
        )
        return self.coarse_head(pooled)

    def losses(self, features, proposals, image_shapes, gt_masks, gt_labels, matched_idxs):
        """``loss_mask`` (coarse prediction vs. the matched mask cropped to the proposal,
        Detectron2's aligned, thresholded targets) and ``loss_mask_point`` (BCE at the sampled
        points)."""
        coarse = self.coarse_logits(features, proposals)
        labels = torch.cat([g[m] for g, m in zip(gt_labels, matched_idxs)])
        if labels.numel() == 0:
            zero = coarse.sum() * 0.0
            return {"loss_mask": zero, "loss_mask_point": zero}
        targets = mask_targets(gt_masks, proposals, matched_idxs, coarse.shape[-1])
        coarse_of_class = select_class(coarse, labels)[:, 0]
        losses = {"loss_mask": F.binary_cross_entropy_with_logits(
            coarse_of_class, targets.to(coarse_of_class))}
        with torch.no_grad():
            points = uncertain_points_with_randomness(
                select_class(coarse, labels),
                self.train_num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = sample_mask_point_labels(gt_masks, matched_idxs, proposals, points)
        fine = self._point_features(self.point_in_features, features, proposals, points)
        point_logits = self.point_head(fine, point_sample(coarse, points))
        losses["loss_mask_point"] = F.binary_cross_entropy_with_logits(
            select_class(point_logits, labels)[:, 0], point_labels
        )
        return losses

    def predict(self, features, boxes, image_shapes, labels):
        """M = 7·2^SUBDIVISION_STEPS (224), by adaptive subdivision (module docstring)."""
        all_labels = torch.cat(labels)
        num_boxes = len(all_labels)
        side = self.coarse_head.output_shape[1] * 2**self.subdivision_steps
        if num_boxes == 0:
            empty = torch.cat(boxes).new_zeros(0, 1, side, side)
            return [empty for _ in boxes]
        coarse = self.coarse_logits(features, boxes)

        def point_logits_at(points: Tensor) -> Tensor:
            fine = self._point_features(self.point_in_features, features, boxes, points)
            return select_class(self.point_head(fine, point_sample(coarse, points)), all_labels)

        logits = subdivide(select_class(coarse, all_labels), self.subdivision_steps,
                           self.subdivision_num_points, point_logits_at)
        return list(logits.sigmoid().split([len(b) for b in boxes]))
